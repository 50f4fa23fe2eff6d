"""One scrape's worth of facts: what Redis holds now, and the workers as last inspected.

The DLQ part is read at every scrape and costs the same on any queue size (see
``core.gauges``). The cluster part is a broadcast to every worker, so ``ClusterWatch`` takes it
in a thread of its own every ``interval`` seconds and scrapes read the latest: two Prometheus
servers scraping do not double the broadcast load, and a scrape never waits on the broker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis
from kombu.exceptions import OperationalError

from celery_morgue.core.broadcast import ClusterUnavailable
from celery_morgue.core.dlq import DeadLetterQueue
from celery_morgue.core.gauges import QueueGauge, captured_totals, queue_gauges
from celery_morgue.core.reaper_totals import ReaperTotals, reaper_totals
from celery_morgue.core.spool_state import spool_states
from celery_morgue.core.wording import one_line
from celery_morgue.core.zombies import ClusterSnapshot

log = logging.getLogger(__name__)

REDIS_ERRORS = (redis.RedisError, OSError)


@dataclass(frozen=True)
class DLQReading:
    queues: list[QueueGauge]
    captured: dict[tuple[str, str], int]  # (queue, reason) -> entries ever stored
    reaper: ReaperTotals
    spool_pending: dict[str, int]  # host -> entries waiting in its spools


def read_dlq(dlq: DeadLetterQueue) -> DLQReading:
    """Everything the DLQ's Redis says; raises a Redis error when it does not answer."""
    pending: dict[str, int] = {}
    for state in spool_states(dlq.client, dlq.prefix):
        pending[state.host] = pending.get(state.host, 0) + state.pending
    return DLQReading(
        queues=queue_gauges(dlq),
        captured=captured_totals(dlq),
        reaper=reaper_totals(dlq.client, dlq.prefix),
        spool_pending=pending,
    )


@dataclass
class ClusterWatch:
    """The latest cluster snapshot, refreshed every ``interval`` seconds in its own thread."""

    take: Callable[[], ClusterSnapshot]  # raises ClusterUnavailable when the broker is away
    interval: float
    snapshot: ClusterSnapshot | None = None
    taken_at: float | None = None  # monotonic
    took: float = 0.0  # seconds the last take lasted
    error: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def refresh(self) -> None:
        began = time.monotonic()
        try:
            self.snapshot = self.take()
            self.taken_at = time.monotonic()
            self.took = self.taken_at - began
            self.error = None
        except (ClusterUnavailable, OperationalError, *REDIS_ERRORS) as exc:
            if self.error is None:
                log.warning("celery-morgue: metrics: the workers could not be asked: %s", exc)
            self.error = one_line(str(exc))

    def fresh(self) -> ClusterSnapshot | None:
        """The snapshot, unless a newer one is overdue: two intervals and two takes as long
        as the last went by without one (the broker went away since)."""
        if self.taken_at is None:
            return None
        if time.monotonic() - self.taken_at > 2 * (self.interval + self.took):
            return None
        return self.snapshot

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="morgue-inspect", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception as exc:  # a thread that dies would leave scrapes a stale snapshot
                log.exception("celery-morgue: metrics: asking the workers failed")
                self.error = one_line(str(exc)) or type(exc).__name__
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
