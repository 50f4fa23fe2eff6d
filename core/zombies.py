"""Zombie tasks: still running past their hard time limit plus a grace.

Each worker running ``core.install`` answers ``morgue_active`` (:mod:`core.worker_limits`): for
each running request the hard limit its pool enforces (a per-call ``time_limit`` included) and
where it comes from, and the seconds it has run on the worker's own monotonic clock, so clock
skew between hosts counts for nothing. A worker without that command (no ``core.install``) is
asked the old way, ``active()``, ``registered('time_limit')`` and ``stats()``: its tasks are
marked ``source="inspect"``, aged on this host's clock against the worker's ``time_start``, and
a per-call limit is invisible there. Where no limit is known, ``hard_limit`` (the argument)
applies, or none at all when it is None.

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

from core.broadcast import ClusterUnavailable, broker_connection, control, nobody_listens, ping
from core.revoke import RevokeReport, revoke_tasks
from core.worker_limits import ACTIVE_COMMAND

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
# ``time_limit``, the worker's pool default, the ``hard_limit`` argument, or nowhere.
LIMIT_SOURCES = ("request", "task", "pool", "default", "none")
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
            "taken_at": self.taken_at.isoformat(),
        }


def _parse_registered(lines: Any) -> dict[str, float | None]:
    """``{'app.sleeper': 3.0, 'app.other': None}`` from ``registered('time_limit')`` lines.

    Every task the worker lists is a key: None means the worker says it has no limit of its own.
    """
    limits: dict[str, float | None] = {}
    for line in lines or ():
        text = str(line)
        match = _REGISTERED.match(text)
        if match is None:
            limits[text] = None
            continue
        limit = None
        for item in match["info"].split():
            key, _, value = item.partition("=")
            if key == "time_limit":
                limit = _positive(value)
        limits[match["name"]] = limit
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


def _pool_hard_limit(stats: Any) -> float | None:
    try:
        timeouts = stats["pool"]["timeouts"]
        return _positive(timeouts[1])
    except (KeyError, IndexError, TypeError):
        return None


def _local_time_limit(app: Any, name: str) -> float | None:
    try:
        task = app.tasks.get(name)
    except Exception:  # an app that may not be finalized here
        return None
    return _positive(getattr(task, "time_limit", None)) if task is not None else None


def _fallback_limit(hard_limit: float | None) -> tuple[float, str]:
    return (float(hard_limit), "default") if hard_limit is not None else (NO_LIMIT, "none")


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
        limit, source = _fallback_limit(hard_limit)
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
    registered: dict[str, float | None],
    pool_limit: float | None,
    hard_limit: float | None,
    grace: float,
    now: float,
) -> ActiveTask:
    """A task as ``active()`` lists it: limit from the registries, age on this host's clock."""
    name = str(info.get("name") or info.get("type") or "")
    # The worker's own registry first; the local one for what it does not list (celery.*).
    own = registered[name] if name in registered else _local_time_limit(app, name)
    if own is not None:
        limit, source = own, "task"
    elif pool_limit is not None:
        limit, source = pool_limit, "pool"
    else:
        limit, source = _fallback_limit(hard_limit)
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
    hard_limit: float | None = 300.0,
    grace: float = 30.0,
    timeout: float = 1.0,
    now: float | None = None,
) -> ClusterSnapshot:
    """What every worker is running, with each task's age, hard limit and zombie verdict.

    ``hard_limit`` is the limit of tasks with none of their own (per call or on the task) and no
    pool default; None leaves them without one (never zombies). ``now`` is this host's clock
    (epoch seconds, default: when the replies arrived): ``taken_at`` and ``started_at`` are on
    it, and so are the ages of tasks from workers without ``morgue_active``; the ages the
    workers report are their own and do not depend on it. Raises :class:`ClusterUnavailable`
    when the broker cannot be reached.
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
        registered = control(app, "registered", {"taskinfoitems": ["time_limit"]}, legacy, timeout)
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
) -> ClusterSnapshot:
    """A snapshot from the replies (``{worker: reply}``) of the workers that answered the ping.

    ``reports`` holds the ``morgue_active`` replies; a worker without a valid one is read from
    its ``active(safe=True)``, ``registered('time_limit')`` and ``stats()`` replies.
    """
    reports = reports or {}
    tasks: list[ActiveTask] = []
    complete: list[str] = []
    inspected: list[str] = []
    for worker in workers:
        reported = _reported_tasks(reports.get(worker))
        if reported is not None:
            complete.append(worker)
            tasks += [_reported_task(info, worker, hard_limit, grace, now) for info in reported]
            continue
        if worker in active and worker in registered and worker in stats:
            complete.append(worker)
            inspected.append(worker)
        if isinstance(active.get(worker), list):
            registry = _parse_registered(registered.get(worker))
            pool_limit = _pool_hard_limit(stats.get(worker))
            tasks += [
                _inspected_task(app, info, worker, registry, pool_limit, hard_limit, grace, now)
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
    )


def _utc(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.UTC)
