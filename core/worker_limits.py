"""The worker's own view of its running tasks: the hard limit it enforces and the age it sees.

``inspect().active()`` carries neither. Its ``time_start`` is the worker's wall clock, which a
monitor on another host can only compare with its own (clock skew counts as age), and no limit
at all: a per-call ``apply_async(time_limit=...)`` is invisible to ``registered()``.

``morgue_active``, a remote-control (inspect) command that :func:`register_active_command` adds
to workers running ``core.install``, answers from the worker's main process, for each active
request::

    {"version": 2, "pool": {"hard_limit": 50.0 | None, "soft_limit": ... | None},
     "installation": {"dlq": "dlq:3f2a9c1b0d4e" | None, "hard_limit": 300.0 | None,
                      "grace": 30.0} | None,
     "tasks": [{...request.info(safe) fields (id, name, args, kwargs, type, hostname,
                time_start, acknowledged, delivery_info, worker_pid)...,
                "hard_limit": 60.0 | None, "hard_limit_source": "request" | "task" | "pool" | None,
                "soft_limit": 50.0 | None,
                "runtime": 12.3 | None, "runtime_clock": "monotonic" | "wall" | None}]}

``installation`` says which DLQ the worker's ``core.install`` writes to (:func:`dlq_identity`:
the prefix and a short hash of the DLQ Redis URL, never the URL itself) and its own reaper
options: a reaper reaps only workers of its own DLQ, with their own ``hard_limit`` (``None``:
tasks without a known limit are never reaped). It is None in a process where this command was
registered by an app other than the worker's (no installation of the worker's own app).

The hard limit is the one billiard enforces: the message's own ``timelimit`` header (a per-call
``time_limit``), else the task's ``time_limit`` (its own or ``task_time_limit``), else the pool
default (``--time-limit``); the prefork pool's job holds the value it applies (``_timeout``).
``runtime`` is measured on the worker's monotonic clock from the moment the pool accepted the
job: billiard's ``_time_accepted`` (the child's ``time.monotonic()``, the same clock the pool
times its limits with) for prefork, a ``task_prerun`` stamp for pools that run tasks in the
worker's own process (threads, gevent, eventlet). Only when neither exists (a request accepted
a moment before its ``task_prerun``) is it the worker's own wall clock, said as ``"wall"``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

from celery import signals

log = logging.getLogger(__name__)

ACTIVE_COMMAND = "morgue_active"
REPLY_VERSION = 2

# task id -> time.monotonic() when the task began, in the process that runs it. Read only in a
# worker's main process (threads and green pools); in a prefork child it holds the one task the
# child runs and is emptied when it ends.
_started: dict[str, float] = {}


def _on_prerun(task_id: str | None = None, **_: Any) -> None:
    if task_id:
        _started[task_id] = time.monotonic()


def _on_postrun(task_id: str | None = None, **_: Any) -> None:
    if task_id:
        _started.pop(task_id, None)


def _positive(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if value > 0 else None


def _pool_limits(pool: Any) -> tuple[float | None, float | None]:
    """``(hard, soft)`` defaults of the worker's pool (``--time-limit``, ``--soft-time-limit``)."""
    inner = getattr(pool, "_pool", None)
    return _positive(getattr(inner, "timeout", None)), _positive(
        getattr(inner, "soft_timeout", None)
    )


def _job(request: Any) -> Any:
    """The pool's job of this request (billiard's ApplyResult for prefork), or None."""
    ref = getattr(request, "_apply_result", None)
    try:
        return ref() if callable(ref) else None
    except Exception:
        return None


