"""Zombie tasks: still running past their hard time limit plus a grace, and the reaper for them.

A monitor sees a task through ``inspect().active()``, which carries no time limit; the limit is
resolved per task (its own ``time_limit``, else the worker's pool default, else a configured
default). Discovery costs one broadcast ``ping`` that stops listening shortly after the replies
stop coming (instead of kombu's fixed silence of ``timeout``), then ``inspect`` calls addressed
to the workers that answered, which return as soon as each of them replied.

Reaping is ``revoke(terminate=True)`` sent to the task's own worker. Celery forgets a task as
soon as it has signalled it, even when the process ignores the signal (it leaves ``active()``
and a second ``revoke`` answers ``tasks unknown``). So the reaper remembers what it signalled,
in Redis under the DLQ namespace, and escalates on a later run through ``morgue_kill_job``, a
remote-control command that :func:`register_kill_job` adds to workers running ``core.install``:
it finds the pool job of that task, if it is still running, and signals its process.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import redis
from kombu.exceptions import OperationalError
from kombu.messaging import Consumer

from core.options import Options, signal_number
from core.urls import redact_url

log = logging.getLogger(__name__)

CLEANUP_TASK = "celery_morgue.cleanup_zombie_tasks"
KILL_JOB_COMMAND = "morgue_kill_job"

# After the first ping reply, stop listening once no reply came for this long, or for a few
# times the first reply's latency when the cluster is slow (a loaded worker answers late).
_SETTLE_FLOOR = 0.05
_SETTLE_FACTOR = 3.0
# A signalled task is remembered this long at least (a few reap intervals otherwise).
_REMEMBER_FLOOR = 3600.0
_LAST_REPORT_TTL = 7 * 24 * 3600

_REGISTERED = re.compile(r"^(?P<name>.+?) \[(?P<info>[^\[\]]*)\]$")


class ClusterUnavailable(RuntimeError):
    """The broker could not be reached: nothing is known about the workers."""


# -- what the cluster is doing ------------------------------------------------------------


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


@contextmanager
def _broker(app: Any, timeout: float) -> Iterator[Any]:
    """A broker connection that fails fast, with errors turned into :class:`ClusterUnavailable`."""
    conn = app.connection_for_write()
    errors: tuple[type[BaseException], ...] = (OperationalError, OSError, redis.RedisError)
    try:
        errors += tuple(conn.connection_errors) + tuple(conn.channel_errors)
        try:
            conn.ensure_connection(max_retries=0, timeout=timeout)
            yield conn
        except errors as exc:
            raise ClusterUnavailable(
                f"cannot reach the broker at {_broker_text(app, conn)}: {_one_line(exc)}"
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
    if isinstance(url, str) and url:
        return redact_url(url)
    return str(conn.as_uri())  # kombu masks the password


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _nobody_listens(conn: Any) -> bool:
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


def _ping(app: Any, conn: Any, timeout: float) -> list[str]:
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


def _control(
    app: Any, command: str, arguments: dict[str, Any], workers: list[str], timeout: float
) -> dict[str, Any]:
    """``{worker: reply}`` for one remote-control command, on a connection of its own.

    Its own: kombu leaves a blocking pop pending on a connection whose wait for replies timed
    out, and that pop swallows the replies of the next call made on it (measured: a ping and
    then an inspect on one connection cost the inspect its whole timeout).
    """
    with _broker(app, timeout) as conn:
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
    with _broker(app, timeout) as conn:
        workers = [] if _nobody_listens(conn) else _ping(app, conn, timeout)
    if not workers:
        return ClusterSnapshot([], [], [], _utc(now if now is not None else time.time()))
    active = _control(app, "active", {"safe": True}, workers, timeout)
    replied_at = time.time()
    registered = _control(app, "registered", {"taskinfoitems": ["time_limit"]}, workers, timeout)
    stats = _control(app, "stats", {}, workers, timeout)
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


# -- revoking ------------------------------------------------------------------------------


@dataclass
class RevokeReport:
    terminated: list[str] = field(default_factory=list)
    already_gone: list[str] = field(default_factory=list)  # the worker no longer had it
    refused: dict[str, str] = field(default_factory=dict)  # task id -> the worker's error
    no_reply: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "terminated": list(self.terminated),
            "already_gone": list(self.already_gone),
            "refused": dict(self.refused),
            "no_reply": list(self.no_reply),
        }

    def extend(self, other: RevokeReport) -> None:
        self.terminated += other.terminated
        self.already_gone += other.already_gone
        self.refused.update(other.refused)
        self.no_reply += other.no_reply


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
            report.refused[task_id] = _one_line_text(reply["error"])
        return
    text = str(reply.get("ok", ""))
    done = set(text.removeprefix(prefix).split(", ")) if text.startswith(prefix) else set()
    for task_id in ids:
        (report.terminated if task_id in done else report.already_gone).append(task_id)


def _one_line_text(value: Any) -> str:
    return " ".join(str(value).split())


def revoke_tasks(
    app: Any,
    tasks: Iterable[ActiveTask],
    *,
    signal: str = "SIGTERM",
    timeout: float = 1.0,
) -> RevokeReport:
    """``revoke(terminate=True)`` each task on its own worker, and sort the workers' answers.

    A worker that cannot terminate (the threads pool) is reported under ``refused``; a task the
    worker no longer has under ``already_gone``.
    """
    signal_number(signal)  # a ValueError naming it before anything is sent
    grouped = _by_worker((task.id, task.worker) for task in tasks)
    report = RevokeReport()
    for worker, ids in grouped.items():
        arguments = {"task_id": ids, "terminate": True, "signal": signal}
        reply = _control(app, "revoke", arguments, [worker], timeout).get(worker)
        _sort_reply(report, ids, reply, "terminate: ")
    for task_id, error in report.refused.items():
        log.warning("celery-morgue: worker refused to terminate task %s: %s", task_id, error)
    return report


def kill_jobs(
    app: Any, tasks: Iterable[tuple[str, str]], *, signal: str = "SIGKILL", timeout: float = 1.0
) -> RevokeReport:
    """Signal the pool process still running each ``(task id, worker)``, even one Celery forgot.

    Needs workers that ran ``core.install`` (``morgue_kill_job``); others refuse.
    """
    signal_number(signal)
    grouped = _by_worker(tasks)
    report = RevokeReport()
    for worker, ids in grouped.items():
        arguments = {"task_ids": ids, "signal": signal}
        reply = _control(app, KILL_JOB_COMMAND, arguments, [worker], timeout).get(worker)
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


# -- the periodic cleanup ------------------------------------------------------------------


def namespace_of(prefix: str) -> str:
    """The DLQ's side-key namespace (``dlq:`` -> ``dlq@``), as in core.dlq."""
    return (prefix[:-1] if prefix.endswith(":") else prefix) + "@"


