"""Zombie tasks: still running past their hard time limit plus a grace.

Each worker running ``core.install`` answers ``morgue_active`` (:mod:`core.worker_limits`): for
each running request the hard limit its pool enforces (a per-call ``time_limit`` included) and
where it comes from, and the seconds it has run on the worker's own monotonic clock, so clock
skew between hosts counts for nothing. A worker without that command (no ``core.install``) is
asked the old way, ``active()``, ``registered('time_limit')`` and ``stats()``: its tasks are
marked ``source="inspect"``, aged on this host's clock against the worker's ``time_start``, and
a per-call limit is invisible there. Where no hard limit is known, ``hard_limit`` (the
argument) applies, or none at all when it is None; a worker whose ``core.install`` has
``hard_limit=None`` says so and its tasks without a known limit never get one. A task with only a
soft limit gets at least that soft limit (``hard_limit_source="soft"``): the reaper never ends a
task before its own soft limit could fire.

Each ``morgue_active`` reply also says which DLQ the worker's installation writes to
(``ClusterSnapshot.dlqs``): the reaper signals only workers of its own DLQ.

Discovery costs one broadcast ``ping`` that stops listening shortly after the replies stop
coming, then calls addressed to the workers that answered, which return as soon as each of them
replied (both in :mod:`core.broadcast`).

Revoking lives in :mod:`core.revoke` and the periodic reaper in :mod:`core.reaper`; the names
the command line and the UI use are re-exported here.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from celery_morgue.core.broadcast import (
    ClusterUnavailable,
    broker_connection,
    control,
    nobody_listens,
    ping,
)
from celery_morgue.core.options import DEFAULT_GRACE, DEFAULT_HARD_LIMIT, DEFAULT_INSPECT_TIMEOUT
from celery_morgue.core.revoke import RevokeReport, revoke_tasks
from celery_morgue.core.worker_limits import ACTIVE_COMMAND

__all__ = [
    "CLEANUP_TASK",
    "LIMIT_SOURCES",
    "NO_LIMIT",
    "ActiveTask",
    "ClusterSnapshot",
    "ClusterUnavailable",
    "RevokeReport",
    "active_tasks",
    "build_snapshot",
    "revoke_tasks",
]

# The reaper's task (registered by core.reaper), named here for whoever schedules or sends it.
CLEANUP_TASK = "celery_morgue.cleanup_zombie_tasks"

# Where a task's hard limit came from: the message (a per-call ``time_limit``), the task's own
# ``time_limit``, the worker's pool default, the task's soft limit (no hard limit known, and the
# soft limit is longer than the default: the task may run until it fires), the ``hard_limit``
# argument (or the worker's own option), or nowhere.
LIMIT_SOURCES = ("request", "task", "pool", "soft", "default", "none")
# ``ActiveTask.hard_limit`` of a task with no known limit (``null`` in JSON): never a zombie.
NO_LIMIT = math.inf
# Where a task's age and limit came from.
SOURCE_WORKER = "worker"  # morgue_active: the enforced limit, the worker's monotonic clock
SOURCE_INSPECT = "inspect"  # active/registered/stats: this host's clock, per-call limits unseen

_REGISTERED = re.compile(r"^(?P<name>.+?) \[(?P<info>[^\[\]]*)\]$")
_WORKER_LIMIT_SOURCES = ("request", "task", "pool")


@dataclass(frozen=True)
class ActiveTask:
    id: str
    name: str
    worker: str
    pid: int | None
    started_at: dt.datetime | None  # UTC, this host's clock; None: not started by the pool yet
    age: float | None  # seconds it has run (see ``source``); None when not started
    hard_limit: float  # seconds, as resolved for this task on this worker; NO_LIMIT: none known
    zombie: bool  # age > hard_limit + grace; never for a task not started or without a limit
    redelivered: bool
    args: str  # safe reprs, as inspect returns them
    kwargs: str
    queue: str | None = None  # the routing key it was delivered with
    hard_limit_source: str = "default"  # one of LIMIT_SOURCES
    source: str = SOURCE_WORKER  # SOURCE_WORKER or SOURCE_INSPECT

    @property
    def limit_known(self) -> bool:
        return not math.isinf(self.hard_limit)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "task": self.name,
            "worker": self.worker,
            "pid": self.pid,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "age": self.age,
            "hard_limit": self.hard_limit if self.limit_known else None,
            "hard_limit_source": self.hard_limit_source,
            "zombie": self.zombie,
            "redelivered": self.redelivered,
            "args": self.args,
            "kwargs": self.kwargs,
            "queue": self.queue,
            "source": self.source,
        }


@dataclass(frozen=True)
class ClusterSnapshot:
    tasks: list[ActiveTask]  # oldest first; tasks not started yet last
    workers: list[str]  # answered the ping and every call after it
    unreachable: list[str]  # answered the ping, then not every call after it
    taken_at: dt.datetime
    # Answered without morgue_active (no core.install there): asked with inspect instead.
    inspected: list[str] = field(default_factory=list)
    # Answered morgue_active: the DLQ identity of its installation (core.worker_limits.
    # dlq_identity); None when the reply names none (an older celery-morgue, or another app).
    dlqs: dict[str, str | None] = field(default_factory=dict)

    @property
    def zombies(self) -> list[ActiveTask]:
        return [task for task in self.tasks if task.zombie]

    def as_dict(self) -> dict[str, Any]:
        return {
            "tasks": [task.as_dict() for task in self.tasks],
            "zombies": len(self.zombies),
            "workers": list(self.workers),
            "unreachable": list(self.unreachable),
            "inspected": list(self.inspected),
            "dlqs": dict(self.dlqs),
            "taken_at": self.taken_at.isoformat(),
        }


def _parse_registered(lines: Any) -> dict[str, tuple[float | None, float | None]]:
    """``{'app.sleeper': (3.0, None), 'app.other': (None, None)}``: ``(hard, soft)`` limits from
    ``registered('time_limit', 'soft_time_limit')`` lines.

    Every task the worker lists is a key: None means the worker says it has no such limit.
    """
    limits: dict[str, tuple[float | None, float | None]] = {}
    for line in lines or ():
        text = str(line)
        match = _REGISTERED.match(text)
        if match is None:
            limits[text] = (None, None)
            continue
        hard = soft = None
        for item in match["info"].split():
            key, _, value = item.partition("=")
            if key == "time_limit":
                hard = _positive(value)
            elif key == "soft_time_limit":
                soft = _positive(value)
        limits[match["name"]] = (hard, soft)
    return limits


def _positive(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 and math.isfinite(number) else None


def _seconds(value: Any) -> float | None:
    """A non-negative number of seconds from a reply, or None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return max(0.0, float(value)) if math.isfinite(value) else None


