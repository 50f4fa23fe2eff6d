"""A bordered pane holding one live table, a ``/`` filter and a message for when it is empty."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.reactive import reactive
from textual.widgets import Input, Static

from celery_morgue.tui.widgets.tables import ColumnSpec, LiveTable

# Bound by each pane's owner, as it knows which table "/" filters. Priority: handled before the
# keys typed after it are passed on, so that they reach the filter even when they arrive
# together (a paste, a fast typist).
FILTER = Binding(
    "slash",
    "filter",
    "Filter",
    priority=True,
    id="filter",
    tooltip="Filter the table: entries by message text (as --grep), tasks by name, id or worker",
)


class FilterInput(Input):
    """The ``/`` filter; escape clears it, enter goes back to the table keeping it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "escape",
            "clear",
            "Clear filter",
            id="filter_clear",
            tooltip="Clear the filter while typing it",
        ),
    ]

    def action_clear(self) -> None:
        self.query_ancestor(TablePane).clear_filter()


class TablePane(Vertical):
    """Subclasses fill ``self.table`` through :meth:`render_rows` whenever data or filter change.

    Its looks (the border, the filter line) are in ``panes.tcss``.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "escape",
            "clear_filter",
            "Clear filter",
            id="clear_filter",
            tooltip="Clear the filter of the table",
        ),
    ]

    # The escape key is offered only while a filter is on.
    filter_text: reactive[str] = reactive("", init=False, bindings=True)

    def __init__(
        self,
        columns: Sequence[ColumnSpec],
        *,
        order_column: str,
        follow_head: bool = False,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id, classes="pane")
        self.table = LiveTable(columns, order_column=order_column, follow_head=follow_head)
        self.placeholder = Static("", classes="placeholder", markup=False)
        self.filter_input = FilterInput(placeholder="filter: text, then enter; escape clears")
        self._placeholder_text: str | None = None
        self._titles: tuple[str | None, str | None] = (None, None)

    def compose(self) -> ComposeResult:
        yield self.table
        yield self.placeholder
        yield self.filter_input

    def start_filter(self) -> None:
        self.add_class("-filtering")
        # At once, not after a refresh like focus(): the keys typed right after "/" (a quick
        # typist, a paste) must land in the filter, not in the table.
        self.screen.set_focus(self.filter_input)

    def action_filter(self) -> None:
        self.start_filter()

    def clear_filter(self) -> None:
        self.filter_input.value = ""
        self.filter_text = ""
        self.remove_class("-filtering")
        self.table.focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "clear_filter":
            return bool(self.filter_text) or self.has_class("-filtering")
        return super().check_action(action, parameters)

    def action_clear_filter(self) -> None:
        self.clear_filter()

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.filter_text = event.value.strip()

    def on_live_table_refit(self, event: LiveTable.Refit) -> None:
        event.stop()
        self.render_rows()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if self.filter_text:
            self.table.focus()
        else:
            self.clear_filter()

    def watch_filter_text(self) -> None:
        self.render_rows()

    def show_placeholder(self, text: str | None) -> None:
        self.set_class(text is not None, "-placeholder")
        if text is not None and text != self._placeholder_text:
            self._placeholder_text = text
            self.placeholder.update(Text(text))

    def set_titles(self, title: str, subtitle: str) -> None:
        """Set the border's title and subtitle, literally, only when their text changed.

        Textual repaints the whole pane, table included, on every assignment, even of the same
        text: over SSH, most of what an idle dashboard wrote (tests/benchmarks/bench_ssh.py).
        """
        if title != self._titles[0]:
            self.border_title = Text(title)
        if subtitle != self._titles[1]:
            self.border_subtitle = Text(subtitle)
        self._titles = (title, subtitle)

    def render_rows(self) -> None:
        raise NotImplementedError
