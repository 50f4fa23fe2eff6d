"""When the dashboard asks Redis and the workers again.

One poll of a kind at a time: the next one is scheduled only once the last has finished, so a
slow Redis or a slow inspect never piles up threads. Failures wait for ``core.backoff``'s delays.
"""

from __future__ import annotations

from collections.abc import Callable

from textual.message_pump import MessagePump
from textual.timer import Timer

from celery_morgue.core.backoff import calculate_backoff

RECONNECT_BASE = 1.0
RECONNECT_MAX = 30.0


def reconnect_delay(failures: int) -> float:
    """Seconds before the next attempt after ``failures`` failed polls in a row (1, 2, 4 … 30).

    No jitter: one UI polling one Redis is not a herd, and the banner shows this number.
    """
    return calculate_backoff(
        max(0, failures - 1), base=RECONNECT_BASE, max_delay=RECONNECT_MAX, jitter=None
    )


class PollSchedule:
    """Runs ``start`` now or after a delay, never while the previous run is in flight.

    ``start`` launches a worker; the worker's result handler calls :meth:`succeeded` or
    :meth:`failed`, which schedule the next run.
    """

    def __init__(self, owner: MessagePump, start: Callable[[], None], interval: float) -> None:
        self.owner = owner
        self._start = start
        self.interval = interval
        self.failures = 0
        self.in_flight = False
        self.stopped = False
        self._again = False
        self._timer: Timer | None = None

    def run_now(self) -> None:
        """Poll at once, or as soon as the poll in flight has finished."""
        if self.stopped:
            return
        if self.in_flight:
            self._again = True
            return
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self.in_flight = True
        self._start()

    def succeeded(self) -> None:
        self.failures = 0
        self._finished(self.interval)

    def failed(self) -> float:
        """Record a failure; returns the delay before the next attempt."""
        self.failures += 1
        delay = reconnect_delay(self.failures)
        self._finished(delay)
        return delay

    def _finished(self, delay: float) -> None:
        self.in_flight = False
        if self.stopped:
            return
        if self._again:
            self._again = False
            self.run_now()
            return
        self._timer = self.owner.set_timer(delay, self.run_now)

    def stop(self) -> None:
        self.stopped = True
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
