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

from core.dlq import DeadLetterQueue
from core.entry import Entry, build_entry, unstorable_entry
from core.options import Options
from core.spool import spool_for
from core.urls import connect, redact_url

log = logging.getLogger(__name__)

# After Redis failed to answer, writes go straight to the spool for this long: during an outage
# the main-process receiver would otherwise stall the worker's event loop on every failure.
CIRCUIT_OPEN_SECONDS = 5.0


class FailureCapture:
    def __init__(self, app: Any, redis_url: str, options: Options) -> None:
        self.app = app
        self.redis_url = redis_url
        self.options = options
        self.spool = spool_for(options.spool_dir, redis_url, options.prefix)
        self._received: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
        self._dlq: DeadLetterQueue | None = None
        self._dlq_pid: int | None = None
        self._redis_down_until = 0.0

    def __repr__(self) -> str:
        return f"<FailureCapture {redact_url(self.redis_url)} prefix={self.options.prefix!r}>"

    # -- the per-process client ----------------------------------------------------------

    @property
    def dlq(self) -> DeadLetterQueue:
        """One client per process, created on first use (after the pool forked)."""
        pid = os.getpid()
        if self._dlq is None or self._dlq_pid != pid:
            client = connect(self.redis_url, self.options.socket_timeout)
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
            entry = self._entry(sender, task_id, exception, args, kwargs, traceback, einfo)
            payload = entry.to_json().encode()  # proves it can be written before it is needed
        except Exception as exc:
            log.exception("celery-morgue: storing task %s without its arguments", task_id)
            entry = unstorable_entry(
                task_id=str(task_id),
                task=str(getattr(sender, "name", "")),
                queue=str(getattr(getattr(self.app, "conf", None), "task_default_queue", "celery")),
                exception=exception,
                problem=exc,
                hostname=socket.gethostname(),
            )
            payload = None
        self.store(entry, payload)

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

    def _entry(
        self,
        task: Any,
        task_id: str,
        exception: BaseException | None,
        args: Any,
        kwargs: Any,
        traceback: Any,
        einfo: Any,
    ) -> Entry:
        context = self._context(task, task_id)
        delivery = dict(getattr(context, "delivery_info", None) or {})
        # Celery's message header is (hard, soft).
        hard, soft = [*(getattr(context, "timelimit", None) or ()), None, None][:2]
        return build_entry(
            task_id=task_id,
            task=task.name,
            queue=self._queue_of(task.name, delivery),
            args=args,
            kwargs=kwargs,
            exception=exception,
            traceback=_traceback_text(traceback, einfo),
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
        )

    def _queue_of(self, task_name: str, delivery: dict[str, Any]) -> str:
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
        if time.monotonic() < self._redis_down_until:
            self._spool(entry, "Redis failed moments ago")
            return
        try:
            self.dlq.add(entry, payload)
        except (redis.RedisError, OSError) as exc:
            self._redis_down_until = time.monotonic() + CIRCUIT_OPEN_SECONDS
            self._spool(entry, exc)
            return
        except Exception as exc:
            log.exception("celery-morgue: unexpected error storing task %s", entry.task_id)
            self._spool(entry, exc)
            return
        if self.spool.pending():
            self.replay_spool()

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

    def replay_spool(self) -> int:
        """Move spooled entries into Redis; returns how many were stored. Never raises.

        Skipped while another process of this host replays: its replay covers ours.
        """
        try:
            count = self.spool.replay(self._store_unexpired)
        except (redis.RedisError, OSError) as exc:
            log.warning("celery-morgue: spool replay deferred: %s", exc)
            return 0
        except Exception:
            log.exception("celery-morgue: spool replay failed; the spool is kept")
            return 0
        if count:
            log.info("celery-morgue: replayed %d spooled entries into Redis", count)
        return count

    def _store_unexpired(self, entries: list[Entry]) -> int:
        """Retention counts from the failure: an entry spooled longer than that is not stored."""
        horizon = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=self.options.retention)
        fresh = [entry for entry in entries if entry.failed_at_datetime > horizon]
        if len(fresh) < len(entries):
            log.info(
                "celery-morgue: %d spooled entries outlived their retention before Redis came back",
                len(entries) - len(fresh),
            )
        self.dlq.add_many(fresh)
        return len(fresh)


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
