"""Fill the DLQ from Celery's ``task_failure`` signal, without ever failing the worker.

``task_failure`` is sent from the pool child for exceptions raised by the task, and from the
worker's main process for lost workers, ``Reject(requeue=False)`` and hard time limits (twice
for those). On two of the main-process paths ``sender.request`` is empty, so the entry is built
from the signal's own arguments plus what ``task_received`` (main process, full request)
recorded about the task.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import traceback as traceback_module
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import redis

from core.dlq import DeadLetterQueue
from core.entry import Entry, build_entry
from core.options import Options
from core.spool import Spool
from core.urls import connect, redact_url

log = logging.getLogger(__name__)

# Requests remembered from task_received; more than a worker ever holds prefetched.
_RECEIVED_LIMIT = 10_000


@dataclass(frozen=True)
class _Received:
    delivery_info: dict[str, Any]
    hostname: str
    retries: int
    root_id: str | None
    parent_id: str | None


class FailureCapture:
    def __init__(self, app: Any, redis_url: str, options: Options) -> None:
        self.app = app
        self.redis_url = redis_url
        self.options = options
        self.spool = Spool(options.spool_dir)
        self._received: OrderedDict[str, _Received] = OrderedDict()
        self._dlq: DeadLetterQueue | None = None
        self._dlq_pid: int | None = None

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
        return self._dlq

    # -- signal receivers ----------------------------------------------------------------

    def on_task_received(self, sender: Any = None, request: Any = None, **_: Any) -> None:
        try:
            if request is None or getattr(request, "app", None) is not self.app:
                return
            self._received[request.id] = _Received(
                delivery_info=dict(request.delivery_info or {}),
                hostname=str(request.hostname or ""),
                retries=int(request.request_dict.get("retries") or 0),
                root_id=request.request_dict.get("root_id"),
                parent_id=request.request_dict.get("parent_id"),
            )
            while len(self._received) > _RECEIVED_LIMIT:
                self._received.popitem(last=False)
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
            entry = self._entry(sender, task_id, exception, args, kwargs, traceback, einfo)
        except Exception:
            log.exception("celery-morgue: could not build a DLQ entry for task %s", task_id)
            return
        self.store(entry)

    # -- building and storing ------------------------------------------------------------

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
        received = self._received.pop(task_id, None)
        request = getattr(task, "request", None)
        if request is not None and getattr(request, "id", None) != task_id:
            request = None  # an empty or unrelated context: trust only the signal and records
        delivery = dict(getattr(request, "delivery_info", None) or {}) or (
            received.delivery_info if received else {}
        )
        hostname = getattr(request, "hostname", None) or (received.hostname if received else "")
        retries = getattr(request, "retries", None)
        if retries is None:
            retries = received.retries if received else 0
        root_id = getattr(request, "root_id", None) or (received.root_id if received else None)
        parent_id = getattr(request, "parent_id", None) or (
            received.parent_id if received else None
        )
        return build_entry(
            task_id=task_id,
            task=task.name,
            queue=self._queue_of(task.name, delivery),
            args=args,
            kwargs=kwargs,
            exception=exception,
            traceback=_traceback_text(traceback, einfo),
            retries=retries,
            hostname=hostname or socket.gethostname(),
            delivery_info=delivery,
            root_id=root_id,
            parent_id=parent_id,
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

    def store(self, entry: Entry) -> None:
        """Write to Redis, else to the local spool; never raises."""
        try:
            self.dlq.add(entry)
        except (redis.RedisError, OSError) as exc:
            self._spool(entry, exc)
            return
        except Exception:
            log.exception("celery-morgue: unexpected error storing task %s", entry.task_id)
            self._spool(entry, None)
            return
        if self.spool.pending():
            self.replay_spool()

    def _spool(self, entry: Entry, error: BaseException | None) -> None:
        try:
            self.spool.append(entry)
            log.warning(
                "celery-morgue: Redis at %s unavailable (%s); failed task %s spooled to %s",
                redact_url(self.redis_url),
                error,
                entry.task_id,
                self.spool.path,
            )
        except Exception:
            log.exception(
                "celery-morgue: LOST failed task %s: Redis unavailable (%s) and spool %s "
                "not writable",
                entry.task_id,
                error,
                self.spool.path,
            )

    def replay_spool(self) -> int:
        """Move spooled entries into Redis; returns how many went (0 if Redis is still away)."""
        try:
            count = self.spool.replay(self._store_unexpired)
        except (redis.RedisError, OSError) as exc:
            log.warning("celery-morgue: spool replay deferred: %s", exc)
            return 0
        if count:
            log.info("celery-morgue: replayed %d spooled entries into Redis", count)
        return count

    def _store_unexpired(self, entries: list[Entry]) -> None:
        """Retention counts from the failure: an entry spooled longer than that is not stored."""
        horizon = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=self.options.retention)
        fresh = [entry for entry in entries if entry.failed_at_datetime > horizon]
        if len(fresh) < len(entries):
            log.info(
                "celery-morgue: %d spooled entries outlived their retention before Redis came back",
                len(entries) - len(fresh),
            )
        self.dlq.add_many(fresh)


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
