"""The spool drain: a timer in the worker's main process that moves the spool into Redis.

Without it, spooled entries would reach Redis only with the next failure that is written
successfully, and a host that stops failing would never replay. ``core.install`` adds
:class:`SpoolDrainStep` to the app's consumer blueprint; each time the consumer starts, it
schedules :meth:`SpoolDrain.tick` on the consumer's timer (with the prefork pool, the event
loop's own timer, so ticks run between the loop's other work, never beside it).

Each tick:

- with nothing spooled, reports the spool's state to Redis if it changed or a minute passed,
  and comes back in ``IDLE_SECONDS``;
- with a backlog, first probes Redis (``PING``, with a timeout of at most ``PROBE_TIMEOUT``)
  when it has not heard from it in this backlog; while Redis does not answer it backs off with
  :func:`core.backoff.calculate_backoff` (decorrelated jitter, ``BACKOFF_BASE`` up to
  ``BACKOFF_MAX``) and keeps this process's capture circuit open until the next probe, so no
  failure in the main process waits on a dead Redis;
- once Redis answers, closes the circuit and replays one bounded tick (about 15 ms, see
  ``core.spool``), then comes back in ``BUSY_SECONDS`` while a backlog is left, reporting the
  state at most every second meanwhile and once more when the spool is empty. A replay that
  fails although the PING worked (Redis out of memory, read-only, loading) backs off like a
  failed probe, and the backoff only starts over once a replay succeeded. Entries Redis
  refuses for good (:func:`redis_away` says no) do not fail the replay: the capture sets them
  aside and the spool moves past them.

Spooled entries are therefore in Redis within ``BACKOFF_MAX`` (plus the time their replay takes)
of Redis answering again, with no failure needed.
"""

from __future__ import annotations

import logging
import re
import socket
import time
import weakref
from typing import Any

import redis
from celery import bootsteps

from celery_morgue.core.backoff import calculate_backoff
from celery_morgue.core.redis_cluster import DLQClient
from celery_morgue.core.spool_state import SpoolState, write_spool_state
from celery_morgue.core.urls import connect, redact_url

log = logging.getLogger(__name__)

IDLE_SECONDS = 1.0
BUSY_SECONDS = 0.005
PROBE_TIMEOUT = 0.25
BACKOFF_BASE = 0.25
BACKOFF_MAX = 2.0
REPORT_EVERY = 60.0
REPORT_BUSY_EVERY = 1.0

# Server states that pass: Redis is there but cannot take a write right now. redis-py strips
# the code from the message of some (they have their own class), and a script's error carries
# it inside the message ("... @user_script:3: -OOM command not allowed ..."). An ACL or password
# mistake (NOPERM, NOAUTH, WRONGPASS) refuses every entry alike until someone fixes it: the
# entries wait in the spool for that rather than being set aside.
_TRANSIENT_CODES = re.compile(
    r"\b(LOADING|BUSY|MISCONF|OOM|READONLY|TRYAGAIN|CLUSTERDOWN|MASTERDOWN|NOREPLICAS|NOSCRIPT"
    r"|NOPERM|NOAUTH|WRONGPASS)\b"
)
_TRANSIENT_CLASSES: tuple[type[Exception], ...] = (
    redis.exceptions.AuthenticationError,
    redis.exceptions.NoPermissionError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.MasterDownError,
    redis.exceptions.NoScriptError,
)


def redis_away(exc: BaseException) -> bool:
    """Is ``exc`` Redis being away (or passing through a state it leaves by itself), so the
    write is worth retrying later from the spool?

    False for a refusal that would come back every time for this entry (a ``ResponseError``
    such as ``WRONGTYPE`` because ``dlq:<queue>`` is someone else's key): retrying it would
    block everything spooled behind it, so such an entry is set aside instead.
    """
    if isinstance(exc, _TRANSIENT_CLASSES):
        return True
    if isinstance(exc, (redis.ResponseError, redis.DataError)):
        return bool(_TRANSIENT_CODES.search(str(exc)))
    return isinstance(exc, (redis.RedisError, OSError))