class SignalMemory:
    """Which tasks the reaper signalled, and with which step of the escalation, in one hash.

    Kept in Redis because each run may happen in any worker process on any host.
    """

    def __init__(self, client: redis.Redis, prefix: str, remember_for: float) -> None:
        self.client = client
        self.key = f"{namespace_of(prefix)}reaper:signalled"
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

    def memory(self, options: Options) -> SignalMemory:
        interval = options.reap_interval or 0.0
        remember_for = max(_REMEMBER_FLOOR, 10 * interval)
        return SignalMemory(self.capture.dlq.client, options.prefix, remember_for)

    def run(
        self,
        hard_limit: float | None = None,
        grace: float | None = None,
        dry_run: bool | None = None,
    ) -> dict[str, Any]:
        """Reap, trim the DLQ, replay the spool; return (and log, and keep) what was done."""
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
        report = reap(self.app, options, self.memory(options))
        self._housekeeping(report)
        self._publish(report, options)
        return report

    def _housekeeping(self, report: dict[str, Any]) -> None:
        """Replay this host's spool, then apply retention to queues nobody writes to."""
        report["spool_replayed"] = self.capture.replay_spool()
        try:
            report["dlq_remaining"] = self.capture.dlq.trim()
        except (redis.RedisError, OSError) as exc:
            report["errors"].append(f"DLQ trim: {_one_line(exc)}")

    def _publish(self, report: dict[str, Any], options: Options) -> None:
        summary = (
            f"{len(report['zombies'])} zombie(s); "
            + "; ".join(
                f"{name}: {len(r['terminated'])} terminated, {len(r['already_gone'])} gone, "
                f"{len(r['refused'])} refused, {len(r['no_reply'])} no reply"
                for name, r in report["signals"].items()
            )
            + (" (dry run)" if report["dry_run"] else "")
        )
        log.info("celery-morgue: reaper: %s", summary)
        for error in report["errors"]:
            log.warning("celery-morgue: reaper: %s", error)
        log.info("celery-morgue: reaper report: %s", json.dumps(report, sort_keys=True))
        try:
            key = f"{namespace_of(options.prefix)}reaper:last"
            self.capture.dlq.client.set(key, json.dumps(report), ex=_LAST_REPORT_TTL)
        except (redis.RedisError, OSError) as exc:
            log.warning("celery-morgue: could not keep the reaper report: %s", exc)


