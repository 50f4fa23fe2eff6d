"""Tasks running on every worker, oldest first, with an age bar against each task's hard limit.

Enter on a task shows its detail: the limit its worker enforces and where that limit comes from
(the call, the task, the pool, the profile's default), and which clock its age is on. The pane
owns ``r`` (revoke the selected task) and ``R`` (revoke every zombie), each confirmed first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from rich.color import Color as RichColor
from rich.text import Text
from textual import on
from textual.binding import Binding, BindingType
from textual.color import Color, ColorParseError
from textual.widgets import DataTable

from celery_morgue.core.wording import plural
from celery_morgue.core.zombies import SOURCE_INSPECT, ActiveTask, ClusterSnapshot
from celery_morgue.tui.actions import ActionOwner
from celery_morgue.tui.cells import (
    AGE_WIDTH,
    BAR_WIDTH,
    SHORT_ID,
    STATE_WIDTH,
    WORKER_WIDTH,
    BarColours,
    clipped_line,
    format_age,
    printable,
    task_cells,
    task_matches,
    unreachable_cells,
)
from celery_morgue.tui.dialogs import RevokeConfirmScreen
from celery_morgue.tui.messages import ActionDone
from celery_morgue.tui.monitor import Monitor
from celery_morgue.tui.outcomes import revoke_summary
from celery_morgue.tui.widgets.pane import FILTER, TablePane
from celery_morgue.tui.widgets.tables import ColumnSpec

COLUMNS = [
    ColumnSpec("Worker", "worker", WORKER_WIDTH),
    ColumnSpec("Task", "task"),
    ColumnSpec("Task id", "task_id", SHORT_ID),
    ColumnSpec("Age", "age", AGE_WIDTH),
    ColumnSpec("State", "state", STATE_WIDTH),
    ColumnSpec("vs limit", "bar", BAR_WIDTH),
]


LIMIT_SOURCES = {
    "request": "set on the call (time_limit=)",
    "task": "the task's time_limit",
    "pool": "the worker's --time-limit",
    "soft": "its soft limit (no hard limit known)",
    "default": "a default, the worker's or the profile's (none of its own)",
    "none": "none known",
}
DETAIL_WIDTH = 60  # a notification's text, so the detail fits an 80-column terminal
DETAIL_SECONDS = 12
# How many task names a revoke confirmation lists before "and N more".
LISTED_TASKS = 5


def task_detail(task: ActiveTask) -> str:
    """What the table has no room for: the limit, where it came from, the clock of the age."""
    limit = f"{task.hard_limit:g} s" if task.limit_known else "no limit"
    source = LIMIT_SOURCES.get(task.hard_limit_source, task.hard_limit_source)
    if task.source == SOURCE_INSPECT:
        clock = "this host's clock (no core.install there: a per-call limit is unseen)"
    else:
        clock = "the worker's own clock"
    pid = f" pid {task.pid}" if task.pid is not None else ""
    lines = [
        clipped_line(task.name, DETAIL_WIDTH),
        clipped_line(f"on {task.worker}{pid}", DETAIL_WIDTH),
        f"limit {limit}: {source}" if task.limit_known else f"limit: {source}",
        f"age {format_age(task.age)}, by {clock}" if task.age is not None else "not started yet",
    ]
    if task.zombie:
        lines.append("ZOMBIE: past its limit plus the grace")
    return "\n".join(lines)


class TasksPane(ActionOwner, TablePane):
    """``monitor`` revokes; ``readonly`` (the profile's) disables ``r`` and ``R``."""

    BINDINGS: ClassVar[list[BindingType]] = [
        FILTER,
        Binding(
            "r",
            "revoke",
            "Revoke",
            id="revoke",
            tooltip="Revoke the selected task (terminate, SIGTERM or SIGKILL)",
        ),
        Binding(
            "R",
            "revoke_zombies",
            "Revoke zombies",
            id="revoke_zombies",
            tooltip="Revoke every task past its hard limit plus grace",
        ),
    ]
    DESTRUCTIVE_ACTIONS = frozenset({"revoke", "revoke_zombies"})
    PALETTE_TITLES: ClassVar[Mapping[str, str]] = {
        "filter": "Filter the active tasks",
        "revoke": "Revoke task",
        "revoke_zombies": "Revoke zombies",
    }

    def __init__(self, monitor: Monitor, *, readonly: bool, id: str | None = None) -> None:
        super().__init__(COLUMNS, order_column="worker", id=id, readonly=readonly)
        self.monitor = monitor
        self.snapshot: ClusterSnapshot | None = None
        self.error: str | None = None

    @property
    def selected_task(self) -> ActiveTask | None:
        key = self.table.cursor_key
        if key is None or self.snapshot is None:
            return None
        return next((task for task in self.snapshot.tasks if task.id == key), None)

    @property
    def zombies(self) -> list[ActiveTask]:
        return list(self.snapshot.zombies) if self.snapshot is not None else []

    @on(DataTable.RowSelected)
    def _show_detail(self, event: DataTable.RowSelected) -> None:
        if event.data_table is not self.table:
            return
        event.stop()
        task = self.selected_task
        if task is not None:
            self.app.notify(
                task_detail(task),
                title=f"Task {printable(task.id)[:SHORT_ID]}",
                markup=False,
                timeout=DETAIL_SECONDS,
            )

    def apply_snapshot(self, snapshot: ClusterSnapshot) -> None:
        self.snapshot = snapshot
        self.error = None
        self.render_rows()

    def apply_failure(self, error: str) -> None:
        """The cluster could not be asked; the last answer stays, marked as stale."""
        self.error = error
        self.render_rows()

    def _colours(self) -> BarColours:
        variables = self.app.theme_variables or self.app.get_css_variables()

        def colour(name: str) -> RichColor | str:
            try:
                parsed = Color.parse(variables[name])
            except (KeyError, ColorParseError):
                return "default"
            # Transparent (the ANSI themes' panel) means the terminal's own background.
            return parsed.rich_color if parsed.a > 0 else "default"

        return BarColours(
            calm=colour("success"),
            warning=colour("warning"),
            past=colour("error"),
            background=colour("panel"),
        )

    def render_rows(self) -> None:
        if not self.table.columns:
            return  # not mounted yet: on_mount adds the columns, then renders
        snapshot = self.snapshot
        rows: dict[str, dict[str, object]] = {}
        order: list[str] = []
        if snapshot is not None:
            colours = self._colours()
            for task in snapshot.tasks:  # oldest first, as the snapshot gives them
                if self.filter_text and not task_matches(task, self.filter_text):
                    continue
                rows[task.id] = task_cells(task, colours, self.table.flex_width)
                order.append(task.id)
            for worker in snapshot.unreachable:
                key = f"unreachable:{worker}"
                if self.filter_text and self.filter_text.casefold() not in worker.casefold():
                    continue
                rows[key] = unreachable_cells(worker)
                order.append(key)
        self.table.show(rows, order)
        if snapshot is None:
            self.show_placeholder(self.error or "Asking the workers…")
        elif not order and self.filter_text:
            self.show_placeholder(f"No running task matches {self.filter_text!r}.")
        elif not order:
            self.show_placeholder("No task is running.")
        else:
            self.show_placeholder(None)
        self._update_titles()

    def _update_titles(self) -> None:
        snapshot = self.snapshot
        if snapshot is None:
            title = "Active tasks"
        else:
            zombies = len(snapshot.zombies)
            flag = f", {zombies} ZOMBIE" if zombies else ""
            title = f"Active tasks · {len(snapshot.tasks)}{flag}"
        parts: list[str] = []
        if snapshot is not None:
            workers = len(snapshot.workers)
            parts.append(f"{workers} worker{'s' if workers != 1 else ''}")
            if snapshot.unreachable:
                parts.append(f"{len(snapshot.unreachable)} unreachable")
            if snapshot.inspected:
                parts.append(f"{len(snapshot.inspected)} without core.install")
        if self.filter_text:
            parts.append(f"filter {self.filter_text!r}")
        if self.error is not None and snapshot is not None:
            parts.append(f"stale: {self.error}")
        self.set_titles(title, " · ".join(parts))

    # -- revoking --------------------------------------------------------------------------

    def action_revoke(self) -> None:
        task = self.selected_task
        if task is None:
            self.notify("No running task selected.", severity="warning", markup=False)
            return
        question = Text.assemble(
            "Revoke ",
            (printable(task.name), "bold"),
            f" ({printable(task.id)}) on {printable(task.worker)}?\n\n"
            "The worker terminates it with the chosen signal.",
        )
        self._confirm_revoke("Revoke task", question, [task])

    def action_revoke_zombies(self) -> None:
        zombies = self.zombies
        if not zombies:
            self.notify("No zombie tasks.", markup=False)
            return
        names = ", ".join(clipped_line(task.name, 40) for task in zombies[:LISTED_TASKS])
        more = f" and {len(zombies) - LISTED_TASKS} more" if len(zombies) > LISTED_TASKS else ""
        question = Text(
            f"Revoke {plural(len(zombies), 'zombie task')} (past their hard limit plus "
            f"{self.monitor.profile.grace:g} s grace)?\n\n{names}{more}"
        )
        self._confirm_revoke("Revoke zombies", question, zombies)

    def _confirm_revoke(self, title: str, question: Text, tasks: list[ActiveTask]) -> None:
        def chosen(signal: str | None) -> None:
            if signal is not None:
                self._revoke(tasks, signal)

        self.app.push_screen(RevokeConfirmScreen(title, question), chosen)

    def _revoke(self, tasks: list[ActiveTask], signal: str) -> None:
        monitor = self.monitor

        def run() -> ActionDone:
            report = monitor.revoke(tasks, signal)
            return ActionDone(revoke_summary(report, signal), refresh_cluster=True)

        self.run_in_thread("Revoke", run, monitor.describe)
