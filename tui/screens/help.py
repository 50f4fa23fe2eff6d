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
from textual.widgets import Static

from celery_morgue.tui.dialogs import Dialog
from celery_morgue.tui.screens.scroll_keys import SCROLL_KEYS, ScrollKeys

HelpSection = tuple[str, Sequence[Binding]]


class HelpScreen(ScrollKeys, Dialog[None]):
    """``sections`` come from the bindings themselves (:meth:`MorgueApp.help_sections`); the
    keys shown are the ``keymap``'s where it remaps them."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "close", "Close", id="help_close"),
        *SCROLL_KEYS,
    ]

    def __init__(self, sections: Sequence[HelpSection], keymap: Mapping[str, str]) -> None:
        super().__init__()
        self.sections = sections
        self.keymap = keymap

    AUTO_FOCUS = "VerticalScroll"

    def compose(self) -> ComposeResult:
        # Titles here, not in on_mount: a screen pushed while the app quits is mounted without
        # being composed, and a query there would crash the exit.
        with VerticalScroll(classes="dialog-box") as scroll:
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
