"""Where a requeued entry is published, and the publish itself.

A requeue must reach the queue the task was dropped from, or refuse. Publishing to an exchange
this process never declared routes nowhere on a Redis broker (kombu treats an unknown exchange
as direct, so a topic binding never matches) and the task would be lost with its entry deleted.
So: the app's own declaration of the queue when it has one; the queue by name when the message
came through the default exchange (or Celery's automatic direct exchange of the same name);
otherwise :class:`UnroutableEntry`, and the entry stays.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from celery_morgue.core.entry import Entry
from celery_morgue.core.errors import InvalidEntryError, UnroutableEntry

REQUEUED_FROM_HEADER = "morgue_requeued_from"
# The options of a stored entry that the requeue passes on unchanged.
_CARRIED = ("link", "link_error", "chain", "time_limit", "soft_time_limit")


@dataclass(frozen=True)
class Route:
    queue: Any  # a queue name, or the app's kombu Queue declaration
    routing_key: str | None = None

    @property
    def name(self) -> str:
        return str(getattr(self.queue, "name", self.queue))


def resolve_route(app: Any, entry: Entry) -> Route:
    """Where to publish ``entry``; :class:`UnroutableEntry` when this app cannot tell."""
    exchange = entry.exchange or ""
    routing_key = entry.routing_key or ""
    # dict.get: Celery's Queues creates a missing queue on item access.
    declared = dict.get(app.amqp.queues, entry.queue)
    if declared is not None and (not exchange or declared.exchange.name == exchange):
        return Route(declared, routing_key or declared.routing_key or None)
    if not exchange or (exchange == entry.queue and routing_key in ("", entry.queue)):
        return Route(entry.queue)
    raise UnroutableEntry(
        f"entry {entry.id or entry.task_id} came through exchange {exchange!r} (routing key "
        f"{routing_key!r}) and this app does not declare queue {entry.queue!r}, so a requeue "
        "could route nowhere; run it as `celery -A yourproj morgue ...`, whose app declares "
        "your queues (the entry is kept)"
    )


def publish(app: Any, entry: Entry, route: Route, new_id: str, producer: Any = None) -> None:
    """Send ``entry``'s task as task ``new_id`` by ``route``; raises what the broker raises.

    ``producer``: one the caller holds (``app.producer_or_acquire()``), so a batch of publishes
    reuses one instead of taking one from the pool for each.
    """
    raw = entry.options.get("raw_message")
    if isinstance(raw, dict):
        _publish_raw(app, entry, route, new_id, raw, producer)
        return
    args, kwargs = entry.requeue_arguments()
    options: dict[str, Any] = {
        "task_id": new_id,
        "headers": {REQUEUED_FROM_HEADER: entry.task_id},
        "queue": route.queue,
    }
    if route.routing_key:
        options["routing_key"] = route.routing_key
    if entry.priority is not None:
        options["priority"] = entry.priority
    if entry.root_id:
        options["root_id"] = entry.root_id
    if entry.parent_id:
        options["parent_id"] = entry.parent_id
    for name in _CARRIED:
        if entry.options.get(name) is not None:
            options[name] = entry.options[name]
    if producer is not None:
        options["producer"] = producer
    app.send_task(entry.task, args=args, kwargs=kwargs, **options)


def raw_message_option(message: Any, limit: int) -> dict[str, Any] | None:
    """The message as received (body, content type and encoding, headers), for a message the
    worker could not decode or refused; None when its body is larger than ``limit`` bytes."""
    body = getattr(message, "body", b"")
    if isinstance(body, str):
        body = body.encode("utf-8", "surrogateescape")
    if not isinstance(body, bytes) or len(body) > limit:
        return None
    headers = getattr(message, "headers", None)
    return {
        "body": base64.b64encode(body).decode("ascii"),
        "content_type": str(getattr(message, "content_type", "") or ""),
        "content_encoding": str(getattr(message, "content_encoding", "") or ""),
        "headers": dict(headers) if isinstance(headers, dict) else {},
    }


def _publish_raw(
    app: Any, entry: Entry, route: Route, new_id: str, raw: dict[str, Any], held: Any
) -> None:
    """Send a message the worker refused as it was: its body bytes, under a fresh task id."""
    try:
        body = base64.b64decode(str(raw.get("body", "")), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidEntryError(f"entry {entry.id}: its stored message body is damaged") from None
    headers = dict(raw.get("headers") or {})
    if "id" in headers:
        headers["id"] = new_id
    headers[REQUEUED_FROM_HEADER] = entry.task_id
    queue = route.queue if not isinstance(route.queue, str) else app.amqp.queues[route.queue]
    # Celery's own rule (amqp.send_task_message): a direct exchange goes through the default
    # exchange to the queue by name, whatever its binding key; others by the routing key.
    if queue.exchange.type == "direct":
        exchange, routing_key = "", queue.name
    else:
        exchange, routing_key = queue.exchange, route.routing_key or queue.routing_key
    with app.producer_or_acquire(held) as producer:
        producer.publish(
            body,
            exchange=exchange,
            routing_key=routing_key,
            declare=[queue],
            content_type=str(raw.get("content_type") or "application/octet-stream"),
            content_encoding=str(raw.get("content_encoding") or "binary"),
            headers=headers,
            correlation_id=new_id,
            retry=False,
        )
