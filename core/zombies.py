"""Zombie tasks: still running past their hard time limit plus a grace.

A monitor sees a task through ``inspect().active()``, which carries no time limit; the limit is
resolved per task (its own ``time_limit``, else the worker's pool default, else a configured
default). Discovery costs one broadcast ``ping`` that stops listening shortly after the replies
stop coming, then ``inspect`` calls addressed to the workers that answered, which return as soon
as each of them replied (both in :mod:`core.broadcast`).

Revoking lives in :mod:`core.revoke` and the periodic reaper in :mod:`core.reaper`; the names
the command line and the UI use are re-exported here.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from core.broadcast import ClusterUnavailable, broker_connection, control, nobody_listens, ping
from core.revoke import RevokeReport, revoke_tasks

__all__ = [
    "CLEANUP_TASK",
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

_REGISTERED = re.compile(r"^(?P<name>.+?) \[(?P<info>[^\[\]]*)\]$")


@dataclass(frozen=True)
class ActiveTask:
    id: str
    name: str
    worker: str
    pid: int | None
    started_at: dt.datetime | None  # UTC; None: received but not started by the pool yet
    age: float | None  # seconds since time_start; None when not started
    hard_limit: float  # seconds, resolved for this task on this worker
    zombie: bool  # age > hard_limit + grace; never for a task not started
    redelivered: bool
    args: str  # safe reprs, as inspect returns them
    kwargs: str
    queue: str | None = None  # the routing key it was delivered with

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "task": self.name,
            "worker": self.worker,
            "pid": self.pid,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "age": self.age,
            "hard_limit": self.hard_limit,
            "zombie": self.zombie,
            "redelivered": self.redelivered,
            "args": self.args,
            "kwargs": self.kwargs,
            "queue": self.queue,
        }


@dataclass(frozen=True)
class ClusterSnapshot:
    tasks: list[ActiveTask]  # oldest first; tasks not started yet last
    workers: list[str]  # answered the ping and every inspect call
    unreachable: list[str]  # answered the ping, then not every inspect call
    taken_at: dt.datetime

    @property
    def zombies(self) -> list[ActiveTask]:
        return [task for task in self.tasks if task.zombie]

    def as_dict(self) -> dict[str, Any]:
        return {
            "tasks": [task.as_dict() for task in self.tasks],
            "zombies": len(self.zombies),
            "workers": list(self.workers),
            "unreachable": list(self.unreachable),
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
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


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


def _active_task(
    app: Any,
    info: dict[str, Any],
    worker: str,
    registered: dict[str, float | None],
    pool_limit: float | None,
    hard_limit: float,
    grace: float,
    now: float,
) -> ActiveTask:
    name = str(info.get("name") or info.get("type") or "")
    # The worker's own registry first; the local one for what it does not list (celery.*).
    own = registered[name] if name in registered else _local_time_limit(app, name)
    limit = own or pool_limit or hard_limit
    time_start = info.get("time_start")
    started_at: dt.datetime | None = None
    age: float | None = None
    if isinstance(time_start, int | float) and not isinstance(time_start, bool):
        started_at = dt.datetime.fromtimestamp(time_start, dt.UTC)
        age = now - float(time_start)
    delivery = info.get("delivery_info") or {}
    pid = info.get("worker_pid")
    return ActiveTask(
        id=str(info.get("id")),
        name=name,
        worker=worker,
        pid=pid if isinstance(pid, int) else None,
        started_at=started_at,
        age=age,
        hard_limit=float(limit),
        zombie=age is not None and age > limit + grace,
        redelivered=bool(delivery.get("redelivered")),
        args=str(info.get("args", "")),
        kwargs=str(info.get("kwargs", "")),
        queue=delivery.get("routing_key") or None,
    )


def _age_order(task: ActiveTask) -> tuple[bool, float, str]:
    return (task.age is None, -(task.age or 0.0), task.id)


def active_tasks(
    app: Any,
    *,
    hard_limit: float = 300.0,
    grace: float = 30.0,
    timeout: float = 1.0,
    now: float | None = None,
) -> ClusterSnapshot:
    """What every worker is running, with each task's age, hard limit and zombie verdict.

    ``hard_limit`` is the default for tasks with no limit of their own and no pool default;
    ``now`` (epoch seconds, default: when the replies arrived) is what ages are measured to.
    Raises :class:`ClusterUnavailable` when the broker cannot be reached.
    """
    if timeout <= 0:
        raise ValueError(f"timeout must be positive seconds, got {timeout!r}")
    with broker_connection(app, timeout) as conn:
        workers = [] if nobody_listens(conn) else ping(app, conn, timeout)
    if not workers:
        return ClusterSnapshot([], [], [], _utc(now if now is not None else time.time()))
    active = control(app, "active", {"safe": True}, workers, timeout)
    replied_at = time.time()
    registered = control(app, "registered", {"taskinfoitems": ["time_limit"]}, workers, timeout)
    stats = control(app, "stats", {}, workers, timeout)
    return build_snapshot(
        app,
        workers,
        active,
        registered,
        stats,
        hard_limit=hard_limit,
        grace=grace,
        now=now if now is not None else replied_at,
    )


def build_snapshot(
    app: Any,
    workers: Sequence[str],
    active: dict[str, Any],
    registered: dict[str, Any],
    stats: dict[str, Any],
    *,
    hard_limit: float,
    grace: float,
    now: float,
) -> ClusterSnapshot:
    """A snapshot from the replies (``{worker: reply}``) of ``active(safe=True)``,
    ``registered('time_limit')`` and ``stats()``, for the workers that answered the ping."""
    tasks = [
        _active_task(
            app,
            info,
            worker,
            _parse_registered(registered.get(worker)),
            _pool_hard_limit(stats.get(worker)),
            hard_limit,
            grace,
            now,
        )
        for worker in workers
        if isinstance(active.get(worker), list)
        for info in active[worker]
        if isinstance(info, dict)
    ]
    tasks.sort(key=_age_order)
    complete = [w for w in workers if w in active and w in registered and w in stats]
    return ClusterSnapshot(
        tasks=tasks,
        workers=complete,
        unreachable=[w for w in workers if w not in complete],
        taken_at=_utc(now),
    )


def _utc(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.UTC)
