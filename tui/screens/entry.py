"""One DLQ entry in full: arguments as JSON, the traceback, where and when it failed, and why.

Arguments the caller hid behind Celery's ``argsrepr``/``kwargsrepr`` show as those reprs; the
raw ones only after ``v``. An unreadable entry shows what its stream entry holds, escaped.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Footer, Static

from celery_morgue.core.dlq import StoredEntry
from celery_morgue.core.entry import Entry, UnreadableEntry
from celery_morgue.tui.actions import ActionOwner
from celery_morgue.tui.cells import (
    REASON_TEXT,
    Clock,
    iso_with_age,
    not_requeueable,
    printable,
    stored_epoch,
)
from celery_morgue.tui.screens.scroll_keys import SCROLL_KEYS, ScrollKeys
from celery_morgue.tui.widgets.dead_letters import EntryAction

HIDDEN_NOTE = "The caller hid the raw arguments behind these reprs: v shows them."
REVEALED_NOTE = "The raw arguments, as the task got them (v hides them again):"


def pretty_json(value: object) -> str:
    # JSON escapes control characters but not format ones (U+202E): printable() does those.
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)
    return printable(text, keep_newlines=True)


def _grid(rows: list[tuple[str, str]], multiline: frozenset[str] = frozenset()) -> Table:
    table = Table.grid(padding=(0, 1))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for label, value in rows:
        table.add_row(label, Text(printable(value, keep_newlines=label in multiline)))
    return table


def facts(entry: Entry, queue: str, now: float) -> Table:
    rows: list[tuple[str, str]] = [
        ("Task", entry.task),
        ("Task id", entry.task_id),
        ("Queue", queue),
        ("Entry id", entry.id),
        ("Reason", REASON_TEXT.get(entry.reason, entry.reason)),
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
    return _grid(rows, frozenset({"Message"}))


def unreadable_facts(entry: UnreadableEntry, queue: str, now: float) -> Table:
    stored = stored_epoch(entry.id)
    return _grid(
        [
            ("Entry id", entry.id),
            ("Queue", queue),
            ("Stored at", iso_with_age(dt.datetime.fromtimestamp(stored, dt.UTC).isoformat(), now)),
            ("Problem", entry.problem),
            ("Requeue", "never: not a celery-morgue entry (d deletes it)"),
        ]
    )


class EntryScreen(ActionOwner, ScrollKeys, Screen[EntryAction | None]):
    """Dismisses with the action the user chose; the dead letters confirm and run it."""

    DEFAULT_CSS = """
    EntryScreen > VerticalScroll {
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
    EntryScreen .note {
        margin-top: 1;
        color: $text-muted;
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
        Binding(
            "v",
            "reveal_arguments",
            "Reveal args",
            id="reveal_arguments",
            tooltip="Show or hide the raw arguments behind argsrepr",
        ),
        *SCROLL_KEYS,
    ]
    DESTRUCTIVE_ACTIONS = frozenset({"delete_entry", "requeue_entry"})

    revealed: reactive[bool] = reactive(False, init=False)

    def __init__(self, entry: StoredEntry, queue: str, *, clock: Clock, readonly: bool) -> None:
        super().__init__(readonly=readonly)
        self.entry = entry
        self.queue = queue
        self.clock = clock

    AUTO_FOCUS = "VerticalScroll"

    def compose(self) -> ComposeResult:
        # The title here, not in on_mount: a screen pushed while the app quits is mounted
        # without being composed, and a query there would crash the exit.
        with VerticalScroll(classes="pane") as scroll:
            scroll.can_focus = True
            scroll.border_title = Text(printable(self._title()))
            if isinstance(self.entry, UnreadableEntry):
                yield from self._unreadable(self.entry)
            else:
                yield from self._readable(self.entry)
        yield Footer()

    def _unreadable(self, entry: UnreadableEntry) -> ComposeResult:
        yield Static(unreadable_facts(entry, self.queue, self.clock()), id="facts")
        yield Static("Stored content", classes="section")
        raw = printable(entry.raw, keep_newlines=True) or "—"
        yield Static(Text(raw), classes="code", id="raw-content")

    def _readable(self, entry: Entry) -> ComposeResult:
        yield Static(facts(entry, self.queue, self.clock()), id="facts")
        if entry.arguments_hidden:
            yield from self._hidden_arguments(entry)
        else:
            yield from self._arguments(entry, "Args", "Kwargs", "")
        yield Static("Traceback", classes="section")
        yield Static(
            Text(printable(entry.traceback.rstrip(), keep_newlines=True) or "—"),
            classes="code",
            id="traceback",
        )

    def _arguments(self, entry: Entry, args: str, kwargs: str, classes: str) -> ComposeResult:
        suffix = "-raw" if classes else ""
        yield Static(args, classes=f"section {classes}")
        yield Static(Text(pretty_json(entry.args)), classes=f"code {classes}", id=f"args{suffix}")
        yield Static(kwargs, classes=f"section {classes}")
        yield Static(
            Text(pretty_json(entry.kwargs)), classes=f"code {classes}", id=f"kwargs{suffix}"
        )

    def _hidden_arguments(self, entry: Entry) -> ComposeResult:
        not_given = "— (not given: hidden too)"
        yield Static("Args, as the caller's argsrepr", classes="section")
        yield Static(Text(printable(entry.argsrepr or not_given)), classes="code", id="argsrepr")
        yield Static("Kwargs, as the caller's kwargsrepr", classes="section")
        yield Static(
            Text(printable(entry.kwargsrepr or not_given)), classes="code", id="kwargsrepr"
        )
        yield Static(HIDDEN_NOTE, classes="note", id="hidden-note", markup=False)

    def _title(self) -> str:
        entry = self.entry
        if isinstance(entry, UnreadableEntry):
            return f"Unreadable entry · {entry.id}"
        return f"{entry.task} · {entry.exception or 'failure'}"

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "reveal_arguments":
            entry = self.entry
            return isinstance(entry, Entry) and entry.arguments_hidden
        return super().check_action(action, parameters)

    def action_back(self) -> None:
        self.dismiss(None)

    def action_delete_entry(self) -> None:
        if not self.refuse_readonly("delete_entry"):
            self.dismiss("delete")

    def action_requeue_entry(self) -> None:
        if self.refuse_readonly("requeue_entry"):
            return
        if isinstance(self.entry, UnreadableEntry):
            self.notify(not_requeueable(self.entry), severity="warning", markup=False)
            return
        self.dismiss("requeue")

    def action_reveal_arguments(self) -> None:
        entry = self.entry
        if not isinstance(entry, Entry) or not entry.arguments_hidden:
            return
        self.revealed = not self.revealed

    async def watch_revealed(self, revealed: bool) -> None:
        # The raw arguments are built only when asked for, and removed when hidden again: until
        # then they are nowhere on the screen, not even in a hidden widget.
        entry = self.entry
        assert isinstance(entry, Entry)
        scroll = self.query_one(VerticalScroll)
        await scroll.query(".raw").remove()
        if revealed:
            widgets = list(self._arguments(entry, "Args (raw)", "Kwargs (raw)", "raw"))
            await scroll.mount_all(widgets, after="#hidden-note")
        self.query_one("#hidden-note", Static).update(REVEALED_NOTE if revealed else HIDDEN_NOTE)
