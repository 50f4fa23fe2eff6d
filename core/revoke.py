"""Signalling running tasks on their own workers, and sorting what the workers answer.

``revoke(terminate=True)`` is Celery's way. Celery forgets a task as soon as it has signalled
it, even when the process ignores the signal (it leaves ``active()`` and a second ``revoke``
answers ``tasks unknown``). :func:`kill_jobs` reaches such a process anyway, through
``morgue_kill_job``, a remote-control command that :func:`register_kill_job` adds to workers
running ``core.install``: it finds the pool job of that task, if it is still running, and
signals its process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from celery_morgue.core.broadcast import control
from celery_morgue.core.options import DEFAULT_INSPECT_TIMEOUT, signal_number
from celery_morgue.core.wording import one_line

log = logging.getLogger(__name__)

KILL_JOB_COMMAND = "morgue_kill_job"


class RunningTask(Protocol):
    """What revoking needs of a task (a ``core.zombies.ActiveTask``): its id and its worker."""

    @property
    def id(self) -> str: ...

    @property
    def worker(self) -> str: ...


@dataclass
class RevokeReport:
    terminated: list[str] = field(default_factory=list)
    already_gone: list[str] = field(default_factory=list)  # the worker no longer had it
    refused: dict[str, str] = field(default_factory=dict)  # task id -> the worker's error
    no_reply: list[str] = field(default_factory=list)
    # Not asked at all: ``keepalive`` said to stop (the reaper lost its run lock) before then.
    not_sent: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "terminated": list(self.terminated),
            "already_gone": list(self.already_gone),
            "refused": dict(self.refused),
            "no_reply": list(self.no_reply),
            "not_sent": list(self.not_sent),
        }

    def extend(self, other: RevokeReport) -> None:
        self.terminated += other.terminated
        self.already_gone += other.already_gone
        self.refused.update(other.refused)
        self.no_reply += other.no_reply
        self.not_sent += other.not_sent


Keepalive = Callable[[], bool]


def _go_on(keepalive: Keepalive | None) -> bool:
    """Whether to ask the next worker: ``keepalive()`` (the reaper renews its run lock there)."""
    return keepalive is None or bool(keepalive())


def _by_worker(tasks: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for task_id, worker in tasks:
        ids = grouped.setdefault(worker, [])
        if task_id not in ids:
            ids.append(task_id)
    return grouped


def _sort_reply(report: RevokeReport, ids: list[str], reply: Any, prefix: str) -> None:
    """File each id by the worker's answer: ``'<prefix>id, id'``, ``tasks unknown`` or an error."""
    if not isinstance(reply, dict):
        report.no_reply += ids
        return
    if "error" in reply:
        for task_id in ids:
            report.refused[task_id] = one_line(reply["error"])
        return
    text = str(reply.get("ok", ""))
    done = set(text.removeprefix(prefix).split(", ")) if text.startswith(prefix) else set()
    for task_id in ids:
        (report.terminated if task_id in done else report.already_gone).append(task_id)


def revoke_tasks(
    app: Any,
    tasks: Iterable[RunningTask],
    *,
    signal: str = "SIGTERM",
    timeout: float = DEFAULT_INSPECT_TIMEOUT,
    keepalive: Keepalive | None = None,
) -> RevokeReport:
    """``revoke(terminate=True)`` each task on its own worker, and sort the workers' answers.

    A worker that cannot terminate (the threads pool) is reported under ``refused``; a task the
    worker no longer has under ``already_gone``. ``keepalive`` is called before each worker
    (each may take ``timeout``); once it answers False nothing more is sent and the tasks left
    are reported under ``not_sent``.
    """
    signal_number(signal)  # a ValueError naming it before anything is sent
    grouped = _by_worker((task.id, task.worker) for task in tasks)
    report = RevokeReport()
    for worker, ids in grouped.items():
        if report.not_sent or not _go_on(keepalive):
            report.not_sent += ids
            continue
        arguments = {"task_id": ids, "terminate": True, "signal": signal}
        reply = control(app, "revoke", arguments, [worker], timeout).get(worker)
        _sort_reply(report, ids, reply, "terminate: ")
    for task_id, error in report.refused.items():
        log.warning("celery-morgue: worker refused to terminate task %s: %s", task_id, error)
    return report


def kill_jobs(
    app: Any,
    tasks: Iterable[tuple[str, str]],
    *,
    signal: str = "SIGKILL",
    timeout: float = DEFAULT_INSPECT_TIMEOUT,
    keepalive: Keepalive | None = None,
) -> RevokeReport:
    """Signal the pool process still running each ``(task id, worker)``, even one Celery forgot.

    Needs workers that ran ``core.install`` (``morgue_kill_job``); others refuse. ``keepalive``
    as for :func:`revoke_tasks`.
    """
    signal_number(signal)
    grouped = _by_worker(tasks)
    report = RevokeReport()
    for worker, ids in grouped.items():
        if report.not_sent or not _go_on(keepalive):
            report.not_sent += ids
            continue
        arguments = {"task_ids": ids, "signal": signal}
        reply = control(app, KILL_JOB_COMMAND, arguments, [worker], timeout).get(worker)
        if isinstance(reply, dict) and str(reply.get("error", "")).startswith("KeyError"):
            reply = {"error": f"{worker} has no {KILL_JOB_COMMAND}: core.install not run there"}
        _sort_reply(report, ids, reply, "kill_job: ")
    return report


# -- the worker side of kill_jobs ----------------------------------------------------------


def kill_job(state: Any, task_ids: Sequence[str] = (), signal: str = "SIGKILL", **_: Any) -> Any:
    """Signal the pool processes still running these tasks (by the pool's own job table)."""
    signum = signal_number(signal)
    pool = state.consumer.pool
    inner = getattr(pool, "_pool", None)
    jobs = getattr(inner, "_cache", None)
    if jobs is None:
        raise NotImplementedError(f"{type(pool).__name__} does not implement kill_job")
    wanted = set(task_ids)
    killed: list[str] = []
    for job in list(jobs.values()):
        task_id = getattr(job, "correlation_id", None)
        if task_id in wanted and not job.ready():
            for pid in filter(partial(_process_running, inner), job.worker_pids()):
                log.warning("celery-morgue: sending %s to pid %s (task %s)", signal, pid, task_id)
                pool.terminate_job(pid, signum)
                killed.append(task_id)
    return {"ok": "kill_job: " + (", ".join(dict.fromkeys(killed)) or "tasks unknown")}


def _process_running(pool: Any, pid: int) -> bool:
    """False for a pool process that exited but whose job the pool has not settled yet."""
    find = getattr(pool, "_process_by_pid", None)
    if find is None:
        return True
    process, _ = find(pid)
    return process is not None and process.exitcode is None


def register_kill_job() -> None:
    """Add ``morgue_kill_job`` to Celery's remote-control commands (a process-wide registry)."""
    from celery.worker.control import Panel, control_command

    if KILL_JOB_COMMAND not in Panel.data:
        control_command(
            name=KILL_JOB_COMMAND,
            variadic="task_ids",  # like revoke: `celery control morgue_kill_job id1 id2`
            signature="[id1 [id2 [... [idN]]]]",
        )(kill_job)
