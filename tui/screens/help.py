"""The ``?`` screen: every key, grouped by where it works, with the user's keymap applied."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

HelpSection = tuple[str, Sequence[Binding]]


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen {
        align: center middle;
        background: $background 60%;
    }
    HelpScreen > VerticalScroll {
        width: 78;
        max-width: 100%;
        height: auto;
        max-height: 100%;
        border: round $primary;
        border-title-color: $text;
        border-subtitle-color: $text-muted;
        background: $surface;
        padding: 0 1;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "close", "Close", id="help_close"),
        Binding("j", "scroll('down')", "Down", show=False, id="help_down"),
        Binding("k", "scroll('up')", "Up", show=False, id="help_up"),
    ]

    def __init__(self, sections: Sequence[HelpSection], keymap: Mapping[str, str]) -> None:
        super().__init__()
        self.sections = sections
        self.keymap = keymap

    AUTO_FOCUS = "VerticalScroll"

    def compose(self) -> ComposeResult:
        # Titles here, not in on_mount: a screen pushed while the app quits is mounted without
        # being composed, and a query there would crash the exit.
        with VerticalScroll() as scroll:
            scroll.can_focus = True
            scroll.border_title = "Keys"
            scroll.border_subtitle = "escape closes"
            yield Static(self._table())

    def _keys(self, binding: Binding) -> str:
        keys = self.keymap.get(binding.id or "", binding.key) if binding.id else binding.key
        shown = []
        for key in keys.split(","):
            single = dataclasses.replace(binding, key=key.strip(), key_display=None)
            shown.append(self.app.get_key_display(single))
        return " ".join(shown)

    def _table(self) -> Table:
        # The third column is the binding's id: what a [keymap] in the config file remaps.
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold", no_wrap=True)
        table.add_column(ratio=1)
        table.add_column(style="dim", no_wrap=True)
        for index, (title, bindings) in enumerate(self.sections):
            if index:
                table.add_row("", "", "")
            id_header = Text("keymap id") if index == 0 else Text("")
            table.add_row("", Text(title, style="bold underline"), id_header)
            for binding in bindings:
                table.add_row(
                    Text(self._keys(binding)),
                    Text(binding.tooltip or binding.description),
                    Text(binding.id or ""),
                )
        return table

    def action_close(self) -> None:
        self.dismiss(None)

    def action_scroll(self, direction: str) -> None:
        scroll = self.query_one(VerticalScroll)
        # At once, not animated and not deferred to the next refresh: a held key repeats
        # faster than either, and every repeat would read the same target line, so the view
        # would barely move.
        if direction == "down":
            scroll.scroll_down(animate=False, immediate=True)
        else:
            scroll.scroll_up(animate=False, immediate=True)
