"""Requeue many entries at once, paced and stoppable: ``dlq requeue --all``, the UI's requeue of a
queue or a group.

Oldest first, only entries that existed when it started (those up to ``up_to``) and still exist
when their turn comes. Entries are read a batch at a time (memory holds one batch), and each
message costs its publish and one script call (core.redrive_scripts.TURN) that removes the
previous, published, entry and claims this one. So the promises of
:meth:`DeadLetterQueue.requeue` hold: two operators requeueing one entry publish it once, an
entry deleted before its turn is not sent, and a run killed between a publish and the removal
leaves the entry marked "published" (a later requeue reports it as already requeued and does
not send it again): right after each publish returns, the marker's update (CONFIRM) is sent on
the run's connection without waiting, its reply read with the next claim's. Only a run killed
while a publish is in flight leaves a "claimed" marker, which a requeue past the claim window
sends again (reported as ``retried``): nobody can know whether the broker got that one.

The last published entry of a batch leaves before the next batch is read (under a text filter
that read can scan much of the queue), and a paced run's entry before its wait: a published
entry is never left in the DLQ while the run does something slow.

Claims are taken at an entry's turn, not a batch ahead: a batch claimed at once would be sent
even if another operator deleted part of it meanwhile, and under ``rate`` the last of a batch
would wait longer than the claim window, when another requeue may take a claim over.

``rate`` spreads the publishes evenly: message ``i`` goes at ``start + i / rate``, never a
second's quota at once; one that fell behind (a slow broker) starts the schedule again from now
instead of catching up in a burst. Paced, each entry is removed right after its publish (there is
time). ``stop`` is looked at between publishes: what was published leaves the DLQ, the rest
stays, and running again continues with it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import redis
from redis.commands.core import Script
from redis.exceptions import AskError, MovedError, NoScriptError, TryAgainError

from celery_morgue.core.dlq import (
    _CLAIM_SECONDS,
    _INVALID_ENTRY,
    DeadLetterQueue,
    RequeueReport,
    StoredEntry,
    _marker_task,
    _text,
)
from celery_morgue.core.dlq_scripts import CONFIRM
from celery_morgue.core.entry import Entry, UnreadableEntry
from celery_morgue.core.errors import InvalidEntryError, UnroutableEntry
from celery_morgue.core.filters import EntryFilter
from celery_morgue.core.redis_cluster import node_client_for
from celery_morgue.core.redrive_scripts import LEAVE, TURN
from celery_morgue.core.requeue import Route, publish, resolve_route

log = logging.getLogger(__name__)

# How often on_progress is called at most (and once at the end).
PROGRESS_INTERVAL = 0.1
DEFAULT_BATCH = 100
MAX_BATCH = 1000


@dataclass(frozen=True)
class RedriveProgress:
    sent: int
    total: int  # what plan() counted when the run started
    elapsed: float  # seconds

    @property
    def rate(self) -> float:
        """Messages a second so far."""
        return self.sent / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds until the rest is sent at the rate so far; None before there is a rate."""
        if self.rate <= 0:
            return None
        return max(0, self.total - self.sent) / self.rate


@dataclass(eq=False)  # compared by identity: an Entry's equality compares every field
class _Claim:
    entry: Entry
    route: Route
    new_id: str
    marker: str = ""  # ours, "claimed"

    @property
    def published_marker(self) -> str:
        """What CONFIRM makes of our marker once the publish returned (as DeadLetterQueue does)."""
        return self.marker.replace('"phase":"claimed"', '"phase":"published"')


class _Pacer:
    """When each publish may go: ``start + i / rate``, restarted from now after falling behind."""

    def __init__(self, rate: float | None, stop: threading.Event) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.stop = stop
        self.next_at: float | None = None

    def wait(self) -> bool:
        """Wait for the next slot; False when ``stop`` was set meanwhile."""
        if not self.interval:
            return not self.stop.is_set()
        now = time.monotonic()
        if self.next_at is not None and now < self.next_at:
            if self.stop.wait(self.next_at - now):
                return False
            now = time.monotonic()
        if self.next_at is None or now - self.next_at >= self.interval:
            self.next_at = now  # first message, or behind by a slot or more: no catching up
        self.next_at += self.interval
        return not self.stop.is_set()