class SpoolDrain:
    """Drains one capture's spool from a timer; ``tick`` never raises."""

    def __init__(self, capture: Any, worker: str = "", host: str | None = None) -> None:
        self.capture = capture  # core.capture.FailureCapture
        self.worker = worker
        self.host = host or socket.gethostname()
        self._timer: Any = None
        self._entry: Any = None
        self._failures = 0
        self._delay: float | None = None
        self._heard = False  # Redis answered during the current backlog
        self._silent = False  # the last probe failed (and that was logged)
        self._replay_failing = False  # the last replay failed (and that was logged)
        self._probe_client: DLQClient | None = None
        self._reported: tuple[int, int, int] | None = None
        self._reported_at = -float("inf")
        # The header's count, read with each report: catches sealed segments left behind with
        # an empty active one (a process killed between the two), which pending() cannot see.
        self._header_pending = False

    def __repr__(self) -> str:
        return f"<SpoolDrain {self.capture.spool.path}>"

    # -- scheduling ----------------------------------------------------------------------

    def start(self, timer: Any) -> None:
        """Tick on ``timer`` (anything with ``call_after(seconds, fun)``), starting now."""
        self.stop()
        self._timer = timer
        self._schedule(0.0)

    def stop(self) -> None:
        entry, self._entry, self._timer = self._entry, None, None
        if entry is not None:
            try:
                entry.cancel()
            except Exception:
                log.debug("celery-morgue: could not cancel the spool drain timer", exc_info=True)

    def _schedule(self, delay: float) -> None:
        if self._timer is not None:
            self._entry = self._timer.call_after(delay, self.tick)

    def tick(self) -> None:
        self._entry = None
        if self._timer is None:
            return
        try:
            delay = self.step()
        except Exception:
            log.exception("celery-morgue: spool drain failed; trying again later")
            delay = IDLE_SECONDS
        self._schedule(delay)

    # -- one tick ------------------------------------------------------------------------

    def step(self) -> float:
        """Do one tick's work; returns the seconds until the next one."""
        capture = self.capture
        if not capture.spool.pending() and not self._header_pending:
            self._heard = False
            if self._failures and not self._probe():
                return self._back_off()
            self._recovered()
            self._report(busy=False)
            return IDLE_SECONDS
        probe = not self._heard or self._failures or capture.circuit_open()
        if probe and not self._probe():
            return self._back_off()
        try:
            capture.replay_spool(raise_errors=True)
        except (redis.RedisError, OSError) as exc:
            # Redis answers PING but takes no write (out of memory, read-only, loading...):
            # the backoff goes on growing, and this is said once, not every tick.
            if not self._replay_failing:
                log.warning("celery-morgue: spool replay deferred: %s", exc)
            else:
                log.debug("celery-morgue: spool replay deferred: %s", exc)
            self._replay_failing = True
            return self._back_off()
        if self._replay_failing:
            log.info("celery-morgue: the spool replays again")
        self._recovered()
        more = capture.spool.pending()
        self._report(busy=more)
        return BUSY_SECONDS if more else IDLE_SECONDS

    def _probe(self) -> bool:
        """Does Redis answer a PING, within a short timeout? Closes the circuit if so."""
        capture = self.capture
        if self._probe_client is None:
            timeout = min(capture.options.socket_timeout, PROBE_TIMEOUT)
            self._probe_client = connect(
                capture.redis_url, timeout, cluster=capture.options.cluster
            )
        try:
            self._probe_client.ping()
        except (redis.RedisError, OSError) as exc:
            if not self._silent:
                log.warning(
                    "celery-morgue: Redis at %s does not answer (%s); the spool waits, "
                    "retrying with backoff",
                    redact_url(capture.redis_url),
                    exc,
                )
            self._silent = True
            return False
        if self._silent:
            log.info(
                "celery-morgue: Redis at %s answers again; replaying the spool",
                redact_url(capture.redis_url),
            )
        self._silent = False
        self._heard = True
        capture.close_circuit()
        return True

    def _recovered(self) -> None:
        """Redis took what this tick gave it: the backoff starts over. Not on a PING alone: a
        Redis that answers PING but refuses writes keeps backing off."""
        self._failures = 0
        self._delay = None
        self._replay_failing = False

    def _back_off(self) -> float:
        self._heard = False
        delay = calculate_backoff(
            min(self._failures, 30),
            base=BACKOFF_BASE,
            max_delay=BACKOFF_MAX,
            jitter="decorrelated",
            previous=self._delay,
        )
        self._failures += 1
        self._delay = delay
        # Until the next probe, writes in this process go straight to the spool.
        self.capture.hold_circuit(delay + BACKOFF_BASE)
        return delay

    def _report(self, *, busy: bool) -> None:
        """Write the spool's state to Redis if it changed (at most every second while a
        backlog drains) or a minute passed. A Redis error counts as a failed probe."""
        capture = self.capture
        spool = capture.spool
        now = time.monotonic()
        since = now - self._reported_at
        if busy and since < REPORT_BUSY_EVERY:
            return
        status = spool.status()
        self._header_pending = status.pending > 0
        signature = (status.pending, status.dropped, status.replayed)
        if signature == self._reported and since < REPORT_EVERY:
            return
        state = SpoolState(
            host=self.host,
            path=str(spool.path),
            pending=status.pending,
            pending_bytes=status.pending_bytes,
            dropped=status.dropped,
            dropped_at=status.dropped_at,
            replayed=status.replayed,
            replayed_at=status.replayed_at,
            worker=self.worker,
        )
        try:
            write_spool_state(capture.dlq.client, capture.options.prefix, state)
        except (redis.RedisError, OSError) as exc:
            log.debug("celery-morgue: could not report the spool's state: %s", exc)
            self._failures = max(self._failures, 1)
            return
        self._reported, self._reported_at = signature, now
        if status.unreported_dropped:
            log.error(
                "celery-morgue: %d spooled entries were dropped while Redis was away "
                "(spool_max_bytes=%d reached; %d dropped in all on this host)",
                status.unreported_dropped,
                spool.max_bytes,
                status.dropped,
            )
            spool.acknowledge_dropped(status.unreported_dropped)


# -- the worker bootstep -------------------------------------------------------------------

_captures: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


class SpoolDrainStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Consumer bootstep: the spool drain runs while the consumer does, in the main process."""

    label = "celery-morgue spool drain"

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        capture = _captures.get(getattr(parent, "app", None))
        self.drain = (
            SpoolDrain(capture, worker=str(getattr(parent, "hostname", "") or ""))
            if capture is not None
            else None
        )

    def start(self, parent: Any) -> None:
        timer = getattr(parent, "timer", None)
        if self.drain is None or timer is None:
            return
        try:
            self.drain.start(timer)
        except Exception:
            log.exception("celery-morgue: could not start the spool drain")

    def stop(self, parent: Any) -> None:
        if self.drain is not None:
            self.drain.stop()

    shutdown = terminate = stop


def register_spool_drain(app: Any, capture: Any) -> None:
    """Drain ``capture``'s spool in the workers of ``app`` (idempotent)."""
    _captures[app] = capture
    app.steps["consumer"].add(SpoolDrainStep)
