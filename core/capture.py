"""Fill the DLQ from Celery's ``task_failure`` signal, without ever failing the worker.

``task_failure`` is sent from the pool child for exceptions raised by the task, and from the
worker's main process for lost workers, ``Reject(requeue=False)`` and hard time limits (twice
for those). On two of the main-process paths ``sender.request`` is empty, so the entry is built
from the signal's own arguments plus the full request that ``task_received`` (main process)
saw; those requests are held weakly, so the record lives exactly as long as Celery's own.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import time
import traceback as traceback_module
import weakref
from typing import Any

import redis
from celery.utils.saferepr import saferepr

from celery_morgue.core.dlq import DeadLetterQueue
from celery_morgue.core.entry import Entry, build_entry, new_failure_id, unstorable_entry
from celery_morgue.core.options import Options
from celery_morgue.core.sentinel import NotReplicated, ReplicationCheck, is_sentinel_url
from celery_morgue.core.spool import spool_for
from celery_morgue.core.urls import connect, redact_url

log = logging.getLogger(__name__)

# After Redis failed to answer, writes go straight to the spool for this long: during an outage
# the main-process receiver would otherwise stall the worker's event loop on every failure. Short,
# so a failure soon after Redis is back goes straight to it; in the main process the spool drain
# (core.spool_drain) probes Redis meanwhile and closes the circuit as soon as it answers.
CIRCUIT_OPEN_SECONDS = 1.0


class FailureCapture:
    def __init__(self, app: Any, redis_url: str, options: Options) -> None:
        self.app = app
        self.redis_url = redis_url
        self.options = options
        self.spool = spool_for(options.spool_dir, redis_url, options.prefix)
        self._received: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
        # One failure id per received request: Celery signals a hard time limit twice for one
        # request (and a terminate may be followed by the lost worker); a later delivery of
        # the same task id is another request, so another failure.
        self._failure_ids: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
        self._dlq: DeadLetterQueue | None = None
        self._dlq_pid: int | None = None
        self._redis_down_until = 0.0
        self.spool.max_bytes = options.spool_max_bytes
        # A Sentinel-managed master may fail over before a write reached its replica.
        self.confirm_replication = is_sentinel_url(redis_url)
        self._replication = ReplicationCheck()

    def __repr__(self) -> str:
        return f"<FailureCapture {redact_url(self.redis_url)} prefix={self.options.prefix!r}>"

    # -- the per-process client ----------------------------------------------------------

    @property
    def dlq(self) -> DeadLetterQueue:
        """One client per process, created on first use (after the pool forked)."""
        pid = os.getpid()
        if self._dlq is None or self._dlq_pid != pid:
            client = connect(
                self.redis_url, self.options.socket_timeout, cluster=self.options.cluster
            )
            self._dlq = DeadLetterQueue(
                client,
                prefix=self.options.prefix,
                retention=self.options.retention,
                max_entries=self.options.max_entries,
            )
            self._dlq_pid = pid
            self._redis_down_until = 0.0
        return self._dlq

    # -- signal receivers ----------------------------------------------------------------

    def on_task_received(self, sender: Any = None, request: Any = None, **_: Any) -> None:
        try:
            if request is not None and getattr(request, "app", None) is self.app:
                self._received[request.id] = request
        except Exception:
            log.exception("celery-morgue: could not record received task")

    def on_task_failure(
        self,
        sender: Any = None,
        task_id: str | None = None,
        exception: BaseException | None = None,
        args: Any = None,
        kwargs: Any = None,
        traceback: Any = None,
        einfo: Any = None,
        **_: Any,
    ) -> None:
        if sender is None or task_id is None or getattr(sender, "app", None) is not self.app:
            return
        try:
            if _will_be_redelivered(sender, exception):
                log.info("celery-morgue: task %s timed out and goes back to its queue", task_id)
                return
            context = self._context(sender, task_id)
            entry = self.entry_from_context(
                sender.name,
                task_id,
                context,
                args=args,
                kwargs=kwargs,
                exception=exception,
                traceback=_traceback_text(traceback, einfo),
            )
            # Proves it can be written, and read back, before it is needed.
            payload = entry.encoded()
        except Exception as exc:
            self.store_unstorable(task_id, getattr(sender, "name", ""), exception, exc)
            return
        self.store(entry, payload)

    def store_unstorable(
        self,
        task_id: Any,
        task: Any,
        exception: BaseException | None,
        problem: BaseException,
        reason: str = "failed",
    ) -> None:
        """The last resort: keep that the task was dropped, without its details."""
        log.exception("celery-morgue: storing task %s without its arguments", task_id)
        try:
            failure_id = self.failure_id(str(task_id))
        except Exception:
            failure_id = None
        entry = unstorable_entry(
            task_id=str(task_id),
            task=str(task),
            queue=str(getattr(getattr(self.app, "conf", None), "task_default_queue", "celery")),
            exception=exception,
            problem=problem,
            hostname=socket.gethostname(),
            reason=reason,
            failure_id=failure_id,
        )
        self.store(entry)

    def failure_id(self, task_id: str) -> str:
        """The id of this failure: shared by every signal Celery sends for one request."""
        received = self._received.get(task_id)
        if received is None:
            return new_failure_id()
        try:
            known = self._failure_ids.get(received)
            if known is None:
                known = self._failure_ids[received] = new_failure_id()
        except TypeError:  # a request that cannot be weakly referenced
            return new_failure_id()
        return known

    # -- building and storing ------------------------------------------------------------

    def _context(self, task: Any, task_id: str) -> Any:
        """The task's request as the worker knew it, or None."""
        request = getattr(task, "request", None)
        if request is not None and getattr(request, "id", None) == task_id:
            return request
        received = self._received.get(task_id)
        if received is None:
            return None
        try:
            return received._context  # the full Context Celery builds for the pool
        except Exception:
            return None

    def entry_from_context(
        self,
        task_name: str,
        task_id: str,
        context: Any,
        *,
        args: Any,
        kwargs: Any,
        exception: BaseException | None,
        traceback: str,
        reason: str = "failed",
        message: str | None = None,
    ) -> Entry:
        """An entry from the task's request context (a Celery ``Context``, or None)."""
        delivery = dict(getattr(context, "delivery_info", None) or {})
        # Celery's message header is (hard, soft).
        hard, soft = [*(getattr(context, "timelimit", None) or ()), None, None][:2]
        argsrepr, kwargsrepr = self.chosen_reprs(context, args, kwargs)
        entry = build_entry(
            task_id=task_id,
            task=task_name,
            queue=self.queue_of(task_name, delivery),
            args=args,
            kwargs=kwargs,
            exception=exception,
            traceback=traceback,
            retries=getattr(context, "retries", None) or 0,
            hostname=getattr(context, "hostname", None) or socket.gethostname(),
            delivery_info=delivery,
            root_id=getattr(context, "root_id", None),
            parent_id=getattr(context, "parent_id", None),
            replay_options={
                "link": getattr(context, "callbacks", None),
                "link_error": getattr(context, "errbacks", None),
                "chain": getattr(context, "chain", None),
                "soft_time_limit": soft,
                "time_limit": hard,
            },
            reason=reason,
            failure_id=self.failure_id(task_id),
            argsrepr=argsrepr,
            kwargsrepr=kwargsrepr,
        )
        if message is not None:
            entry.message = message
        return entry

    def chosen_reprs(self, context: Any, args: Any, kwargs: Any) -> tuple[str | None, str | None]:
        """The caller's argsrepr/kwargsrepr when it chose them (they differ from Celery's own
        repr of the arguments), so the DLQ's readers can keep hiding what it hid."""
        argsrepr = getattr(context, "argsrepr", None)
        kwargsrepr = getattr(context, "kwargsrepr", None)
        if not isinstance(argsrepr, str) and not isinstance(kwargsrepr, str):
            return None, None
        amqp = getattr(self.app, "amqp", None)
        args_size = getattr(amqp, "argsrepr_maxsize", 1024)
        kwargs_size = getattr(amqp, "kwargsrepr_maxsize", 1024)
        levels = getattr(self.app.conf, "task_repr_maxlevels", 3)
        values = list(args or ())
        # A caller's tuple arrives as a list: either spelling is Celery's own repr.
        defaults = {
            saferepr(values, args_size, maxlevels=levels),
            saferepr(tuple(values), args_size, maxlevels=levels),
        }
        hidden_args = isinstance(argsrepr, str) and argsrepr not in defaults
        own_kwargs = saferepr(dict(kwargs or {}), kwargs_size, maxlevels=levels)
        hidden_kwargs = isinstance(kwargsrepr, str) and kwargsrepr != own_kwargs
        if not hidden_args and not hidden_kwargs:
            return None, None
        # Either hidden: show both as the caller wrote them, so nothing leaks beside the repr.
        return (
            argsrepr if isinstance(argsrepr, str) else "",
            kwargsrepr if isinstance(kwargsrepr, str) else "",
        )

    def queue_of(self, task_name: str, delivery: dict[str, Any]) -> str:
        exchange = delivery.get("exchange") or ""
        routing_key = delivery.get("routing_key") or ""
        if routing_key and not exchange:
            return str(routing_key)
        try:
            for name, queue in self.app.amqp.queues.items():
                if queue.exchange.name == exchange and queue.routing_key == routing_key:
                    return str(name)
            route = self.app.amqp.router.route({}, task_name)
            return str(route["queue"].name)
        except Exception:
            return str(routing_key or self.app.conf.task_default_queue)

    def store(self, entry: Entry, payload: bytes | None = None) -> None:
        """Write to Redis, else to the local spool; never raises."""
        if self.circuit_open():
            self._spool(entry, "Redis failed moments ago")
            return
        try:
            try:
                acknowledged = self._add(entry, payload)
            except redis.ConnectionError as exc:
                if "connecting to" in str(exc):
                    raise  # Redis refused (or could not be reached): it is away
                # A connection Redis closed (it restarted since this process last wrote) fails
                # at once, without waiting: a fresh one, once. The write is idempotent.
                acknowledged = self._add(entry, payload)
            if self.confirm_replication and not self._replicated(acknowledged):
                # Kept for replay as well: the replay writes it to whichever master holds the
                # DLQ then, and the DLQ's seen ids make a second copy a no-op.
                self._spool(entry, "no replica has it yet")
                return
        except (redis.RedisError, OSError) as exc:
            from celery_morgue.core.spool_drain import redis_away

            if redis_away(exc):
                self._redis_down_until = time.monotonic() + CIRCUIT_OPEN_SECONDS
                self._spool(entry, exc)
                return
            # Refused for good (WRONGTYPE: dlq:<queue> is someone else's key...): Redis is
            # here, so the circuit stays closed, and a retry from the spool would only block
            # what follows it there. Kept in the side file with the error.
            try:
                self.spool.set_aside_refused([(entry, exc)])
            except Exception:
                self._spool(entry, exc)  # then the replay sets it aside
            return
        except Exception as exc:
            log.exception("celery-morgue: unexpected error storing task %s", entry.task_id)
            self._spool(entry, exc)
            return
        if self.spool.pending():
            self.replay_spool()  # one bounded batch; the worker's spool drain does the rest

    def _add(self, entry: Entry, payload: bytes | None) -> int | None:
        """Store ``entry``; on a Sentinel master, how many replicas acknowledged it (None: not
        asked, see ``ReplicationCheck.wait_for``)."""
        wait_ms = self._replication.wait_for() if self.confirm_replication else None
        if wait_ms is None:
            self.dlq.add(entry, payload)
            return None
        return self.dlq.add_many_acknowledged([entry], wait_ms=wait_ms)[1]

    def _replicated(self, acknowledged: int | None) -> bool:
        try:
            return self._replication.verdict(self.dlq.client, acknowledged)
        except (redis.RedisError, OSError):
            return False

    def circuit_open(self) -> bool:
        """True for a moment after a write failed: writes then go straight to the spool."""
        return time.monotonic() < self._redis_down_until

    def close_circuit(self) -> None:
        """Redis answered (the spool drain's probe): write to it again at once."""
        self._redis_down_until = 0.0

    def hold_circuit(self, seconds: float) -> None:
        """Redis did not answer the spool drain's probe: spool directly until its next one."""
        self._redis_down_until = max(self._redis_down_until, time.monotonic() + seconds)

    def _spool(self, entry: Entry, reason: object) -> None:
        try:
            self.spool.append(entry)
            log.warning(
                "celery-morgue: could not write failed task %s to Redis at %s (%s); spooled to %s",
                entry.task_id,
                redact_url(self.redis_url),
                reason,
                self.spool.path,
            )
        except Exception:
            log.exception(
                "celery-morgue: LOST failed task %s: Redis write failed (%s) and spool %s "
                "not writable",
                entry.task_id,
                reason,
                self.spool.path,
            )

    def replay_spool(self, *, raise_errors: bool = False) -> int:
        """Move the oldest spooled entries into Redis, a bounded tick (about 15 ms); returns
        how many were stored. Never raises, unless ``raise_errors`` (then Redis-away and file
        errors propagate, for the spool drain's backoff). Entries Redis refuses for good are
        set aside (``_store_unexpired``), never retried.

        Skipped while another process of this host replays: its replay covers ours.
        """
        try:
            count = self.spool.replay(self._store_unexpired)
        except (redis.RedisError, OSError) as exc:
            if raise_errors:
                raise
            log.warning("celery-morgue: spool replay deferred: %s", exc)
            return 0
        except Exception:
            if raise_errors:
                raise
            log.exception("celery-morgue: spool replay failed; the spool is kept")
            return 0
        if count:
            log.info("celery-morgue: replayed %d spooled entries into Redis", count)
        return count

    def _store_unexpired(self, entries: list[Entry]) -> int:
        """Retention counts from the failure: an entry spooled longer than that is not stored.

        Raises if Redis is away (the batch then waits); entries it refused for good go to the
        spool's side file with their error, so they never hold up the rest.
        """
        horizon = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=self.options.retention)
        fresh = [entry for entry in entries if entry.failed_at_datetime > horizon]
        if len(fresh) < len(entries):
            log.info(
                "celery-morgue: %d spooled entries outlived their retention before Redis came back",
                len(entries) - len(fresh),
            )
        from celery_morgue.core.spool_drain import redis_away

        wait_ms = self._replication.wait_for() if self.confirm_replication else None
        replies, acknowledged = self.dlq.add_many_acknowledged(
            fresh, raise_on_error=False, wait_ms=wait_ms
        )
        refused: list[tuple[Entry, BaseException]] = []
        for entry, reply in zip(fresh, replies, strict=True):
            if isinstance(reply, redis.ResponseError):
                if redis_away(reply):
                    raise reply  # Redis cannot write now: the batch waits (stored ones dedupe)
                refused.append((entry, reply))
        # Refused for good: set aside (logged once) and moved past, so nothing waits on them.
        self.spool.set_aside_refused(refused)
        if (
            self.confirm_replication
            and fresh
            and not self._replicated(acknowledged if wait_ms is not None else None)
        ):
            # Not yet durable across a failover: the batch stays spooled (replays dedupe).
            raise NotReplicated("the spooled entries are on the master but on no replica yet")
        return len(fresh) - len(refused)


def _will_be_redelivered(task: Any, exception: BaseException | None) -> bool:
    """A hard time limit on an ``acks_late`` task that does not ack on timeout: Celery sends
    ``task_failure`` and then puts the message back, so the task is not dead."""
    if type(exception).__name__ != "TimeLimitExceeded":
        return False
    if not getattr(task, "acks_late", False):
        return False
    acks_on_timeout = getattr(task, "acks_on_timeout", None)
    if acks_on_timeout is None:
        acks_on_timeout = getattr(task, "acks_on_failure_or_timeout", True)
    return not acks_on_timeout


def _traceback_text(traceback: Any, einfo: Any) -> str:
    text = getattr(einfo, "traceback", None)
    if isinstance(text, str) and text:
        return text
    if isinstance(traceback, str):
        return traceback
    if traceback is not None:
        try:
            return "".join(traceback_module.format_tb(traceback))
        except Exception:
            return ""
    return ""