class Redrive:
    """One paced requeue of the entries of ``queue`` matching ``flt`` (see the module's text)."""

    def __init__(
        self,
        dlq: DeadLetterQueue,
        app: Any,
        queue: str,
        flt: EntryFilter | None = None,
        *,
        up_to: str | None = None,
        rate: float | None = None,
        batch: int = DEFAULT_BATCH,
        allow_lossy: bool = False,
        stop: threading.Event | None = None,
        on_progress: Callable[[RedriveProgress], None] | None = None,
        keep_ids: bool = True,
    ) -> None:
        """``keep_ids``: list each sent entry in ``report.requeued`` (its new task id), about
        200 bytes an entry; without, only ``report.sent`` counts them and memory stays flat."""
        if rate is not None and not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"rate must be a positive number of messages a second, got {rate!r}")
        if not 1 <= batch <= MAX_BATCH:
            raise ValueError(f"batch must be 1 to {MAX_BATCH}, got {batch!r}")
        self.dlq = dlq
        self.app = app
        self.queue = queue
        self.flt = flt or EntryFilter()
        self.rate = rate
        self.batch = batch
        self.allow_lossy = allow_lossy
        self.stop = stop or threading.Event()
        self.on_progress = on_progress
        self.keep_ids = keep_ids
        self._up_to = up_to
        self._up_to_known = up_to is not None
        client = dlq.client
        self._turn = client.register_script(TURN)
        self._confirm = client.register_script(CONFIRM)
        self._leave = client.register_script(LEAVE)
        self._held = _HeldConnection(client, self._turn, self._confirm, self._leave)
        # What every TURN call passes, built once: a call a message is the hot path.
        self._queue_keys = dlq._queue_keys(queue)
        self._marker_prefix = dlq._marker_key(queue, "")
        self._turn_args: list[str | int] = [
            queue,
            dlq.group_key_prefix(queue),
            dlq.retention * 1000,
            int(_CLAIM_SECONDS * 1000),
        ]
        self._token = uuid.uuid4().hex
        self._unfinished: _Claim | None = None  # published, still to leave the DLQ
        self._planned: int | None = None  # plan()'s count, for run()'s progress

    @property
    def up_to(self) -> str | None:
        """The newest entry this run may touch: as given, else the newest when first asked."""
        if not self._up_to_known:
            self.dlq.size(self.queue)  # what retention removed is not the user's to send
            self._up_to = self.dlq.newest_id(self.queue)
            self._up_to_known = True
        return self._up_to

    def plan(self) -> int:
        """How many entries a run would send now (at most: some may be skipped or taken)."""
        up_to = self.up_to
        self._planned = 0 if up_to is None else self._count(up_to)
        return self._planned

    def run(self) -> RequeueReport:
        report = RequeueReport()
        up_to = self.up_to
        if up_to is None:
            return report
        # A count under a text filter scans the queue: plan()'s, if it was asked, serves.
        total = self._count(up_to) if self._planned is None else self._planned
        progress = _ProgressTicker(self.on_progress, total, time.monotonic())
        pacer = _Pacer(self.rate, self.stop)
        try:
            with self.app.producer_or_acquire() as producer:
                for chunk in self._chunks(up_to):
                    if not self._redrive_chunk(chunk, producer, pacer, report, progress):
                        break
        except Exception as exc:  # the broker, most likely; what was done is in the report
            report.error = f"{type(exc).__name__}: {exc}"
        finally:
            try:
                self._finish_unfinished()
            except Exception as exc:  # Redis went away: the entry stays, marked as sent
                report.error = report.error or f"{type(exc).__name__}: {exc}"
            self._held.close()
            progress.tick(report.sent, final=True)
        report.stopped = self.stop.is_set() and report.error is None
        if _left_nothing(report):
            # Every matching entry up to up_to was read, and each left the DLQ (sent, or gone
            # meanwhile): nothing is left to count, and a count could scan the whole queue.
            report.remaining = 0
        else:
            with contextlib.suppress(redis.RedisError):  # with the DLQ's Redis gone, nobody knows
                report.remaining = self._count(up_to)
        return report

    # -- one chunk ---------------------------------------------------------------------------

    def _redrive_chunk(
        self,
        entries: list[StoredEntry],
        producer: Any,
        pacer: _Pacer,
        report: RequeueReport,
        progress: _ProgressTicker,
    ) -> bool:
        """Send the chunk's entries, each at its turn; False when ``stop`` was set.

        Each entry's claim is sent to Redis as its publish starts and its reply read when the
        message, built, is about to go to the broker (``_GatedProducer``): the round trip
        overlaps the building of the message instead of adding to it. Either way the claim is
        taken after the previous publish returned and before this one is sent.
        """
        gated = _GatedProducer(producer)
        for claim in self._sendable(entries, report):
            if not pacer.wait():
                return False
            self._send_claim(claim)
            gated.gate = functools.partial(self._claimed, claim, report)
            failure: BaseException | None = None
            try:
                publish(self.app, claim.entry, claim.route, claim.new_id, gated)
            except _NotClaimed:
                continue  # gone, or someone else's: reported, nothing sent
            except BaseException as exc:
                failure = exc
            if gated.gate is not None and not gated.open() and failure is None:
                continue  # it ended before reaching the broker, and the entry was not ours
            if failure is not None:
                if claim.marker:
                    self._release(claim)
                if isinstance(failure, InvalidEntryError):
                    report.invalid[claim.entry.id] = str(failure)
                    continue
                if isinstance(failure, _INVALID_ENTRY):  # its stored options, not the broker
                    report.invalid[claim.entry.id] = f"{type(failure).__name__}: {failure}"
                    continue
                raise failure
            self._unfinished = claim  # kept, if the next call fails, for the run's end to remove
            report.sent += 1
            if self.keep_ids:
                report.requeued[claim.entry.id] = claim.new_id
            self._send_confirm(claim)
            if self.rate is not None:
                self._finish_unfinished()  # before the wait for the next slot
            progress.tick(report.sent)
        self._finish_unfinished()  # before the next batch is read, which may take long
        return not self.stop.is_set()

    def _sendable(self, entries: list[StoredEntry], report: RequeueReport) -> list[_Claim]:
        sendable = []
        for entry in entries:
            if isinstance(entry, UnreadableEntry):
                report.skipped_unreadable.append(entry.id)
                continue
            if not entry.requeue_exact and not self.allow_lossy:
                report.skipped_lossy.append(entry.id)
                continue
            try:
                route = resolve_route(self.app, entry)
            except UnroutableEntry as exc:
                report.unroutable[entry.id] = str(exc)
                continue
            sendable.append(_Claim(entry, route, str(uuid.uuid4())))
        return sendable

    def _send_claim(self, claim: _Claim) -> None:
        """Send the claim of the entry (the previous one leaves in the same call); its reply
        is read by :meth:`_claimed`. The previous entry stays unfinished until then: if the
        call is lost, the run's end removes it."""
        entry_id = claim.entry.id
        keys = [*self._queue_keys, self._marker_prefix + entry_id]
        args = [*self._turn_args, entry_id, claim.new_id, self._token]
        previous = self._unfinished
        if previous is not None:
            keys.append(self._marker_prefix + previous.entry.id)
            args += [previous.entry.id, previous.marker, previous.published_marker]
        self._held.send(self._turn, keys, args)

    def _send_confirm(self, claim: _Claim) -> None:
        """The marker says "published" as soon as Redis reads this: a run killed from here on
        leaves an entry the next run reports as already requeued, never sends again. The reply
        is read with the next call's."""
        keys = [self._marker_prefix + claim.entry.id]
        self._held.send(self._confirm, keys, [claim.marker, claim.published_marker])

    def _claimed(self, claim: _Claim, report: RequeueReport) -> bool:
        """Whether the claim sent for ``claim`` was granted; when not, why is reported."""
        reply = self._held.receive_all()
        self._unfinished = None  # it left in the same call
        verdict, entry_id = _text(reply[0]), claim.entry.id
        if verdict in ("ok", "reclaimed"):
            claim.marker = _text(reply[1])
            if verdict == "reclaimed":
                earlier = _marker_task(_text(reply[2]))
                report.retried[entry_id] = earlier
                log.warning(
                    "celery-morgue: entry %s: an earlier requeue stopped before confirming it "
                    "sent task %s; sending it again as %s",
                    entry_id,
                    earlier,
                    claim.new_id,
                )
            return True
        if verdict == "held":
            if int(_text(reply[2])) / 1000 < _CLAIM_SECONDS:
                report.skipped_busy.append(entry_id)
            else:
                report.already_requeued[entry_id] = _marker_task(_text(reply[1]))
        return False  # "gone": deleted or cleared since it was read

    def _release(self, claim: _Claim) -> None:
        """Undo the claim of an entry whose publish failed (else it is busy for a minute)."""
        with contextlib.suppress(redis.RedisError):
            marker_key = self.dlq._marker_key(self.queue, claim.entry.id)
            self.dlq._release_script(keys=[marker_key], args=[claim.marker])

    def _finish_unfinished(self) -> None:
        """The published entry leaves the DLQ now rather than with the next claim: one round
        trip, which also reads its CONFIRM's reply."""
        claim = self._unfinished
        if claim is None:
            return
        keys = [*self._queue_keys, self._marker_prefix + claim.entry.id]
        args = [
            self.queue,
            self.dlq.group_key_prefix(self.queue),
            claim.entry.id,
            claim.marker,
            claim.published_marker,
        ]
        self._held.send(self._leave, keys, args)
        self._held.receive_all()
        self._unfinished = None

    # -- which entries -----------------------------------------------------------------------

    def _chunks(self, up_to: str) -> Iterator[list[StoredEntry]]:
        """The matching entries up to ``up_to``, oldest first, at most a batch at a time."""
        return self.dlq.iter_matching(self.queue, self.flt, up_to=up_to, chunk=self.batch)

    def _count(self, up_to: str) -> int:
        return self.dlq.count_matching(self.queue, self.flt, up_to=up_to)


