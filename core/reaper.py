"""The periodic cleanup: reap zombie tasks, escalating on later runs, then keep the DLQ tidy.

Celery forgets a task as soon as it has signalled it, so the reaper remembers what it
signalled, in Redis under the DLQ namespace (each run may happen in any worker process on any
host), and escalates on a later run through ``morgue_kill_job`` (see :mod:`core.revoke`).

One run at a time acts: a run takes :class:`RunLock` (a Redis key with a TTL, owned by a random
token, released only by its owner) and a run that finds it taken does nothing but report that
it skipped, so two beats started by mistake, or a manual run during a scheduled one, act once.
The lock is renewed before each worker is asked to signal (each may take the inspect timeout),
and a run that finds it lost stops signalling.

A run signals only the workers whose ``morgue_active`` says they write to the same DLQ as this
installation (same prefix, same Redis), with their own ``hard_limit``: other teams' apps on the
same broker, and workers of another DLQ, are listed in the report under ``skipped`` and left
alone (their own reaper, if any, reaps them). ``reap_uninstalled_workers=True`` also reaps the
workers that do not say which DLQ they write to: no ``core.install`` there (asked with
``inspect``; the reaper's own ``hard_limit`` applies), or an older celery-morgue.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import uuid
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

import redis

from celery_morgue.core.broadcast import ClusterUnavailable
from celery_morgue.core.dlq import namespace_for
from celery_morgue.core.options import Options
from celery_morgue.core.reap_report import ReapReport, SkippedReap
from celery_morgue.core.reaper_totals import count_run
from celery_morgue.core.redis_cluster import DLQClient
from celery_morgue.core.revoke import RevokeReport, kill_jobs, revoke_tasks
from celery_morgue.core.wording import one_line
from celery_morgue.core.worker_limits import dlq_identity
from celery_morgue.core.zombies import CLEANUP_TASK, ActiveTask, ClusterSnapshot, active_tasks

log = logging.getLogger(__name__)

# A signalled task is remembered this long at least (a few reap intervals otherwise).
_REMEMBER_FLOOR = 3600.0
_LAST_REPORT_TTL = 7 * 24 * 3600
# The run lock outlives a run that died holding it by at most this long (or 30 inspect
# timeouts, if longer); a live run renews it before each step that may wait on workers.
_LOCK_TTL_FLOOR = 60.0
_LOCK_TTL_TIMEOUTS = 30

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""


class RunLock:
    """At most one reaper run at a time, across processes and hosts: one key with a TTL.

    Its value, a random token with the holder's host, pid and start time, is what a skipped run
    reports; only the holder of the token deletes or renews it, so a run whose lock expired
    under it cannot release the lock of the run that took over.
    """

    def __init__(self, client: DLQClient, prefix: str, ttl: float) -> None:
        self.client = client
        self.key = f"{namespace_for(prefix)}reaper:lock"
        self.ttl_ms = max(1, int(ttl * 1000))
        self.value: str | None = None

    def acquire(self) -> bool:
        value = json.dumps(
            {
                "token": uuid.uuid4().hex,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "since": dt.datetime.now(dt.UTC).isoformat(),
            }
        )
        if self.client.set(self.key, value, nx=True, px=self.ttl_ms):
            self.value = value
            return True
        return False

    def holder(self) -> dict[str, Any] | None:
        """Who holds the lock (host, pid, since), without the token; None when free."""
        raw = self.client.get(self.key)
        if raw is None:
            return None
        try:
            held = json.loads(raw)
        except ValueError:
            return {"raw": repr(raw)}
        if not isinstance(held, dict):
            return {"raw": repr(raw)}
        return {name: value for name, value in held.items() if name != "token"}

    def renew(self) -> bool:
        """Push the expiry back; False when the lock is no longer ours."""
        if self.value is None:
            return False
        return bool(self.client.eval(_RENEW, 1, self.key, self.value, self.ttl_ms))

    def release(self) -> bool:
        """Delete the lock if it is still ours; False when it expired or another run holds it."""
        if self.value is None:
            return False
        value, self.value = self.value, None
        return bool(self.client.eval(_RELEASE, 1, self.key, value))


def lock_ttl(options: Options) -> float:
    return max(_LOCK_TTL_FLOOR, _LOCK_TTL_TIMEOUTS * options.inspect_timeout)


def policy(options: Options) -> str:
    """The reaping policy of ``options`` in one line, as the worker logs it when it starts."""
    limit = "hard limit: the call's, else the task's, else the pool's"
    if options.hard_limit is None:
        limit += "; only tasks with a known limit are reaped (hard_limit=None)"
    else:
        limit += f", else {options.hard_limit:g} s (hard_limit)"
    if options.reap_interval is None:
        schedule = "no beat entry (reap_interval=None)"
    else:
        schedule = f"every {options.reap_interval:g} s"
    return (
        f"{limit}; zombie at limit + {options.grace:g} s grace; {schedule}; "
        f"signals {', then '.join(options.reap_signals)}; "
        f"dry run {'on' if options.reap_dry_run else 'off'}"
    )


class SignalMemory:
    """Which tasks the reaper signalled, and with which step of the escalation, in one hash.

    Kept in Redis because each run may happen in any worker process on any host.
    """

    def __init__(self, client: DLQClient, prefix: str, remember_for: float) -> None:
        self.client = client
        self.key = f"{namespace_for(prefix)}reaper:signalled"
        self.remember_for = remember_for

    def load(self, now: float) -> dict[str, dict[str, Any]]:
        records: dict[str, dict[str, Any]] = {}
        stale: list[str] = []
        for raw_id, raw in self.client.hgetall(self.key).items():
            task_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
            try:
                record = json.loads(raw)
                fresh = now - float(record["at"]) < self.remember_for
            except (ValueError, TypeError, KeyError):
                fresh = False
            if fresh and isinstance(record, dict):
                records[task_id] = record
            else:
                stale.append(task_id)
        if stale:
            self.client.hdel(self.key, *stale)
        return records

    def remember(self, task_id: str, worker: str, step: int, now: float) -> None:
        record = json.dumps({"worker": worker, "step": step, "at": now})
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(self.key, task_id, record)
        pipe.expire(self.key, int(self.remember_for))
        pipe.execute()

    def forget(self, task_ids: Iterable[str]) -> None:
        ids = list(task_ids)
        if ids:
            self.client.hdel(self.key, *ids)


class Reaper:
    """The work of one ``cleanup_zombie_tasks`` run for an installed app."""

    def __init__(self, app: Any, options: Options, capture: Any) -> None:
        self.app = app
        self.options = options
        self.capture = capture  # core.capture.FailureCapture: its DLQ client and spool

    @property
    def dlq(self) -> str:
        """This installation's DLQ identity, as its workers' ``morgue_active`` says theirs."""
        return dlq_identity(self.options.prefix, self.capture.redis_url)

    def memory(self, options: Options) -> SignalMemory:
        interval = options.reap_interval or 0.0
        remember_for = max(_REMEMBER_FLOOR, 10 * interval)
        return SignalMemory(self.capture.dlq.client, options.prefix, remember_for)

    def lock(self, options: Options) -> RunLock:
        return RunLock(self.capture.dlq.client, options.prefix, lock_ttl(options))

    def log_policy(self, sender: Any = None, **_: Any) -> None:
        """``worker_ready`` receiver: the reaping policy, once, when a worker of this app starts."""
        if getattr(sender, "app", self.app) is self.app:
            log.info("celery-morgue: reaper policy: %s", policy(self.options))

    def run(
        self,
        hard_limit: float | None = None,
        grace: float | None = None,
        dry_run: bool | None = None,
    ) -> ReapReport | SkippedReap:
        """Reap, trim the DLQ, replay the spool; return (and log, and keep) what was done.

        While another run holds the run lock, nothing but a report that this one skipped.
        """
        overrides: dict[str, Any] = {
            name: value
            for name, value in (
                ("hard_limit", hard_limit),
                ("grace", grace),
                ("reap_dry_run", dry_run),
            )
            if value is not None
        }
        options = replace(self.options, **overrides) if overrides else self.options
        lock = self.lock(options)
        lock_errors: list[str] = []
        try:
            held: bool | None = lock.acquire()
        except (redis.RedisError, OSError) as exc:
            # No lock without Redis; reaping matters more than the rare overlap it prevents.
            held = None
            lock_errors.append(f"run lock: {one_line(exc)}; ran without it")
        if held is False:
            return self._skipped(options, lock)
        keepalive = lock.renew if held else None
        try:
            report = reap(
                self.app,
                options,
                self.memory(options),
                keepalive=keepalive,
                dlq=self.dlq,
                # An override for this run applies to every worker; else each its own options.
                worker_defaults=hard_limit is None and grace is None,
            )
            errors = [*lock_errors, *report.errors]
            if _still_ours(errors, keepalive):
                report = self._housekeeping(report, errors)
            report = replace(report, errors=tuple(errors))
            self._publish(report, options)
            return report
        finally:
            if held:
                try:
                    lock.release()
                except (redis.RedisError, OSError) as exc:
                    log.warning("celery-morgue: reaper: could not release the run lock: %s", exc)

    def _skipped(self, options: Options, lock: RunLock) -> SkippedReap:
        """Another run holds the lock: say so (returned, logged, kept), and do nothing else."""
        try:
            holder = lock.holder()
        except (redis.RedisError, OSError):
            holder = None
        report = SkippedReap(
            ran_at=dt.datetime.now(dt.UTC).isoformat(),
            dry_run=options.reap_dry_run,
            holder=holder,
        )
        log.info(
            "celery-morgue: reaper: skipped, another run is under way (%s)",
            json.dumps(holder, sort_keys=True),
        )
        try:
            key = f"{namespace_for(options.prefix)}reaper:skipped"
            self.capture.dlq.client.set(key, json.dumps(report.as_dict()), ex=_LAST_REPORT_TTL)
        except (redis.RedisError, OSError) as exc:
            log.warning("celery-morgue: could not keep the skipped run's report: %s", exc)
        return report

    def _housekeeping(self, report: ReapReport, errors: list[str]) -> ReapReport:
        """Replay this host's spool, then apply retention to queues nobody writes to."""
        replayed = self.capture.replay_spool()
        try:
            remaining: dict[str, int] | None = self.capture.dlq.trim()
        except (redis.RedisError, OSError) as exc:
            errors.append(f"DLQ trim: {one_line(exc)}")
            remaining = None
        return replace(report, spool_replayed=replayed, dlq_remaining=remaining)

    def _publish(self, report: ReapReport, options: Options) -> None:
        summary = (
            f"{len(report.zombies)} zombie(s); "
            + "; ".join(
                f"{name}: {len(r.terminated)} terminated, {len(r.already_gone)} gone, "
                f"{len(r.refused)} refused, {len(r.no_reply)} no reply"
                for name, r in report.signals.items()
            )
            + (" (dry run)" if report.dry_run else "")
        )
        log.info("celery-morgue: reaper: %s", summary)
        for error in report.errors:
            log.warning("celery-morgue: reaper: %s", error)
        data = report.as_dict()
        log.info("celery-morgue: reaper report: %s", json.dumps(data, sort_keys=True))
        try:
            pipe = self.capture.dlq.client.pipeline(transaction=False)
            key = f"{namespace_for(options.prefix)}reaper:last"
            pipe.set(key, json.dumps(data), ex=_LAST_REPORT_TTL)
            count_run(pipe, options.prefix, report)
            pipe.execute()
        except (redis.RedisError, OSError) as exc:
            log.warning("celery-morgue: could not keep the reaper report: %s", exc)


