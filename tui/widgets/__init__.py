"""Widgets of the morgue UI: each carries its own DEFAULT_CSS."""