def request_limits(
    request: Any, pool_hard: float | None, pool_soft: float | None
) -> tuple[float | None, str | None, float | None]:
    """``(hard, source, soft)`` as the pool enforces them for ``request``.

    In the order celery/worker/request.py and billiard apply them: the message's ``timelimit``
    header ``(hard, soft)``, the task's ``time_limit`` / ``soft_time_limit``, the pool default.
    """
    header = getattr(request, "time_limits", None) or (None, None)
    try:
        call_hard, call_soft = _positive(header[0]), _positive(header[1])
    except (IndexError, KeyError, TypeError):
        call_hard = call_soft = None
    task = getattr(request, "task", None)
    task_hard = _positive(getattr(task, "time_limit", None))
    task_soft = _positive(getattr(task, "soft_time_limit", None))
    if call_hard is not None:
        hard, source = call_hard, "request"
    elif task_hard is not None:
        hard, source = task_hard, "task"
    elif pool_hard is not None:
        hard, source = pool_hard, "pool"
    else:
        hard, source = None, None
    job = _job(request)
    # What the prefork pool actually applies to this job, where it exposes it.
    enforced = _positive(getattr(job, "_timeout", None))
    if enforced is not None:
        hard, source = enforced, source or "pool"
    soft = _positive(getattr(job, "_soft_timeout", None)) or call_soft or task_soft or pool_soft
    return hard, source, soft


def request_runtime(request: Any, now: float) -> tuple[float | None, str | None]:
    """Seconds ``request`` has run, by the worker's monotonic clock ``now``, and which clock."""
    accepted = _positive(getattr(_job(request), "_time_accepted", None))
    if accepted is None:
        accepted = _started.get(str(getattr(request, "id", "")))
    if accepted is not None:
        return max(0.0, now - accepted), "monotonic"
    time_start = _positive(getattr(request, "time_start", None))
    if time_start is not None:
        return max(0.0, time.time() - time_start), "wall"
    return None, None


def dlq_identity(prefix: str, redis_url: str) -> str:
    """Which DLQ an installation writes to, safe to show: ``prefix`` + 12 hex of the URL's hash."""
    digest = hashlib.sha256(redis_url.strip().encode()).hexdigest()[:12]
    return f"{prefix}{digest}"


def installation_info(app: Any) -> dict[str, Any] | None:
    """``{"dlq", "hard_limit", "grace"}`` of ``app``'s installation; None when it has none."""
    from celery_morgue.core.install import installation_of  # core.install imports this module

    installation = installation_of(app) if app is not None else None
    if installation is None:
        return None
    options = installation.options
    return {
        "dlq": dlq_identity(options.prefix, installation.redis_url),
        "hard_limit": options.hard_limit,
        "grace": options.grace,
    }


def morgue_active(state: Any, safe: bool = True, **_: Any) -> dict[str, Any]:
    """Active requests with the hard limit the pool enforces and their age on this worker."""
    from celery.worker import state as worker_state

    now = time.monotonic()
    pool_hard, pool_soft = _pool_limits(getattr(state.consumer, "pool", None))
    copy = getattr(state, "tset", set)
    tasks = []
    for request in copy(worker_state.active_requests):
        hard, source, soft = request_limits(request, pool_hard, pool_soft)
        runtime, clock = request_runtime(request, now)
        tasks.append(
            {
                **request.info(safe=safe),
                "hard_limit": hard,
                "hard_limit_source": source,
                "soft_limit": soft,
                "runtime": runtime,
                "runtime_clock": clock,
            }
        )
    return {
        "version": REPLY_VERSION,
        "pool": {"hard_limit": pool_hard, "soft_limit": pool_soft},
        "installation": installation_info(getattr(state.consumer, "app", None)),
        "tasks": tasks,
    }


def register_active_command() -> None:
    """Add ``morgue_active`` to Celery's remote-control commands, and the start stamps it reads.

    Both are process-wide; a second call adds nothing.
    """
    from celery.worker.control import Panel, inspect_command

    if ACTIVE_COMMAND in Panel.data:
        return
    signals.task_prerun.connect(_on_prerun, weak=False)
    signals.task_postrun.connect(_on_postrun, weak=False)
    inspect_command(name=ACTIVE_COMMAND, signature="[safe=True]")(morgue_active)