class _HeldConnection:
    """Script calls on a connection held for the run: each is sent, and the replies read later
    in order (redis-py's calls wait for their reply, and their per-call work would cost as much
    as the script)."""

    def __init__(self, client: Any, *scripts: Script) -> None:
        self.client = client
        self.scripts = scripts
        self.connection: Any = None
        self.pool: Any = None
        self.pending: deque[tuple[Script, list[str], list[Any]]] = deque()

    def send(self, script: Script, keys: list[str], args: list[Any]) -> None:
        if self.connection is None:
            # On a cluster: the node that owns the namespace's slot (every key has its tag).
            node = node_client_for(self.client, keys[0])
            for each in self.scripts:
                each.sha = node.script_load(each.script)
            self.pool = node.connection_pool
            self.connection = _own_connection(self.pool)
        try:
            # redis-py's health check sends a PING and reads its reply before this command: with
            # replies of ours still unread it would read one of those instead, fail, and (with
            # retries) reconnect under them. It checks only when nothing of ours is pending.
            self.connection.send_command(
                "EVALSHA", script.sha, len(keys), *keys, *args, check_health=not self.pending
            )
        except BaseException:
            self._drop()
            raise
        self.pending.append((script, keys, args))

    def receive_all(self) -> Any:
        """Read every reply still due, oldest first; the last one's."""
        reply = None
        moved = False
        while self.pending:
            script, keys, args = self.pending.popleft()
            try:
                reply = self.connection.read_response()
            except NoScriptError:  # the script cache was flushed meanwhile: this one did not run
                reply = script(keys=keys, args=args)
            except (MovedError, AskError, TryAgainError):
                # The slot moved (or is moving) to another node: this call did not run. The
                # cluster client follows the move; the next send holds the new owner's.
                moved = True
                reply = script(keys=keys, args=args)
            except BaseException:
                self._drop()
                raise
        if moved:
            self.close()
        return reply

    def close(self) -> None:
        if self.pending:
            self._drop()  # replies left unread: the connection is of no use to anyone
        if self.connection is not None:
            self.pool.release(self.connection)
            self.connection = None

    def _drop(self) -> None:
        self.pending.clear()
        if self.connection is not None:
            self.connection.disconnect()


