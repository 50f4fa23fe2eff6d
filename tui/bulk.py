"""What a bulk action of a DLQ pane is about, and how its confirmation names it.

A bulk action touches either the entries marked one by one (``ids``) or every entry in the
pane's scope up to ``up_to``: the newest entry shown when the key was pressed, so what arrives
while the dialog is open, or while the action runs, is never touched. ``count`` is what the
server counted for that range when the dialog opened.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text

from celery_morgue.core.filters import EntryFilter
from celery_morgue.core.wording import plural
from celery_morgue.tui.literal import printable
from celery_morgue.tui.scope import Scope


@dataclass(frozen=True)
class BulkTarget:
    queue: str
    scope: Scope
    up_to: str
    count: int
    ids: tuple[str, ...] = ()  # the marked entries, when marked one by one

    @property
    def entry_filter(self) -> EntryFilter:
        return self.scope.entry_filter

    @property
    def what(self) -> str:
        """``1,204 entries of group 3f9a0c1d2e4b (ValueError in parse_invoice)``."""
        if self.ids:
            return f"{plural(len(self.ids), 'marked entry', 'marked entries')}"
        counted = plural(self.count, "entry", "entries")
        if self.scope.is_empty:
            return counted
        if self.scope.group is None:
            return f"{counted} {self.scope.phrase}"  # 'containing "x"'
        return f"{counted} of {self.scope.phrase}"


def _queue(target: BulkTarget) -> tuple[str, str]:
    return (printable(target.queue), "bold")


RANGE = (
    " up to the newest one shown. Entries that arrive after it are kept"
    ", and so are the entries the filter leaves out."
)


def clear_question(target: BulkTarget) -> Text:
    kept = RANGE if not target.scope.is_empty else RANGE.split(",")[0] + "."
    return Text.assemble(
        f"Clear {target.what} from ",
        _queue(target),
        f"?\n\nRemoves them{kept}",
    )


def delete_question(target: BulkTarget) -> Text:
    if target.ids:
        return Text.assemble(
            f"Delete the {target.what} from ",
            _queue(target),
            "?\n\nThey are removed from the dead-letter queue for good.",
        )
    return Text.assemble(
        f"Delete {target.what} from ",
        _queue(target),
        f"?\n\nThey are removed for good,{RANGE}",
    )


def requeue_question(target: BulkTarget) -> Text:
    if target.ids:
        return Text.assemble(
            f"Requeue the {target.what} of ",
            _queue(target),
            "?\n\nEach is sent again under a new task id.",
        )
    of_queue = f" of {printable(target.queue)}" if target.scope.is_empty else ""
    return Text.assemble(
        f"Requeue {target.what}{of_queue}?",
        "\n\nEach is sent again under a new task id,",
        RANGE,
        " Entries whose arguments were changed when stored, and unreadable ones, are skipped."
        " Escape stops it; what was not sent stays in the queue.",
    )
