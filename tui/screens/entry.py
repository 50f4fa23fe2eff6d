"""One DLQ entry in full: arguments as JSON, the traceback, where and when it failed."""

from __future__ import annotations

import json
from typing import ClassVar, Literal

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import Footer, Static

from core.entry import Entry
from tui.cells import Clock, iso_with_age, printable
from tui.screens.readonly import GuardedScreen

EntryAction = Literal["delete", "requeue"]


def pretty_json(value: object) -> str:
    # JSON escapes control characters but not format ones (U+202E): printable() does those.
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)
    return printable(text, keep_newlines=True)


def facts(entry: Entry, queue: str, now: float) -> Table:
    table = Table.grid(padding=(0, 1))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    rows: list[tuple[str, str]] = [
        ("Task", entry.task),
        ("Task id", entry.task_id),
        ("Queue", queue),
        ("Entry id", entry.id),
        ("Exception", entry.exception or "—"),
        ("Message", entry.message or "—"),
        ("Failed at", iso_with_age(entry.failed_at, now)),
        ("Worker", entry.hostname or "—"),
        ("Retries", str(entry.retries)),
    ]
    if entry.root_id and entry.root_id != entry.task_id:
        rows.append(("Root id", entry.root_id))
    if entry.parent_id:
        rows.append(("Parent id", entry.parent_id))
    if entry.lossy:
        changed = ", ".join(entry.lossy_fields + entry.truncated_fields) or "arguments"
        exact = "requeue sends the originals" if entry.requeue_exact else "requeue refused"
        rows.append(("Stored lossy", f"{changed} ({exact})"))
    for label, value in rows:
        table.add_row(label, Text(printable(value, keep_newlines=label == "Message")))
    return table


class EntryScreen(GuardedScreen[EntryAction | None]):
    """Dismisses with the action the user chose; the dashboard runs it."""

    DEFAULT_CSS = """
    EntryScreen > VerticalScroll {
        border: round $primary;
        border-title-color: $text;
        padding: 0 1;
    }
    EntryScreen .section {
        margin-top: 1;
        text-style: bold;
        color: $text-accent;
    }
    EntryScreen .code {
        background: $boost;
        padding: 0 1;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", id="entry_back"),
        Binding("d", "delete_entry", "Delete", id="delete_entry", tooltip="Delete this entry"),
        Binding(
            "e",
            "requeue_entry",
            "Requeue",
            id="requeue_entry",
            tooltip="Send the task again under a new id",
        ),
        Binding("j", "scroll('down')", "Down", show=False, id="cursor_down_j"),
        Binding("k", "scroll('up')", "Up", show=False, id="cursor_up_k"),
    ]

    def __init__(self, entry: Entry, queue: str, *, clock: Clock, readonly: bool) -> None:
        super().__init__(readonly=readonly)
        self.entry = entry
        self.queue = queue
        self.clock = clock

    def compose(self) -> ComposeResult:
        entry = self.entry
        with VerticalScroll() as scroll:
            scroll.can_focus = True
            yield Static(facts(entry, self.queue, self.clock()), id="facts")
            yield Static("Args", classes="section")
            yield Static(Text(pretty_json(entry.args)), classes="code", id="args")
            yield Static("Kwargs", classes="section")
            yield Static(Text(pretty_json(entry.kwargs)), classes="code", id="kwargs")
            yield Static("Traceback", classes="section")
            yield Static(
                Text(printable(entry.traceback.rstrip(), keep_newlines=True) or "—"),
                classes="code",
                id="traceback",
            )
        yield Footer()

    def on_mount(self) -> None:
        scroll = self.query_one(VerticalScroll)
        title = f"{self.entry.task} · {self.entry.exception or 'failure'}"
        scroll.border_title = Text(printable(title))
        scroll.focus()

    def action_back(self) -> None:
        self.dismiss(None)

    def action_delete_entry(self) -> None:
        if not self.refuse_readonly("delete_entry"):
            self.dismiss("delete")

    def action_requeue_entry(self) -> None:
        if not self.refuse_readonly("requeue_entry"):
            self.dismiss("requeue")

    def action_scroll(self, direction: str) -> None:
        scroll = self.query_one(VerticalScroll)
        # At once, not animated and not deferred to the next refresh: a held key repeats
        # faster than either, and every repeat would read the same target line, so the view
        # would barely move.
        if direction == "down":
            scroll.scroll_down(animate=False, immediate=True)
        else:
            scroll.scroll_up(animate=False, immediate=True)