_LOCK_LOST = "run lock lost: another run may act now; this one stopped"


def _still_ours(errors: list[str], keepalive: Callable[[], bool] | None) -> bool:
    """Renew the run lock before a step that acts; False (in ``errors`` once) when it was lost."""
    if keepalive is None:
        return True
    if _LOCK_LOST in errors:
        return False
    try:
        kept = keepalive()
    except (redis.RedisError, OSError) as exc:
        errors.append(f"run lock: {one_line(exc)}")
        return True  # Redis away: carry on as a run without the lock would
    if not kept:
        errors.append(_LOCK_LOST)
    return kept


_NO_INSTALL = (
    "worker without core.install (asked with inspect): not reaped unless "
    "reap_uninstalled_workers=True"
)
_UNNAMED_DLQ = (
    "worker does not say which DLQ it writes to (an older celery-morgue): not reaped unless "
    "reap_uninstalled_workers=True"
)


def not_reaped_because(
    snapshot: ClusterSnapshot, worker: str, dlq: str, uninstalled: bool
) -> str | None:
    """Why this reaper leaves ``worker``'s zombies alone; None when it reaps them."""
    if worker not in snapshot.workers:
        return "worker did not answer every inspect"
    if worker not in snapshot.dlqs:  # no morgue_active: asked with inspect
        return None if uninstalled else _NO_INSTALL
    theirs = snapshot.dlqs[worker]
    if theirs is None:
        return None if uninstalled else _UNNAMED_DLQ
    if theirs != dlq:
        return f"worker of another DLQ ({theirs}, this reaper's is {dlq}): its own reaper reaps it"
    return None


