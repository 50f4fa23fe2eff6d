"""What the thread workers send back to the UI thread.

Each arrives at the dashboard screen: its polls post there, and what a widget's worker posts
(a page, an action's outcome) bubbles up to it. So these are also the way to feed the dashboard
deterministic data (snapshot tests post them to it directly, with polling off).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from textual.message import Message

from celery_morgue.core.dlq import Page, QueueInfo
from celery_morgue.core.filters import EntryFilter
from celery_morgue.core.groups import GroupReport
from celery_morgue.core.redrive import RedriveProgress
from celery_morgue.core.zombies import ClusterSnapshot
from celery_morgue.tui.scope import EVERY_ENTRY

Severity = Literal["information", "warning", "error"]


@dataclass
class DeadLettersRefreshed(Message):
    """Every queue with its count, and the newest entries of the queue on screen."""

    queues: list[QueueInfo]
    head: Page | None
    taken_at: float
    spool: tuple[tuple[str, int], ...] = ()  # hosts with spooled failures: (host, pending)
    # The head was read under this filter: a pane narrowed otherwise since then ignores it.
    head_filter: EntryFilter = EVERY_ENTRY
    groups: GroupReport | None = None  # the shown queue's groups, while the groups view is open


@dataclass
class RedisUnavailable(Message):
    """A poll of the DLQ Redis failed at ``failed_at``; ``error`` is one line, scrubbed."""

    error: str
    failed_at: float


@dataclass
class PageLoaded(Message):
    """Entries of ``page.queue`` matching ``flt`` after the cursor ``after`` (``None``: the
    newest ones)."""

    page: Page
    after: str | None
    flt: EntryFilter = EVERY_ENTRY


@dataclass
class PageFailed(Message):
    queue: str
    error: str


@dataclass
class ClusterRefreshed(Message):
    snapshot: ClusterSnapshot


@dataclass
class ClusterFailed(Message):
    error: str


@dataclass
class ActionDone(Message):
    """An action finished (or failed); ``text`` is shown literally in a notification.

    Posted by the widget whose action it was; the dashboard notifies and polls again.
    """

    text: str
    severity: Severity = "information"
    refresh_dlq: bool = False
    refresh_cluster: bool = False


@dataclass
class RequeueProgressed(Message):
    """How far a requeue of ``queue`` has got; a flood of them collapses to the latest."""

    queue: str
    progress: RedriveProgress

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, RequeueProgressed) and message.queue == self.queue


@dataclass
class RequeueEnded(Message):
    """The requeue ``run`` (its token) of ``queue`` ended, however: escape no longer stops it."""

    queue: str
    run: int


@dataclass
class TextTotalCounted(Message):
    """How many entries of ``queue`` match ``flt`` (a text filter), counted in a worker after
    the rows were shown; a pane under another filter by now ignores it."""

    queue: str
    flt: EntryFilter
    total: int
