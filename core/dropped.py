"""Tasks the worker drops without ``task_failure``: each gets a DLQ entry with its reason.

Read against Celery 5.7's ``worker/request.py`` and ``worker/consumer/consumer.py``:

- ``revoke(terminate=True)`` (the reaper, the UI, anyone's): the request is terminated and its
  message acked; only ``task_revoked`` fires (``terminated=True``) -> reason ``terminated``.
- An expired task (``expires`` passed): ``task_revoked`` with ``expired=True``; stored as
  ``expired`` only with ``capture_expired=True``, never for celery-morgue's own cleanup task.
- A task name the worker does not know (deploy skew): the message is rejected, which drops it
  on Redis; ``task_unknown`` fires -> ``unregistered``. Requeue sends the same name again.
- An invalid message, a content type the worker does not accept (pickle to a json-only worker)
  or an unknown format: rejected; ``task_rejected`` fires -> ``rejected``. The message is kept
  as it came (body bytes, content type, headers), so a requeue sends it unchanged.
- A body that fails to decode: logged and acked with no signal at all. :class:`DroppedMessagesStep`,
  a consumer bootstep, wraps the consumer's ``on_decode_error`` -> ``rejected``.

A revoke of a task that had not started (not terminated, not expired) is the caller's choice,
not a loss: it is not stored.
"""

from __future__ import annotations

import logging
import socket
from types import SimpleNamespace
from typing import Any

from celery import bootsteps
from celery.worker.state import active_requests, successful_requests

from celery_morgue.core.capture import FailureCapture
from celery_morgue.core.entry import ARGS_LIMIT, build_entry, group_of
from celery_morgue.core.requeue import raw_message_option
from celery_morgue.core.zombies import CLEANUP_TASK

log = logging.getLogger(__name__)


class DroppedMessages:
    """The receivers for one installed app; every one swallows its own errors."""

    def __init__(self, capture: FailureCapture, capture_expired: bool) -> None:
        self.capture = capture
        self.capture_expired = capture_expired

    @property
    def app(self) -> Any:
        return self.capture.app

    def on_task_revoked(
        self,
        sender: Any = None,
        request: Any = None,
        terminated: bool = False,
        signum: Any = None,
        expired: bool = False,
        **_: Any,
    ) -> None:
        if sender is None or getattr(sender, "app", None) is not self.app or request is None:
            return
        if terminated:
            reason, message = "terminated", f"terminated by a revoke (signal {signum})"
        elif expired and self.capture_expired and sender.name != CLEANUP_TASK:
            reason, message = "expired", f"expired before it ran (expires {request.expires})"
        else:
            return
        self._store_context(
            sender.name,
            str(getattr(request, "id", "") or ""),
            request,
            reason=reason,
            exception="Terminated" if terminated else "Expired",
            message=message,
        )

    def on_task_unknown(
        self,
        sender: Any = None,
        message: Any = None,
        exc: BaseException | None = None,
        name: Any = None,
        id: Any = None,
        **_: Any,
    ) -> None:
        if getattr(sender, "app", None) is not self.app:
            return
        self._store_message(
            message,
            reason="unregistered",
            exception="NotRegistered",
            text=f"task {name!r} is not registered on {socket.gethostname()}",
            task_name=name,
            task_id=id,
        )

    def on_task_rejected(
        self, sender: Any = None, message: Any = None, exc: BaseException | None = None, **_: Any
    ) -> None:
        if getattr(sender, "app", None) is not self.app:
            return
        if exc is None:
            exception, text = "UnknownMessage", "a message in a format the worker does not know"
        else:
            exception, text = type(exc).__name__, str(exc)
        self._store_message(message, reason="rejected", exception=exception, text=text)

    def on_decode_error(self, message: Any, exc: BaseException) -> None:
        if self._is_control(message):
            return  # a broadcast to the workers, not a task (the pidbox shares this handler)
        self._store_message(
            message, reason="rejected", exception=type(exc).__name__, text=f"undecodable: {exc}"
        )

    def _is_control(self, message: Any) -> bool:
        exchange = (getattr(message, "delivery_info", None) or {}).get("exchange") or ""
        try:
            mailbox = self.app.control.mailbox
            control = {mailbox.exchange.name, mailbox.reply_exchange.name}
        except Exception:
            control = {"celery.pidbox", "reply.celery.pidbox"}
        return str(exchange) in control

    def on_cold_shutdown(self, requests: Any) -> None:
        """A cold shutdown cancels running tasks; those already acked are never sent again."""
        for request in requests:
            try:
                if getattr(request.task, "acks_late", False) and not request.acknowledged:
                    continue  # unacked: the broker delivers it again
                if request.id in successful_requests:
                    continue
                self._store_context(
                    str(getattr(request, "name", "") or getattr(request.task, "name", "")),
                    str(request.id),
                    getattr(request, "_context", None) or request,
                    reason="terminated",
                    exception="WorkerShutdown",
                    message="cancelled by the worker's cold shutdown; it was acked when it "
                    "started, so Celery does not send it again",
                )
            except Exception:
                log.exception("celery-morgue: could not keep a task cancelled at shutdown")

    def _store_context(
        self,
        task_name: str,
        task_id: str,
        context: Any,
        *,
        reason: str,
        exception: str,
        message: str,
    ) -> None:
        """An entry for a request that never finished (its Celery ``Context``); never raises."""
        try:
            entry = self.capture.entry_from_context(
                task_name,
                task_id,
                context,
                args=getattr(context, "args", None),
                kwargs=getattr(context, "kwargs", None),
                exception=None,
                traceback="",
                reason=reason,
                message=message,
            )
            entry.exception = exception
            entry.group = group_of(entry)  # the group names the exception set just now
            payload = entry.encoded()
        except Exception as problem:
            self.capture.store_unstorable(task_id, task_name, None, problem, reason)
            return
        self.capture.store(entry, payload)

    def _store_message(
        self,
        message: Any,
        *,
        reason: str,
        exception: str,
        text: str,
        task_name: Any = None,
        task_id: Any = None,
    ) -> None:
        """An entry for a message the worker never ran; never raises."""
        headers = _headers(message)
        task_id = str(task_id or headers.get("id") or "") or f"unknown-{id(message):x}"
        task_name = str(task_name or headers.get("task") or "")
        try:
            args, kwargs, decoded = _arguments(message)
            delivery = dict(getattr(message, "delivery_info", None) or {})
            reprs = SimpleNamespace(
                argsrepr=headers.get("argsrepr"), kwargsrepr=headers.get("kwargsrepr")
            )
            argsrepr, kwargsrepr = self.capture.chosen_reprs(reprs, args, kwargs)
            entry = build_entry(
                task_id=task_id,
                task=task_name,
                queue=self.capture.queue_of(task_name, delivery),
                args=args,
                kwargs=kwargs,
                exception=None,
                traceback="",
                retries=int(headers.get("retries") or 0),
                hostname=socket.gethostname(),
                delivery_info=delivery,
                root_id=_optional_text(headers.get("root_id")),
                parent_id=_optional_text(headers.get("parent_id")),
                replay_options=_message_options(headers),
                reason=reason,
                argsrepr=argsrepr,
                kwargsrepr=kwargsrepr,
            )
            entry.exception = exception
            entry.group = group_of(entry)  # the group names the exception set just now
            entry.message = text[:4096]
            if not decoded:
                # The worker could not read it: keep it as it came, so a requeue sends it as is.
                raw = raw_message_option(message, ARGS_LIMIT)
                if raw is None:
                    entry.lossy, entry.lossy_fields = True, ["message"]
                else:
                    entry.options["raw_message"] = raw
            payload = entry.encoded()
        except Exception as problem:
            self.capture.store_unstorable(task_id, task_name, None, problem, reason)
            return
        self.capture.store(entry, payload)