def _pool_limits(stats: Any) -> tuple[float | None, float | None]:
    """``(hard, soft)`` pool defaults from a ``stats()`` reply (``pool.timeouts: [soft, hard]``)."""
    try:
        timeouts = stats["pool"]["timeouts"]
        return _positive(timeouts[1]), _positive(timeouts[0])
    except (KeyError, IndexError, TypeError):
        return None, None


def _local_time_limits(app: Any, name: str) -> tuple[float | None, float | None]:
    try:
        task = app.tasks.get(name)
    except Exception:  # an app that may not be finalized here
        return None, None
    if task is None:
        return None, None
    return _positive(getattr(task, "time_limit", None)), _positive(
        getattr(task, "soft_time_limit", None)
    )


def _fallback_limit(hard_limit: float | None, soft: float | None = None) -> tuple[float, str]:
    """The limit of a task whose hard limit is unknown: the default, but never below its soft
    limit (the task may run until that fires, and must be able to clean up after it)."""
    if soft is not None and (hard_limit is None or soft > hard_limit):
        return soft, "soft"
    return (float(hard_limit), "default") if hard_limit is not None else (NO_LIMIT, "none")


def _installation(reply: Any) -> dict[str, Any] | None:
    """The ``installation`` of a ``morgue_active`` reply; None when it names none."""
    found = reply.get("installation") if isinstance(reply, dict) else None
    return found if isinstance(found, dict) else None


