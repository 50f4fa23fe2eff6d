"""The failure groups of one queue: what is failing, one row per bug, largest first.

It replaces the queue list and the entries while open, so the sample has the width of the
terminal. The dashboard's poll reads the groups of the queue shown while the view is open
(:attr:`DeadLetters.groups_queue`) and hands each report to :meth:`GroupsPane.apply_report`:
the rows are updated by group id, like every live table. Enter narrows the queue's pane to the
group, ``E`` requeues the group (both carried out by :class:`DeadLetters`, which owns the
confirmations and the workers), escape closes the view.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import DataTable

from celery_morgue.core.groups import GroupReport, GroupSummary
from celery_morgue.tui.actions import ActionOwner
from celery_morgue.tui.cells import (
    AGE_WIDTH,
    Clock,
    Keyed,
    clipped_line,
    coarse_age,
    head,
    tail,
)
from celery_morgue.tui.literal import printable
from celery_morgue.tui.scope import GroupChoice
from celery_morgue.tui.widgets.pane import TablePane
from celery_morgue.tui.widgets.tables import ColumnSpec

COUNT_WIDTH = 7  # "999,999"; a million is "1.0M"
GROUP_TASK_WIDTH = 18
EXCEPTION_WIDTH = 15  # "ConnectionError"

COLUMNS = [
    ColumnSpec("Count", "count", COUNT_WIDTH),
    ColumnSpec("Last", "last", AGE_WIDTH),
    ColumnSpec("Task", "task", GROUP_TASK_WIDTH),
    ColumnSpec("Exception", "exception", EXCEPTION_WIDTH),
    ColumnSpec("Sample", "sample"),
]


def short_count(count: int) -> str:
    return f"{count:,}" if count < 1_000_000 else f"{count / 1_000_000:.1f}M"


def group_cells(summary: GroupSummary, now: float, sample_width: int) -> dict[str, object]:
    """The cells of a group's row; all of it came from tasks, so all of it is literal Text."""
    return {
        "count": Keyed(summary.group, Text(short_count(summary.count), justify="right")),
        "last": Text(coarse_age(now - summary.last.timestamp())),
        "task": Text(tail(summary.task or "?", GROUP_TASK_WIDTH)),
        # The type's own name, its start kept: "PaymentDeclin…" reads better than "…entDeclined".
        "exception": Text(head(summary.exception.rsplit(".", 1)[-1] or "?", EXCEPTION_WIDTH)),
        "sample": Text(clipped_line(summary.sample, sample_width)),
    }


class GroupsPane(ActionOwner, TablePane):
    """The groups of ``queue`` as last read; ``readonly`` (the profile's) disables ``E``."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close_groups", "Close groups", id="close_groups"),
        Binding(
            "E",
            "requeue_group",
            "Requeue group",
            id="requeue_group",
            tooltip="Requeue every entry of the highlighted group",
        ),
    ]
    DESTRUCTIVE_ACTIONS = frozenset({"requeue_group"})

    @dataclass
    class Chosen(Message):
        """Enter on a group: narrow the queue's pane to it."""

        choice: GroupChoice

    @dataclass
    class RequeueWanted(Message):
        choice: GroupChoice

    class Closed(Message):
        """Escape: back to the queues."""

    def __init__(self, *, clock: Clock, readonly: bool, id: str | None = None) -> None:
        super().__init__(COLUMNS, order_column="count", id=id, readonly=readonly)
        self.clock = clock
        self.queue: str | None = None
        self.report: GroupReport | None = None
        self.error: str | None = None
        # A requeue of this queue's running: its progress in the subtitle, and escape stops it
        # (the owner's binding) rather than closing the view.
        self.progress: str | None = None

    def show_progress(self, line: str | None) -> None:
        self.progress = line
        self._update_titles()
        self.screen.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "close_groups" and self.progress is not None:
            return False
        allowed = super().check_action(action, parameters)
        if allowed and action == "requeue_group" and self.progress is not None:
            return None  # one requeue of the queue at a time: dimmed, and the key says why
        return allowed

    def on_key(self, event: events.Key) -> None:
        active = self.screen.active_bindings.get(event.key)
        if (
            active is not None
            and active.node is self
            and active.binding.action == "requeue_group"
            and not active.enabled
            and not self.readonly
        ):
            self.notify(
                f"A requeue of {printable(self.queue or '')} is running: escape stops it.",
                severity="warning",
                markup=False,
            )
            event.stop()
            event.prevent_default()
            return
        super().on_key(event)

    def open(self, queue: str) -> None:
        """Show ``queue``'s groups (a placeholder until the next poll reads them)."""
        if queue != self.queue:
            self.queue = queue
            self.report = None
        self.error = None
        self.render_rows()

    def apply_report(self, report: GroupReport) -> None:
        if report.queue != self.queue:
            return  # read for the queue shown before
        self.report = report
        self.error = None
        self.render_rows()

    def apply_failure(self, error: str) -> None:
        self.error = error
        self.render_rows()

    @property
    def summaries(self) -> dict[str, GroupSummary]:
        return {g.group: g for g in self.report.groups} if self.report is not None else {}

    @property
    def selected(self) -> GroupSummary | None:
        key = self.table.cursor_key
        return self.summaries.get(key) if key is not None else None

    def render_rows(self) -> None:
        if not self.table.columns:
            return  # not mounted yet: on_mount adds the columns, then renders
        report = self.report
        groups = report.groups if report is not None else []
        now = self.clock()
        width = self.table.flex_width
        self.table.show(
            {g.group: group_cells(g, now, width) for g in groups}, [g.group for g in groups]
        )
        if report is None:
            self.show_placeholder(self.error or "Reading the groups…")
        elif not groups:
            self.show_placeholder("No entries, so no groups.")
        else:
            self.show_placeholder(None)
        self._update_titles()

    def _update_titles(self) -> None:
        report = self.report
        queue = self.queue or ""
        if report is None:
            self.set_titles(f"{queue} · groups", self.progress or "")
            return
        shown = len(report.groups)
        distinct = max(report.distinct, shown)
        more = f" (largest {shown:,})" if distinct > shown else ""
        title = f"{queue} · {distinct:,} groups{more} · {report.total:,} entries"
        ungrouped = f" · {report.ungrouped:,} not grouped yet" if report.ungrouped else ""
        subtitle = self.progress or f"enter: show · E: requeue · escape: close{ungrouped}"
        self.set_titles(title, subtitle)

    def on_mount(self) -> None:
        self.render_rows()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        choice = self._choice()
        if choice is not None:
            self.post_message(self.Chosen(choice))

    def _choice(self) -> GroupChoice | None:
        summary = self.selected
        if summary is None or self.queue is None:
            return None
        return GroupChoice.of(summary)

    def action_close_groups(self) -> None:
        self.post_message(self.Closed())

    def action_requeue_group(self) -> None:
        choice = self._choice()
        if choice is None:
            self.notify("No group selected.", severity="warning", markup=False)
            return
        self.post_message(self.RequeueWanted(choice))