def reap(
    app: Any,
    options: Options,
    memory: SignalMemory,
    keepalive: Callable[[], bool] | None = None,
    *,
    dlq: str,
    worker_defaults: bool = True,
) -> ReapReport:
    """One reaper pass: signal each zombie, escalating for those signalled on earlier runs.

    Only the zombies of workers of the DLQ ``dlq`` (see :func:`not_reaped_because`); with
    ``worker_defaults`` each worker's own ``hard_limit`` and ``grace`` apply to its tasks.
    Step ``n`` of ``options.reap_signals`` goes to a task signalled ``n`` times before (the last
    signal repeats). A task signalled before that the workers no longer list, Celery forgot
    after signalling it; ``morgue_kill_job`` tells whether its process still runs it.
    ``keepalive`` (the run lock's renewal) is called before each worker is asked to signal;
    when it answers False the run stops signalling.
    """
    signals = options.reap_signals
    ran_at = dt.datetime.now(dt.UTC).isoformat()
    results = {name: RevokeReport() for name in dict.fromkeys(signals)}
    try:
        snapshot = active_tasks(
            app,
            hard_limit=options.hard_limit,
            grace=options.grace,
            timeout=options.inspect_timeout,
            worker_defaults=worker_defaults,
        )
    except ClusterUnavailable as exc:
        # Not raised: a failing cleanup would land in the DLQ it keeps, every interval.
        return ReapReport(
            ran_at=ran_at,
            dry_run=options.reap_dry_run,
            hard_limit=options.hard_limit,
            grace=options.grace,
            signals=results,
            errors=(str(exc),),
        )
    now = snapshot.taken_at.timestamp()
    errors: list[str] = []
    try:
        signalled = memory.load(now)
    except (redis.RedisError, OSError) as exc:
        errors.append(f"reaper memory: {one_line(exc)}")
        signalled = {}

    listed = {task.id for task in snapshot.tasks}
    zombies: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    by_signal: dict[str, list[ActiveTask]] = {}
    for task in snapshot.zombies:
        record = signalled.get(task.id)
        # Another worker runs it now (redelivered): that execution starts the escalation over.
        step = int(record["step"]) + 1 if record and record.get("worker") == task.worker else 0
        signal = signals[min(step, len(signals) - 1)]
        entry = {**task.as_dict(), "signal": signal, "step": step}
        reason = not_reaped_because(snapshot, task.worker, dlq, options.reap_uninstalled_workers)
        if reason is not None:
            skipped.append({**entry, "reason": reason})
            continue
        zombies.append(entry)
        by_signal.setdefault(signal, []).append(task)

    # Signalled earlier, no longer listed: gone, or a process still running what Celery forgot.
    forgotten: dict[str, list[tuple[str, str]]] = {}
    for task_id, record in signalled.items():
        worker = str(record.get("worker", ""))
        if task_id in listed or not_reaped_because(snapshot, worker, dlq, True) is not None:
            continue  # listed: handled above; worker away: ask again on a later run
        step = int(record.get("step", 0)) + 1
        forgotten.setdefault(signals[min(step, len(signals) - 1)], []).append((task_id, worker))

    followed_up = None
    if options.reap_dry_run:
        followed_up = tuple(
            {"id": task_id, "worker": worker, "signal": signal}
            for signal, pairs in forgotten.items()
            for task_id, worker in pairs
        )
    else:

        def renewed() -> bool:
            return _still_ours(errors, keepalive)

        steps = {entry["id"]: entry["step"] for entry in zombies}
        for signal, tasks in by_signal.items():
            if _LOCK_LOST in errors:
                break
            result = _guarded(errors, revoke_tasks, app, tasks, signal, options, renewed)
            results[signal].extend(result)
            for task in tasks:
                if task.id in result.terminated:
                    _remember(errors, memory, task.id, task.worker, steps[task.id], now)
                elif task.id in result.already_gone or task.id in result.refused:
                    _forget(errors, memory, [task.id])
        for signal, pairs in forgotten.items():
            if _LOCK_LOST in errors:
                break
            result = _guarded(errors, kill_jobs, app, pairs, signal, options, renewed)
            results[signal].extend(result)
            for task_id, worker in pairs:
                if task_id in result.terminated:
                    step = int(signalled[task_id].get("step", 0)) + 1
                    _remember(errors, memory, task_id, worker, step, now)
            _forget(errors, memory, result.already_gone + list(result.refused))
    return ReapReport(
        ran_at=ran_at,
        dry_run=options.reap_dry_run,
        hard_limit=options.hard_limit,
        grace=options.grace,
        signals=results,
        zombies=tuple(zombies),
        skipped=tuple(skipped),
        errors=tuple(errors),
        workers=tuple(snapshot.workers),
        unreachable=tuple(snapshot.unreachable),
        dlq=dlq,
        followed_up=followed_up,
    )


