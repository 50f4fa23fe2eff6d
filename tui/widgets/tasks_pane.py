"""Tasks running on every worker, oldest first, with an age bar against each task's hard limit."""

from __future__ import annotations

from rich.color import Color as RichColor
from rich.text import Text
from textual.color import Color, ColorParseError

from core.zombies import ActiveTask, ClusterSnapshot
from tui.cells import (
    AGE_WIDTH,
    BAR_WIDTH,
    SHORT_ID,
    STATE_WIDTH,
    WORKER_WIDTH,
    BarColours,
    task_cells,
    task_matches,
    unreachable_cells,
)
from tui.widgets.pane import TablePane
from tui.widgets.tables import ColumnSpec

COLUMNS = [
    ColumnSpec("Worker", "worker", WORKER_WIDTH),
    ColumnSpec("Task", "task"),
    ColumnSpec("Task id", "task_id", SHORT_ID),
    ColumnSpec("Age", "age", AGE_WIDTH),
    ColumnSpec("State", "state", STATE_WIDTH),
    ColumnSpec("vs limit", "bar", BAR_WIDTH),
]


class TasksPane(TablePane):
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(COLUMNS, order_column="worker", id=id)
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
            self.border_title = Text("Active tasks")
        else:
            zombies = len(snapshot.zombies)
            flag = f", {zombies} ZOMBIE" if zombies else ""
            self.border_title = Text(f"Active tasks · {len(snapshot.tasks)}{flag}")
        parts: list[str] = []
        if snapshot is not None:
            workers = len(snapshot.workers)
            parts.append(f"{workers} worker{'s' if workers != 1 else ''}")
            if snapshot.unreachable:
                parts.append(f"{len(snapshot.unreachable)} unreachable")
        if self.filter_text:
            parts.append(f"filter {self.filter_text!r}")
        if self.error is not None and snapshot is not None:
            parts.append(f"stale: {self.error}")
        self.border_subtitle = Text(" · ".join(parts))