def _worker_defaults(
    reply: Any, hard_limit: float | None, grace: float, own: bool
) -> tuple[float | None, float]:
    """The fallback limit and grace for the tasks of the worker that sent ``reply``.

    A worker installed with ``hard_limit=None`` leaves its tasks without a known limit alone,
    whatever is asked here. With ``own``, the worker's own ``hard_limit`` and ``grace`` replace
    the arguments; without, the arguments apply (an explicit choice for this call).
    """
    installation = _installation(reply)
    if installation is None:
        return hard_limit, grace
    if "hard_limit" in installation and installation["hard_limit"] is None:
        hard_limit = None
    elif own and _positive(installation.get("hard_limit")) is not None:
        hard_limit = _positive(installation["hard_limit"])
    if own and _seconds(installation.get("grace")) is not None:
        grace = float(installation["grace"])
    return hard_limit, grace


def _reported_tasks(reply: Any) -> list[dict[str, Any]] | None:
    """The task list of a ``morgue_active`` reply; None for an error (an unknown command)."""
    if isinstance(reply, dict) and "error" not in reply and isinstance(reply.get("tasks"), list):
        return [info for info in reply["tasks"] if isinstance(info, dict)]
    return None


def _task(
    info: dict[str, Any],
    worker: str,
    *,
    age: float | None,
    limit: float,
    limit_source: str,
    source: str,
    grace: float,
    now: float,
) -> ActiveTask:
    delivery = info.get("delivery_info") or {}
    pid = info.get("worker_pid")
    return ActiveTask(
        id=str(info.get("id")),
        name=str(info.get("name") or info.get("type") or ""),
        worker=worker,
        pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
        started_at=_utc(now - age) if age is not None else None,
        age=age,
        hard_limit=limit,
        zombie=age is not None and age > limit + grace,
        redelivered=bool(delivery.get("redelivered")) if isinstance(delivery, dict) else False,
        args=str(info.get("args", "")),
        kwargs=str(info.get("kwargs", "")),
        queue=(delivery.get("routing_key") or None) if isinstance(delivery, dict) else None,
        hard_limit_source=limit_source,
        source=source,
    )


def _reported_task(
    info: dict[str, Any], worker: str, hard_limit: float | None, grace: float, now: float
) -> ActiveTask:
    """A task as its worker's ``morgue_active`` reported it: its enforced limit, its runtime."""
    limit = _positive(info.get("hard_limit"))
    if limit is not None:
        reported = info.get("hard_limit_source")
        source = reported if reported in _WORKER_LIMIT_SOURCES else "task"
    else:
        limit, source = _fallback_limit(hard_limit, _positive(info.get("soft_limit")))
    age = _seconds(info.get("runtime"))
    if age is None and _seconds(info.get("time_start")) is not None:
        age = _seconds(now - float(info["time_start"]))  # no runtime: this host's clock
    return _task(
        info,
        worker,
        age=age,
        limit=limit,
        limit_source=source,
        source=SOURCE_WORKER,
        grace=grace,
        now=now,
    )


def _inspected_task(
    app: Any,
    info: dict[str, Any],
    worker: str,
    registered: dict[str, tuple[float | None, float | None]],
    pool_limits: tuple[float | None, float | None],
    hard_limit: float | None,
    grace: float,
    now: float,
) -> ActiveTask:
    """A task as ``active()`` lists it: limit from the registries, age on this host's clock."""
    name = str(info.get("name") or info.get("type") or "")
    # The worker's own registry first; the local one for what it does not list (celery.*).
    own, own_soft = registered[name] if name in registered else _local_time_limits(app, name)
    if own is not None:
        limit, source = own, "task"
    elif pool_limits[0] is not None:
        limit, source = pool_limits[0], "pool"
    else:
        limit, source = _fallback_limit(hard_limit, own_soft or pool_limits[1])
    time_start = _seconds(info.get("time_start"))
    age = now - time_start if time_start else None
    return _task(
        info,
        worker,
        age=age,
        limit=limit,
        limit_source=source,
        source=SOURCE_INSPECT,
        grace=grace,
        now=now,
    )


def _age_order(task: ActiveTask) -> tuple[bool, float, str]:
    return (task.age is None, -(task.age or 0.0), task.id)


