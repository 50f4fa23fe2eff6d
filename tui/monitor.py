"""The UI's data layer: the blocking calls the dashboard runs in thread workers.

Every Redis and Celery operation goes through ``core``; this module only picks the arguments
(profile limits and timeouts) and turns results into values the screens show. It never imports
textual, so a script or a test can drive it directly.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import redis

from celery_morgue.core import zombies
from celery_morgue.core.dlq import DeadLetterQueue, Page, QueueInfo, RequeueReport
from celery_morgue.core.errors import acl_refusal, certificate_refusal
from celery_morgue.core.filters import EntryFilter
from celery_morgue.core.groups import GroupReport
from celery_morgue.core.redrive import RedriveProgress
from celery_morgue.core.spool_state import spool_backlogs
from celery_morgue.core.zombies import ActiveTask, ClusterSnapshot, RevokeReport
from celery_morgue.tui.connection import Connection, connect_profile
from celery_morgue.tui.profiles import Profile
from celery_morgue.tui.scope import EVERY_ENTRY

# Entries per page; a tall terminal shows about 60, and a page costs one XREVRANGE.
PAGE_SIZE = 100
# A refresh re-reads at most this many of the newest entries of the visible queue.
RELOAD_CAP = 1000
# Under a text filter the pane's total is a scan of the whole queue (a bounded chunk a call):
# seconds of Redis work on 1,000,000 entries, which a poll every few seconds would repeat
# without end on the shared Redis. So it is recounted at most this often, or twenty times as
# long as the last count took; an action of this UI recounts at once, and every confirmation
# counts afresh (Monitor.count), so only the pane's title can lag. The count never holds up the
# rows: a page comes back uncounted and the UI counts in a worker of its own (count_text).
TEXT_RECOUNT_SECONDS = 30.0
# Page.total of a text-filtered page whose count is not known yet (core's uncounted page).
UNCOUNTED = -1
# The groups view lists at most this many groups, largest first: far more than a screen, and a
# queue with more distinct bugs than this has a bigger problem than which one is 201st.
GROUPS_SHOWN = 200

ConnectionFactory = Callable[[Profile], Connection]
"""Profile -> live clients. The CLI and the UI connect the same way, through tui.connection."""

DEFAULT_CONNECT: ConnectionFactory = connect_profile


@dataclass(frozen=True)
class DLQState:
    """One refresh of the DLQ: every queue with its count, and the newest entries of one."""

    queues: list[QueueInfo]
    head: Page | None
    # Hosts whose spool holds failures not in Redis yet: (host, pending).
    spool: tuple[tuple[str, int], ...] = ()
    head_filter: EntryFilter = EVERY_ENTRY
    groups: GroupReport | None = None


def describe_error(error: BaseException) -> str:
    """One line: the exception type and the first line of its text, never a traceback; an ACL
    refusal or a failed certificate check in words."""
    text = str(error)
    refusal = acl_refusal(text) or certificate_refusal(text)
    if refusal is not None:
        return refusal
    lines = text.strip().splitlines()
    name = type(error).__name__
    return f"{name}: {lines[0]}" if lines else name


def is_connection_error(error: BaseException) -> bool:
    return isinstance(error, redis.RedisError | OSError | zombies.ClusterUnavailable)


class Monitor:
    """Blocking operations for one profile; each is safe to call from a worker thread.

    Redis calls time out after ``profile.timeout`` (the client is built that way); control
    calls after ``profile.inspect_timeout``.
    """

    def __init__(self, connection: Connection, *, requeue_rate: float | None = None) -> None:
        self.profile = connection.profile
        self.connection = connection
        self.requeue_rate = requeue_rate
        # A revoke and the poll's inspect both use the app's broker connections; one control
        # exchange at a time keeps a revoke's replies from being read by the poll.
        self._cluster_lock = threading.Lock()
        # (queue, filter) -> (counted at, total, seconds the count took): see TEXT_RECOUNT_SECONDS
        self._text_totals: dict[tuple[str, EntryFilter], tuple[float, int, float]] = {}
        # The (queue, filter) counts running: the poll and a page request never scan at once.
        self._text_counting: set[tuple[str, EntryFilter]] = set()
        # Bumped by every change this UI makes: a count that overlapped one is stale.
        self._text_generation = 0
        self._text_totals_lock = threading.Lock()

    @property
    def dlq(self) -> DeadLetterQueue:
        return self.connection.dlq

    def describe(self, error: BaseException) -> str:
        """:func:`describe_error` with any password this connection knows replaced by ***."""
        return self.connection.scrub(describe_error(error))

    def refresh_dlq(
        self,
        preferred: str | None,
        head_limit: int,
        flt: EntryFilter = EVERY_ENTRY,
        *,
        groups: bool = False,
    ) -> DLQState:
        """Every queue, and the newest ``head_limit`` entries of ``preferred`` (else the first)
        that match ``flt`` (a filter applies to ``preferred`` only); with ``groups``, also the
        failure groups of ``preferred``."""
        queues = self.dlq.queues()
        names = [info.queue for info in queues]
        visible = preferred if preferred in names else (names[0] if names else None)
        if visible != preferred:
            flt = EntryFilter()
        head = self.page(visible, None, head_limit, flt) if visible is not None else None
        report = None
        if groups and visible is not None and visible == preferred:
            report = self.dlq.groups(visible, limit=GROUPS_SHOWN)
        backlogs = spool_backlogs(self.dlq.client, self.dlq.prefix)
        spool = tuple((state.host, state.pending) for state in backlogs if state.pending)
        return DLQState(queues=queues, head=head, spool=spool, head_filter=flt, groups=report)

    def page(
        self,
        queue: str,
        cursor: str | None,
        limit: int = PAGE_SIZE,
        flt: EntryFilter = EVERY_ENTRY,
    ) -> Page:
        """A page of the entries matching ``flt``, newest first, read by the server."""
        if flt.is_empty:
            return self.dlq.page(queue, cursor, limit)
        if not flt.grep:
            return self.dlq.matching_page(queue, flt, cursor, limit)
        page = self.dlq.matching_page(queue, flt, cursor, limit, counted=False)
        return dataclasses.replace(page, total=self.known_text_total(queue, flt))

    def known_text_total(self, queue: str, flt: EntryFilter) -> int:
        """The last count of ``flt`` in ``queue``, however old, or UNCOUNTED."""
        with self._text_totals_lock:
            known = self._text_totals.get((queue, flt))
        return known[1] if known is not None else UNCOUNTED

    def claim_text_count(self, queue: str, flt: EntryFilter) -> bool:
        """Whether the caller should run :meth:`count_text` now: the total is unknown or due
        for a recount, and no count of it is running. True reserves the count for the caller."""
        key = (queue, flt)
        with self._text_totals_lock:
            if key in self._text_counting:
                return False
            known = self._text_totals.get(key)
            if known is not None:
                counted_at, _, took = known
                if time.monotonic() - counted_at < max(TEXT_RECOUNT_SECONDS, 20 * took):
                    return False
            self._text_counting.add(key)
            return True

    def count_text(self, queue: str, flt: EntryFilter) -> int | None:
        """Count ``flt`` in ``queue`` (a scan of the queue) after :meth:`claim_text_count`.

        None when this UI changed the queue during both tries: the count was of a queue that is
        no more, and the next poll claims a fresh one.
        """
        key = (queue, flt)
        try:
            for _ in range(2):
                with self._text_totals_lock:
                    generation = self._text_generation
                started = time.monotonic()
                total = self.dlq.count_matching(queue, flt)
                with self._text_totals_lock:
                    if generation == self._text_generation:
                        self._text_totals[key] = (started, total, time.monotonic() - started)
                        return total
            return None
        finally:
            with self._text_totals_lock:
                self._text_counting.discard(key)

    def _changed(self) -> None:
        """This UI changed the DLQ: the text filter's total is counted again at the next read."""
        with self._text_totals_lock:
            self._text_totals.clear()
            self._text_generation += 1

    def groups(self, queue: str) -> GroupReport:
        return self.dlq.groups(queue, limit=GROUPS_SHOWN)

    def cluster(self) -> ClusterSnapshot:
        with self._cluster_lock:
            return zombies.active_tasks(
                self.connection.app,
                hard_limit=self.profile.hard_limit,
                grace=self.profile.grace,
                timeout=self.profile.inspect_timeout,
                # A worker running core.install flags zombies by its own options, as its
                # reaper will; the profile's apply to the others.
                worker_defaults=True,
            )

    def revoke(self, tasks: Sequence[ActiveTask], signal: str) -> RevokeReport:
        with self._cluster_lock:
            return zombies.revoke_tasks(
                self.connection.app,
                list(tasks),
                signal=signal,
                timeout=self.profile.inspect_timeout,
            )

    def clear(self, queue: str, up_to: str, flt: EntryFilter = EVERY_ENTRY) -> int:
        """Remove the entries matching ``flt`` up to ``up_to``; newer ones and others stay."""
        try:
            return self.dlq.clear(queue, up_to=up_to, flt=flt)
        finally:
            self._changed()

    def count(self, queue: str, flt: EntryFilter, up_to: str) -> int:
        """How many entries match ``flt`` up to ``up_to``: what a confirmation names."""
        return self.dlq.count_matching(queue, flt, up_to)

    def delete(self, queue: str, *entry_ids: str) -> int:
        try:
            return self.dlq.delete(queue, *entry_ids)
        finally:
            self._changed()

    def requeue_each(self, queue: str, entry_ids: Sequence[str]) -> RequeueReport:
        """Requeue the entries marked, one by one; each refusal is noted, the rest go on.

        A broker failure stops it: the report says so, and the rest stay in the queue.
        """
        report = RequeueReport()
        try:
            for entry_id in entry_ids:  # one deleted since it was marked is passed over
                self.dlq.requeue_noting(self.connection.app, queue, entry_id, report)
        except Exception as error:  # the broker, most likely: stop, the rest stay
            report.error = f"{type(error).__name__}: {error}"
        finally:
            self._changed()
        return report

    def requeue(self, queue: str, entry_id: str) -> str:
        try:
            return self.dlq.requeue(self.connection.app, queue, entry_id)
        finally:
            self._changed()

    def newest(self, queue: str) -> str | None:
        return self.dlq.newest_id(queue)

    def requeue_all(
        self,
        queue: str,
        flt: EntryFilter | None = None,
        *,
        up_to: str | None = None,
        stop: threading.Event | None = None,
        on_progress: Callable[[RedriveProgress], None] | None = None,
    ) -> RequeueReport:
        """Requeue the matching entries up to ``up_to`` (the newest shown); ``stop`` (escape)
        ends it after the message in flight, ``on_progress`` hears about it (in this thread).
        The command line's ``requeue --all``: one code path for both, paced by
        ``requeue_rate``."""
        try:
            return self.dlq.requeue_all(
                self.connection.app,
                queue,
                flt=flt,
                up_to=up_to,
                rate=self.requeue_rate,
                stop=stop,
                on_progress=on_progress,
                keep_ids=False,  # nothing here reads them: memory stays flat at any size
            )
        finally:
            self._changed()

    def close(self) -> None:
        self.connection.close()