def reap(app: Any, options: Options, memory: SignalMemory) -> dict[str, Any]:
    """One reaper pass: signal each zombie, escalating for those signalled on earlier runs.

    Step ``n`` of ``options.reap_signals`` goes to a task signalled ``n`` times before (the last
    signal repeats). A task signalled before that ``active()`` no longer lists, Celery forgot
    after signalling it; ``morgue_kill_job`` tells whether its process still runs it.
    """
    signals = options.reap_signals
    report: dict[str, Any] = {
        "ran_at": dt.datetime.now(dt.UTC).isoformat(),
        "dry_run": options.reap_dry_run,
        "hard_limit": options.hard_limit,
        "grace": options.grace,
        "signals": {name: RevokeReport().as_dict() for name in dict.fromkeys(signals)},
        "zombies": [],
        "skipped": [],
        "errors": [],
    }
    try:
        snapshot = active_tasks(
            app,
            hard_limit=options.hard_limit,
            grace=options.grace,
            timeout=options.inspect_timeout,
        )
    except ClusterUnavailable as exc:
        # Not raised: a failing cleanup would land in the DLQ it keeps, every interval.
        report["errors"].append(str(exc))
        report["workers"], report["unreachable"] = [], []
        return report
    now = snapshot.taken_at.timestamp()
    report["workers"] = snapshot.workers
    report["unreachable"] = snapshot.unreachable
    try:
        signalled = memory.load(now)
    except (redis.RedisError, OSError) as exc:
        report["errors"].append(f"reaper memory: {_one_line(exc)}")
        signalled = {}

    listed = {task.id for task in snapshot.tasks}
    by_signal: dict[str, list[ActiveTask]] = {}
    for task in snapshot.zombies:
        record = signalled.get(task.id)
        # Another worker runs it now (redelivered): that execution starts the escalation over.
        step = int(record["step"]) + 1 if record and record.get("worker") == task.worker else 0
        signal = signals[min(step, len(signals) - 1)]
        entry = {**task.as_dict(), "signal": signal, "step": step}
        if task.worker not in snapshot.workers:
            report["skipped"].append({**entry, "reason": "worker did not answer every inspect"})
            continue
        report["zombies"].append(entry)
        by_signal.setdefault(signal, []).append(task)

    # Signalled earlier, no longer listed: gone, or a process still running what Celery forgot.
    forgotten: dict[str, list[tuple[str, str]]] = {}
    for task_id, record in signalled.items():
        worker = str(record.get("worker", ""))
        if task_id in listed or worker not in snapshot.workers:
            continue  # listed: handled above; worker away: ask again on a later run
        step = int(record.get("step", 0)) + 1
        forgotten.setdefault(signals[min(step, len(signals) - 1)], []).append((task_id, worker))

    if options.reap_dry_run:
        report["followed_up"] = [
            {"id": task_id, "worker": worker, "signal": signal}
            for signal, pairs in forgotten.items()
            for task_id, worker in pairs
        ]
        return report

    steps = {entry["id"]: entry["step"] for entry in report["zombies"]}
    for signal, tasks in by_signal.items():
        result = _guarded(report, revoke_tasks, app, tasks, signal, options.inspect_timeout)
        _merge(report, signal, result)
        for task in tasks:
            if task.id in result.terminated:
                _remember(report, memory, task.id, task.worker, steps[task.id], now)
            elif task.id in result.already_gone or task.id in result.refused:
                _forget(report, memory, [task.id])
    for signal, pairs in forgotten.items():
        result = _guarded(report, kill_jobs, app, pairs, signal, options.inspect_timeout)
        _merge(report, signal, result)
        for task_id, worker in pairs:
            if task_id in result.terminated:
                step = int(signalled[task_id].get("step", 0)) + 1
                _remember(report, memory, task_id, worker, step, now)
        _forget(report, memory, result.already_gone + list(result.refused))
    return report


def _guarded(
    report: dict[str, Any],
    call: Callable[..., RevokeReport],
    app: Any,
    tasks: Any,
    signal: str,
    timeout: float,
) -> RevokeReport:
    """Run one revoke round; a broker failure is reported, the rest of the run goes on."""
    try:
        result = call(app, tasks, signal=signal, timeout=timeout)
    except ClusterUnavailable as exc:
        report["errors"].append(str(exc))
        return RevokeReport()
    return result


def _merge(report: dict[str, Any], signal: str, result: RevokeReport) -> None:
    merged = RevokeReport(**report["signals"][signal])
    merged.extend(result)
    report["signals"][signal] = merged.as_dict()


def _remember(
    report: dict[str, Any], memory: SignalMemory, task_id: str, worker: str, step: int, now: float
) -> None:
    try:
        memory.remember(task_id, worker, step, now)
    except (redis.RedisError, OSError) as exc:
        report["errors"].append(f"reaper memory: {_one_line(exc)}")


def _forget(report: dict[str, Any], memory: SignalMemory, task_ids: list[str]) -> None:
    try:
        memory.forget(task_ids)
    except (redis.RedisError, OSError) as exc:
        report["errors"].append(f"reaper memory: {_one_line(exc)}")


def register_cleanup_task(app: Any, reaper: Reaper) -> Any:
    """``celery_morgue.cleanup_zombie_tasks`` on ``app``: keyword overrides for one run."""

    def cleanup_zombie_tasks(
        hard_limit: float | None = None,
        grace: float | None = None,
        dry_run: bool | None = None,
    ) -> dict[str, Any]:
        return reaper.run(hard_limit=hard_limit, grace=grace, dry_run=dry_run)

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