def _own_connection(pool: Any) -> Any:
    try:
        return pool.get_connection()
    except TypeError:  # redis-py before 5.3 wants a command name
        return pool.get_connection("EVALSHA")


def _left_nothing(report: RequeueReport) -> bool:
    """Whether a run read every entry it was about and left none of them in the DLQ."""
    left = (
        report.skipped_lossy,
        report.skipped_busy,
        report.skipped_unreadable,
        report.already_requeued,
        report.unroutable,
        report.invalid,
    )
    return not report.stopped and report.error is None and not any(left)


class _NotClaimed(Exception):
    """Raised from the gate: the entry is gone or someone else's, so nothing is published."""


class _GatedProducer:
    """The run's producer, with a gate its next publish must pass: the entry's claim.

    The gate is read once; a publish retried after it (a retry policy around this producer)
    gets the same answer, and a gate that raised, or none ever set, answers no.
    """

    def __init__(self, producer: Any) -> None:
        self._producer = producer
        self.gate: Callable[[], bool] | None = None
        self._passed = False

    def open(self) -> bool:
        """Pass the gate: the claim's answer, read now or the last one read."""
        gate, self.gate = self.gate, None
        if gate is not None:
            self._passed = False
            self._passed = gate()
        return self._passed

    def publish(self, *args: Any, **kwargs: Any) -> Any:
        if not self.open():
            raise _NotClaimed
        return self._producer.publish(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._producer, name)


class _ProgressTicker:
    def __init__(
        self, callback: Callable[[RedriveProgress], None] | None, total: int, started: float
    ) -> None:
        self.callback = callback
        self.total = total
        self.started = started
        self.last = 0.0

    def tick(self, sent: int, *, final: bool = False) -> None:
        if self.callback is None:
            return
        now = time.monotonic()
        if final or now - self.last >= PROGRESS_INTERVAL:
            self.last = now
            self.callback(RedriveProgress(sent=sent, total=self.total, elapsed=now - self.started))
