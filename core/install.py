"""``core.install(app)``: the one call a worker makes."""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

from celery import signals

from core.capture import FailureCapture
from core.options import Options
from core.urls import resolve_redis_url


@dataclass(frozen=True)
class Installation:
    app: Any
    redis_url: str
    options: Options
    capture: FailureCapture


_installed: weakref.WeakKeyDictionary[Any, Installation] = weakref.WeakKeyDictionary()


def install(app: Any, redis_url: str | None = None, **options: Any) -> Installation:
    """Capture the failures of ``app``'s tasks into the Redis DLQ.

    ``redis_url`` defaults to the broker when it is Redis, else the result backend. Options:
    ``prefix`` ("dlq:"), ``retention`` (seconds, 7 days), ``max_entries`` (per queue, 10,000),
    ``spool_dir``, ``socket_timeout``. A second call for the same app changes nothing.
    """
    existing = _installed.get(app)
    if existing is not None:
        return existing
    parsed = Options.from_kwargs(options)
    url = resolve_redis_url(app, redis_url)
    capture = FailureCapture(app, url, parsed)
    # Strong references: Celery's signals hold receivers weakly by default and a bound method
    # of an object nobody else holds would vanish.
    signals.task_received.connect(capture.on_task_received, weak=False)
    signals.task_failure.connect(capture.on_task_failure, weak=False)
    installation = Installation(app=app, redis_url=url, options=parsed, capture=capture)
    _installed[app] = installation
    return installation
