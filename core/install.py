"""``core.install(app)``: the one call a worker makes."""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass, field
from typing import Any

from celery import signals

from celery_morgue.core.capture import FailureCapture
from celery_morgue.core.dropped import DroppedMessages, DroppedMessagesStep
from celery_morgue.core.eviction import log_eviction_policy
from celery_morgue.core.options import Options
from celery_morgue.core.reaper import Reaper, ensure_beat_entry, register_cleanup_task
from celery_morgue.core.revoke import register_kill_job
from celery_morgue.core.spool_drain import register_spool_drain
from celery_morgue.core.urls import RedisURLError, resolve_redis_url
from celery_morgue.core.worker_limits import register_active_command

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Installation:
    app: Any
    redis_url: str = field(repr=False)  # may hold a password
    options: Options
    capture: FailureCapture
    dropped: DroppedMessages
    reaper: Reaper
    cleanup_task: Any  # celery_morgue.cleanup_zombie_tasks on this app


_installed: weakref.WeakKeyDictionary[Any, Installation] = weakref.WeakKeyDictionary()


def install(app: Any, redis_url: str | None = None, **options: Any) -> Installation:
    """Keep every task ``app``'s workers drop in the Redis DLQ and reap its zombie tasks.

    Dropped means: failed (``task_failure``), terminated by a revoke, an unregistered task
    name, a message the worker rejected or could not decode, and with ``capture_expired=True``
    a task whose ``expires`` passed.

    ``redis_url`` defaults to the broker when it is Redis, else the result backend. DLQ options:
    ``prefix`` ("dlq:"), ``retention`` (seconds, 7 days), ``max_entries`` (per queue, 10,000),
    ``spool_dir``, ``spool_max_bytes`` (256 MiB), ``socket_timeout``, ``capture_expired``
    (False). Reaper options: ``hard_limit`` (300 s, for tasks with no
    limit of their own nor a pool default; None: never reap those), ``grace`` (30 s),
    ``reap_interval`` (300 s between beat runs; None: no beat entry), ``reap_signals``
    (("SIGTERM", "SIGKILL")), ``reap_dry_run`` (False), ``inspect_timeout`` (1 s),
    ``reap_uninstalled_workers`` (False: only workers of this DLQ are reaped). A second call
    for the same app changes nothing.
    """
    existing = _installed.get(app)
    if existing is not None:
        if options or redis_url is not None:
            log.warning(
                "celery-morgue: install() already ran for %r; the options of this call are ignored",
                getattr(app, "main", app),
            )
        return existing
    parsed = Options.from_kwargs(options)
    if parsed.cluster and redis_url is None:
        raise RedisURLError(
            "cluster=True needs redis_url='redis://<a cluster node>': Celery's broker "
            "(kombu) cannot be a Redis Cluster, so the DLQ cannot default to it"
        )
    url = resolve_redis_url(app, redis_url)
    capture = FailureCapture(app, url, parsed)
    # Strong references: Celery's signals hold receivers weakly by default and a bound method
    # of an object nobody else holds would vanish.
    signals.task_received.connect(capture.on_task_received, weak=False)
    signals.task_failure.connect(capture.on_task_failure, weak=False)
    dropped = DroppedMessages(capture, parsed.capture_expired)
    signals.task_revoked.connect(dropped.on_task_revoked, weak=False)
    signals.task_unknown.connect(dropped.on_task_unknown, weak=False)
    signals.task_rejected.connect(dropped.on_task_rejected, weak=False)
    app.steps["consumer"].add(DroppedMessagesStep)
    register_spool_drain(app, capture)  # the main process drains the spool on its own
    reaper = Reaper(app, parsed, capture)
    cleanup_task = register_cleanup_task(app, reaper)
    register_kill_job()
    register_active_command()
    signals.worker_ready.connect(reaper.log_policy, weak=False)

    def warn_on_eviction(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", app) is app:  # once, when a worker of this app starts
            log_eviction_policy(capture.dlq.client)

    signals.worker_ready.connect(warn_on_eviction, weak=False)
    if parsed.reap_interval is not None:
        _schedule(app, parsed.reap_interval)
    installation = Installation(
        app=app,
        redis_url=url,
        options=parsed,
        capture=capture,
        dropped=dropped,
        reaper=reaper,
        cleanup_task=cleanup_task,
    )
    _installed[app] = installation
    return installation


def installation_of(app: Any) -> Installation | None:
    """What :func:`install` set up for ``app``, if it ran."""
    return _installed.get(app)


def _schedule(app: Any, interval: float) -> None:
    """Add the beat entry now, and again if the configuration is (re)loaded or finalized.

    A user's ``app.conf.beat_schedule = {...}`` or ``config_from_object`` after this call would
    drop the entry; beat finalizes the app before it reads the schedule, so it comes back then.
    """
    ensure_beat_entry(app, interval)

    def again(sender: Any = None, **_: Any) -> None:
        ensure_beat_entry(app, interval)

    app.on_after_configure.connect(again, weak=False)
    app.on_after_finalize.connect(again, weak=False)