def active_tasks(
    app: Any,
    *,
    hard_limit: float | None = DEFAULT_HARD_LIMIT,
    grace: float = DEFAULT_GRACE,
    timeout: float = DEFAULT_INSPECT_TIMEOUT,
    now: float | None = None,
    worker_defaults: bool = False,
) -> ClusterSnapshot:
    """What every worker is running, with each task's age, hard limit and zombie verdict.

    ``hard_limit`` is the limit of tasks with none of their own (per call or on the task) and no
    pool default; None leaves them without one (never zombies). With ``worker_defaults`` a
    worker running ``core.install`` uses its own ``hard_limit`` and ``grace`` options instead
    (the arguments still apply to workers that do not say theirs); a worker installed with
    ``hard_limit=None`` never gives its tasks without a known limit one, either way. ``now`` is
    this host's clock (epoch seconds, default: when the replies arrived): ``taken_at`` and
    ``started_at`` are on it, and so are the ages of tasks from workers without
    ``morgue_active``; the ages the workers report are their own and do not depend on it.
    Raises :class:`ClusterUnavailable` when the broker cannot be reached.
    """
    if timeout <= 0:
        raise ValueError(f"timeout must be positive seconds, got {timeout!r}")
    if hard_limit is not None and not hard_limit > 0:
        raise ValueError(f"hard_limit must be positive seconds or None, got {hard_limit!r}")
    with broker_connection(app, timeout) as conn:
        workers = [] if nobody_listens(conn) else ping(app, conn, timeout)
    if not workers:
        return ClusterSnapshot([], [], [], _utc(now if now is not None else time.time()))
    reports = control(app, ACTIVE_COMMAND, {"safe": True}, workers, timeout)
    replied_at = time.time()
    legacy = [w for w in workers if w in reports and _reported_tasks(reports[w]) is None]
    active: dict[str, Any] = {}
    registered: dict[str, Any] = {}
    stats: dict[str, Any] = {}
    if legacy:
        active = control(app, "active", {"safe": True}, legacy, timeout)
        replied_at = time.time()
        items = {"taskinfoitems": ["time_limit", "soft_time_limit"]}
        registered = control(app, "registered", items, legacy, timeout)
        stats = control(app, "stats", {}, legacy, timeout)
    return build_snapshot(
        app,
        workers,
        active,
        registered,
        stats,
        hard_limit=hard_limit,
        grace=grace,
        now=now if now is not None else replied_at,
        reports=reports,
        worker_defaults=worker_defaults,
    )


def build_snapshot(
    app: Any,
    workers: Sequence[str],
    active: Mapping[str, Any],
    registered: Mapping[str, Any],
    stats: Mapping[str, Any],
    *,
    hard_limit: float | None,
    grace: float,
    now: float,
    reports: Mapping[str, Any] | None = None,
    worker_defaults: bool = False,
) -> ClusterSnapshot:
    """A snapshot from the replies (``{worker: reply}``) of the workers that answered the ping.

    ``reports`` holds the ``morgue_active`` replies; a worker without a valid one is read from
    its ``active(safe=True)``, ``registered('time_limit')`` and ``stats()`` replies.
    """
    reports = reports or {}
    tasks: list[ActiveTask] = []
    complete: list[str] = []
    inspected: list[str] = []
    dlqs: dict[str, str | None] = {}
    for worker in workers:
        reply = reports.get(worker)
        reported = _reported_tasks(reply)
        if reported is not None:
            complete.append(worker)
            dlq = (_installation(reply) or {}).get("dlq")
            dlqs[worker] = dlq if isinstance(dlq, str) and dlq else None
            limit, worker_grace = _worker_defaults(reply, hard_limit, grace, worker_defaults)
            tasks += [_reported_task(info, worker, limit, worker_grace, now) for info in reported]
            continue
        if worker in active and worker in registered and worker in stats:
            complete.append(worker)
            inspected.append(worker)
        if isinstance(active.get(worker), list):
            registry = _parse_registered(registered.get(worker))
            pool_limits = _pool_limits(stats.get(worker))
            tasks += [
                _inspected_task(app, info, worker, registry, pool_limits, hard_limit, grace, now)
                for info in active[worker]
                if isinstance(info, dict)
            ]
    tasks.sort(key=_age_order)
    return ClusterSnapshot(
        tasks=tasks,
        workers=complete,
        unreachable=[w for w in workers if w not in complete],
        taken_at=_utc(now),
        inspected=inspected,
        dlqs=dlqs,
    )


def _utc(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.UTC)
