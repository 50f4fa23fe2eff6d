"""Screens of the morgue UI: the dashboard, an entry's detail, confirmations and help."""
