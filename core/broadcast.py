"""Remote-control calls to Celery workers, each on a broker connection of its own.

Two calls: a broadcast ``ping`` that stops listening shortly after the replies stop coming
(instead of kombu's fixed silence of ``timeout``), and :func:`control`, a command addressed to
named workers, which returns as soon as each of them replied. A broker that cannot be reached
is a :class:`ClusterUnavailable` with a one-line message that never shows the password.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from kombu.exceptions import OperationalError
from kombu.messaging import Consumer

from celery_morgue.core.urls import redact_urls
from celery_morgue.core.wording import one_line

log = logging.getLogger(__name__)

# After the first ping reply, stop listening once no reply came for this long, or for a few
# times the first reply's latency when the cluster is slow (a loaded worker answers late).
_SETTLE_FLOOR = 0.05
_SETTLE_FACTOR = 3.0


class ClusterUnavailable(RuntimeError):
    """The broker could not be reached: nothing is known about the workers."""


@contextmanager
def broker_connection(app: Any, timeout: float) -> Iterator[Any]:
    """A broker connection that fails fast, with errors turned into :class:`ClusterUnavailable`."""
    conn = app.connection_for_write()
    errors: tuple[type[BaseException], ...] = (OperationalError, OSError, redis.RedisError)
    try:
        errors += tuple(conn.connection_errors) + tuple(conn.channel_errors)
        try:
            try:
                conn.ensure_connection(max_retries=0, timeout=timeout)
            except ValueError as exc:  # kombu's word on a broker setting, e.g. no master_name
                raise ClusterUnavailable(
                    f"cannot use the broker at {_broker_text(app, conn)}: {one_line(exc)}"
                ) from None
            yield conn
        except errors as exc:
            raise ClusterUnavailable(
                f"cannot reach the broker at {_broker_text(app, conn)}: {one_line(exc)}"
            ) from None
    finally:
        _release(conn)


def _release(conn: Any) -> None:
    """Close ``conn`` without waiting.

    A wait for replies that ended on its timeout leaves a BRPOP pending on the Redis
    connection, and kombu's close waits for it (up to its 1 s timeout); nothing needs that wait.
    """
    threading.Thread(
        target=_quietly_release, args=(conn,), name="morgue-close", daemon=True
    ).start()


def _quietly_release(conn: Any) -> None:
    try:
        conn.release()
    except Exception as exc:  # the connection is of no further use either way
        log.debug("celery-morgue: closing a broker connection: %s", exc)


def _broker_text(app: Any, conn: Any) -> str:
    url = app.conf.broker_url
    if isinstance(url, str | list | tuple) and url:
        return redact_urls(url)  # every host of a failover list
    return str(conn.as_uri())  # kombu masks the password


def nobody_listens(conn: Any) -> bool:
    """True when a Redis broker has no pattern subscriber at all, so no worker can answer.

    Workers take broadcasts with PSUBSCRIBE; without any, a ping would only wait out its
    timeout. Any doubt (another transport, an error) answers False.
    """
    if getattr(conn.transport, "driver_type", None) != "redis":
        return False
    try:
        return int(conn.default_channel.client.pubsub_numpat()) == 0
    except Exception:
        return False


def ping(app: Any, conn: Any, timeout: float) -> list[str]:
    """Names of the workers that answer a broadcast ping.

    Waits up to ``timeout`` for the first reply, then until replies stop for a short settle
    time, instead of kombu's silence of ``timeout`` after the last reply.
    """
    mailbox = app.control.mailbox(conn)
    channel = conn.default_channel
    ticket = str(uuid.uuid4())
    names: set[str] = set()

    def on_reply(body: Any, message: Any) -> None:
        if message.headers.get("ticket") == ticket and isinstance(body, dict):
            names.update(str(name) for name in body)

    reply_queue = mailbox.reply_queue
    try:
        mailbox._publish("ping", {}, reply_ticket=ticket, channel=channel, timeout=timeout)
        started = time.monotonic()
        deadline = started + timeout
        settle: float | None = None
        consumer = Consumer(  # type: ignore[no-untyped-call]
            channel, [reply_queue], accept=mailbox.accept, no_ack=True, callbacks=[on_reply]
        )
        with consumer:
            while True:
                wait = settle if settle is not None else deadline - time.monotonic()
                if wait <= 0:
                    break
                try:
                    conn.drain_events(timeout=wait)
                except TimeoutError:
                    break
                if names and settle is None:
                    latency = time.monotonic() - started
                    settle = min(timeout, max(_SETTLE_FLOOR, _SETTLE_FACTOR * latency))
    finally:
        channel.after_reply_message_received(reply_queue.name)
    return sorted(names)


def control(
    app: Any, command: str, arguments: dict[str, Any], workers: list[str], timeout: float
) -> dict[str, Any]:
    """``{worker: reply}`` for one remote-control command, on a connection of its own.

    Its own: kombu leaves a blocking pop pending on a connection whose wait for replies timed
    out, and that pop swallows the replies of the next call made on it (measured: a ping and
    then an inspect on one connection cost the inspect its whole timeout).
    """
    with broker_connection(app, timeout) as conn:
        replies = app.control.broadcast(
            command,
            arguments=arguments,
            destination=workers,
            reply=True,
            timeout=timeout,
            connection=conn,
        )
    by_worker: dict[str, Any] = {}
    for reply in replies or ():
        if isinstance(reply, dict):
            by_worker.update((str(worker), answer) for worker, answer in reply.items())
    return by_worker