def _guarded(
    errors: list[str],
    call: Callable[..., RevokeReport],
    app: Any,
    tasks: Any,
    signal: str,
    options: Options,
    keepalive: Callable[[], bool],
) -> RevokeReport:
    """Run one revoke round; a broker failure is reported, the rest of the run goes on."""
    try:
        result = call(
            app, tasks, signal=signal, timeout=options.inspect_timeout, keepalive=keepalive
        )
    except ClusterUnavailable as exc:
        errors.append(str(exc))
        return RevokeReport()
    return result


def _remember(
    errors: list[str], memory: SignalMemory, task_id: str, worker: str, step: int, now: float
) -> None:
    try:
        memory.remember(task_id, worker, step, now)
    except (redis.RedisError, OSError) as exc:
        errors.append(f"reaper memory: {one_line(exc)}")


def _forget(errors: list[str], memory: SignalMemory, task_ids: list[str]) -> None:
    try:
        memory.forget(task_ids)
    except (redis.RedisError, OSError) as exc:
        errors.append(f"reaper memory: {one_line(exc)}")


def register_cleanup_task(app: Any, reaper: Reaper) -> Any:
    """``celery_morgue.cleanup_zombie_tasks`` on ``app``: keyword overrides for one run."""

    def cleanup_zombie_tasks(
        hard_limit: float | None = None,
        grace: float | None = None,
        dry_run: bool | None = None,
    ) -> dict[str, Any]:
        # A dict of JSON types: result backends store what a task returns.
        return reaper.run(hard_limit=hard_limit, grace=grace, dry_run=dry_run).as_dict()

    return app.task(name=CLEANUP_TASK, shared=False, ignore_result=True)(cleanup_zombie_tasks)


def beat_entry(interval: float) -> dict[str, Any]:
    # Expiring after one interval: a beat that ran while no worker did sends no backlog.
    return {"task": CLEANUP_TASK, "schedule": interval, "options": {"expires": interval}}


def ensure_beat_entry(app: Any, interval: float) -> None:
    """Add the cleanup to ``app.conf.beat_schedule`` unless an entry of that name is there.

    Adds a key (the user's entries stay), and leaves an entry of that name the user wrote.
    """
    schedule = app.conf.beat_schedule
    if CLEANUP_TASK not in schedule:
        schedule[CLEANUP_TASK] = beat_entry(interval)