def _headers(message: Any) -> dict[str, Any]:
    headers = getattr(message, "headers", None)
    return headers if isinstance(headers, dict) else {}


def _optional_text(value: Any) -> str | None:
    return str(value) if value else None


def _arguments(message: Any) -> tuple[Any, Any, bool]:
    """``(args, kwargs, decoded)`` from a protocol 2 (or 1) body the worker may accept."""
    try:
        body = message.decode()
    except Exception:
        return [], {}, False
    if isinstance(body, list | tuple) and len(body) >= 2:  # protocol 2: [args, kwargs, embed]
        return body[0], body[1], True
    if isinstance(body, dict):  # protocol 1
        return body.get("args") or [], body.get("kwargs") or {}, True
    return [], {}, False


def _message_options(headers: dict[str, Any]) -> dict[str, Any]:
    hard, soft = [*(headers.get("timelimit") or ()), None, None][:2]
    return {"time_limit": hard, "soft_time_limit": soft}


class DroppedMessagesStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Wraps two consumer methods that drop tasks with no signal at all.

    - ``on_decode_error``: an undecodable body is logged and acked. Wrapped before the task
      consumer is created, so both the consumer's own handler and the one kombu is given see
      the wrapper; broadcasts to the workers (the pidbox copies it) are left alone.
    - ``cancel_active_requests``: a cold shutdown (SIGQUIT, a second Ctrl-C, the end of
      ``worker_soft_shutdown_timeout``) cancels running tasks; the acked ones are gone.
    """

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        from celery_morgue.core.install import installation_of  # install imports this module

        installation = installation_of(parent.app)
        original = parent.on_decode_error
        if installation is None or getattr(original, "_morgue_wrapped", False):
            return
        dropped = installation.dropped

        def on_decode_error(message: Any, exc: BaseException) -> None:
            try:
                dropped.on_decode_error(message, exc)
            except Exception:
                log.exception("celery-morgue: could not store an undecodable message")
            original(message, exc)

        on_decode_error._morgue_wrapped = True  # type: ignore[attr-defined]
        parent.on_decode_error = on_decode_error
        cancel = getattr(parent, "cancel_active_requests", None)
        if cancel is None:
            return

        def cancel_active_requests() -> Any:
            try:
                dropped.on_cold_shutdown(tuple(active_requests))
            except Exception:
                log.exception("celery-morgue: could not keep the tasks a shutdown cancels")
            return cancel()

        parent.cancel_active_requests = cancel_active_requests
