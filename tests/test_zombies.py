"""Zombie tasks on real prefork (and threads) workers: found, aged, revoked, escalated.

tests/test_reaper_limits.py covers the limits the workers enforce, their clocks and the run lock.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid

import pytest
import redis
from celery import Celery

from celery_morgue.core.dlq import DeadLetterQueue
from celery_morgue.core.spool import spool_for
from celery_morgue.core.zombies import (
    ActiveTask,
    ClusterUnavailable,
    active_tasks,
    build_snapshot,
    revoke_tasks,
)
from celery_morgue.tui.demo.processes import RedisServer, free_port, pid_alive
from tests.helpers import (
    SIGNALLED,
    Cluster,
    make_entry,
    reports,
    stream_ms,
    wait_for,
    wait_for_redis_clock,
    zombie_ids,
)

# -- finding them ----------------------------------------------------------------------


@pytest.mark.redis
def test_no_worker_gives_an_empty_snapshot_without_a_broadcast() -> None:
    with RedisServer() as server:
        app = Celery("lonely", broker=server.url)
        snapshot = active_tasks(app, timeout=30)
        assert snapshot.tasks == []
        assert snapshot.workers == []
        assert snapshot.unreachable == []
        assert snapshot.zombies == []
        # Nobody subscribed, so no ping went out and nothing waited for replies.
        stats = redis.Redis.from_url(server.url).info("commandstats")
        assert "cmdstat_publish" not in stats
        assert snapshot.as_dict()["tasks"] == []
        app.close()


def test_an_unreachable_broker_is_a_one_line_error_without_the_password() -> None:
    app = Celery("away", broker=f"redis://:hunter2@127.0.0.1:{free_port()}/0")
    with pytest.raises(ClusterUnavailable) as error:
        active_tasks(app)
    message = str(error.value)
    assert "hunter2" not in message
    assert "***" in message
    assert "\n" not in message
    task = ActiveTask("id", "t", "w@h", None, None, None, 1.0, False, False, "()", "{}")
    with pytest.raises(ClusterUnavailable):
        revoke_tasks(app, [task])
    app.close()


@pytest.mark.slow
def test_a_task_past_the_threshold_is_found_with_its_age_and_revoked(cluster: Cluster) -> None:
    worker = cluster.worker()
    sent = time.monotonic()
    task_id, _ = cluster.send(worker, "sleep", 120)
    cluster.wait_older_than(task_id, 2.5)

    probe = time.time()
    snapshot = active_tasks(cluster.app, hard_limit=2, grace=0, now=probe)
    answered = time.monotonic()
    assert snapshot.workers == [worker.name]
    assert snapshot.unreachable == []
    [task] = snapshot.tasks
    assert task.id == task_id
    assert task.name == "tests.workerapp.sleep"
    assert task.worker == worker.name
    assert task.pid in worker.child_pids()
    assert task.hard_limit == 2.0  # no limit of its own, none in the pool: the default
    assert (task.hard_limit_source, task.source) == ("default", "worker")
    assert task.zombie
    assert not task.redelivered
    assert task.args == "[120]"
    assert task.queue == "celery"
    assert task.age is not None and task.started_at is not None
    # The age is the worker's (same host: one monotonic clock): past what it was when the wait
    # saw it, and no more than the time since the send (the start comes after it; how long
    # after depends on the machine's load, so it bounds nothing).
    assert 2.5 < task.age <= answered - sent
    assert task.started_at.timestamp() == pytest.approx(probe - task.age, abs=1e-6)
    [raw] = cluster.raw_active(worker)
    assert task.started_at.timestamp() == pytest.approx(float(raw["time_start"]), abs=0.5)
    assert snapshot.zombies == [task]
    assert json.loads(json.dumps(snapshot.as_dict()))["tasks"][0]["zombie"] is True

    report = revoke_tasks(cluster.app, snapshot.zombies)
    assert report.terminated == [task_id]
    assert report.already_gone == report.no_reply == []
    assert report.refused == {}
    wait_for(lambda: not cluster.raw_active(worker), timeout=10)
    revoked = wait_for(lambda: cluster.client.get(f"revoked:{task_id}"), timeout=10)
    assert isinstance(revoked, bytes)
    assert json.loads(revoked) == {"terminated": True, "signum": "15"}
    assert task.pid is not None
    wait_for(lambda: not pid_alive(task.pid), timeout=10)

    # Revoking it again: the worker no longer has it.
    again = revoke_tasks(cluster.app, [task])
    assert again.already_gone == [task_id]
    assert again.terminated == []


def test_the_task_and_pool_limits_win_over_the_default(cluster: Cluster) -> None:
    worker = cluster.worker(concurrency=2, extra=("--time-limit", "50"))
    own_limit, _ = cluster.send(worker, "sleep_with_time_limit", 120)
    pool_limit, _ = cluster.send(worker, "sleep", 120)
    cluster.wait_older_than(own_limit, 1.5)
    cluster.wait_older_than(pool_limit, 1.5)

    snapshot = active_tasks(cluster.app, hard_limit=1, grace=0)
    limits = {task.id: (task.hard_limit, task.hard_limit_source) for task in snapshot.tasks}
    assert limits == {own_limit: (60.0, "task"), pool_limit: (50.0, "pool")}
    assert snapshot.zombies == []
    assert all(task.source == "worker" for task in snapshot.tasks)


def info(task_id: str, name: str, time_start: float | None) -> dict[str, object]:
    """An entry as ``active(safe=True)`` returns it (see celery/worker/request.py Request.info)."""
    return {
        "id": task_id,
        "name": name,
        "args": "()",
        "kwargs": "{}",
        "type": name,
        "hostname": "w1@h",
        "time_start": time_start,
        "acknowledged": True,
        "delivery_info": {"exchange": "", "routing_key": "q", "redelivered": True},
        "worker_pid": 101 if time_start else None,
    }


def test_a_snapshot_from_replies_orders_ages_and_resolves_limits() -> None:
    app = Celery("local")

    @app.task(name="celery.local_only", time_limit=7)
    def local_only() -> None: ...

    now = 10_000.0
    snapshot = build_snapshot(
        app,
        ["w1@h", "w2@h"],
        active={
            "w1@h": [
                info("young", "app.plain", now - 5),
                info("waiting", "app.plain", None),
                info("old", "app.own", now - 50),
                info("builtin", "celery.local_only", now - 9),
            ],
            "w2@h": [info("elsewhere", "app.plain", now - 400)],
        },
        registered={"w1@h": ["app.own [time_limit=40]", "app.plain"], "w2@h": ["app.plain"]},
        stats={"w1@h": {"pool": {"timeouts": [0, 20]}}},  # w2 never answered stats
        hard_limit=300,
        grace=1,
        now=now,
    )
    assert [t.id for t in snapshot.tasks] == ["elsewhere", "old", "builtin", "young", "waiting"]
    limits = {t.id: t.hard_limit for t in snapshot.tasks}
    # Own limit (worker's registry), local registry for what the worker does not list, then
    # the pool default, then the configured default.
    assert limits == {"old": 40, "builtin": 7, "young": 20, "waiting": 20, "elsewhere": 300}
    sources = {t.id: t.hard_limit_source for t in snapshot.tasks}
    assert sources == {
        "old": "task",
        "builtin": "task",
        "young": "pool",
        "waiting": "pool",
        "elsewhere": "default",
    }
    # None of them came from morgue_active: aged on this clock, marked as such.
    assert {t.source for t in snapshot.tasks} == {"inspect"}
    assert snapshot.inspected == ["w1@h"]
    assert [t.id for t in snapshot.zombies] == ["elsewhere", "old", "builtin"]
    waiting = snapshot.tasks[-1]
    assert (waiting.age, waiting.started_at, waiting.zombie) == (None, None, False)
    assert snapshot.workers == ["w1@h"]
    assert snapshot.unreachable == ["w2@h"]
    assert snapshot.tasks[0].redelivered
    assert json.loads(json.dumps(snapshot.as_dict()))["zombies"] == 3


def reported(
    task_id: str, limit: float | None, source: str | None, runtime: float | None
) -> dict[str, object]:
    """An entry as ``morgue_active`` returns it (see core/worker_limits.py)."""
    return {
        **info(task_id, "app.task", 1.0 if runtime is not None else None),
        "hard_limit": limit,
        "hard_limit_source": source,
        "soft_limit": None,
        "runtime": runtime,
        "runtime_clock": "monotonic" if runtime is not None else None,
    }


def test_worker_reports_give_limits_and_ages_and_others_are_inspected() -> None:
    app = Celery("local")
    now = 10_000.0
    reports = {
        "w1@h": {
            "version": 1,
            "pool": {"hard_limit": None, "soft_limit": None},
            "tasks": [
                reported("per-call", 60, "request", 59.0),
                reported("past-own", 20, "task", 25.0),
                reported("no-limit", None, None, 400.0),
                reported("queued", None, None, None),
            ],
        },
        "w2@h": {"error": "KeyError('morgue_active')"},  # no core.install there
        "w3@h": {"error": "KeyError('morgue_active')"},  # ... and no answer to inspect
    }
    replies = {
        "active": {"w2@h": [info("legacy", "app.plain", now - 50)]},
        "registered": {"w2@h": ["app.plain [time_limit=30]"]},
        "stats": {"w2@h": {"pool": {"timeouts": [0, 0]}}},
    }
    workers = ["w1@h", "w2@h", "w3@h", "w4@h"]  # w4 answered the ping, then nothing
    snapshot = build_snapshot(
        app, workers, **replies, hard_limit=300, grace=1, now=now, reports=reports
    )
    by_id = {t.id: t for t in snapshot.tasks}
    assert [t.id for t in snapshot.tasks] == [
        "no-limit",
        "per-call",
        "legacy",
        "past-own",
        "queued",
    ]
    assert {i: (t.hard_limit, t.hard_limit_source, t.source) for i, t in by_id.items()} == {
        "per-call": (60, "request", "worker"),
        "past-own": (20, "task", "worker"),
        "no-limit": (300, "default", "worker"),
        "queued": (300, "default", "worker"),
        "legacy": (30, "task", "inspect"),
    }
    # The worker's runtime is the age, whatever this host's clock says.
    assert by_id["per-call"].age == 59.0
    assert by_id["per-call"].started_at == dt.datetime.fromtimestamp(now - 59, dt.UTC)
    assert by_id["legacy"].age == 50.0
    assert (by_id["queued"].age, by_id["queued"].started_at) == (None, None)
    assert [t.id for t in snapshot.zombies] == ["no-limit", "legacy", "past-own"]
    assert snapshot.workers == ["w1@h", "w2@h"]
    assert snapshot.unreachable == ["w3@h", "w4@h"]
    assert snapshot.inspected == ["w2@h"]

    # With no default, a task without a limit of its own is listed as such, and never a zombie.
    unlimited = build_snapshot(
        app, workers, **replies, hard_limit=None, grace=1, now=now, reports=reports
    )
    no_limit = next(t for t in unlimited.tasks if t.id == "no-limit")
    assert (no_limit.hard_limit_source, no_limit.limit_known, no_limit.zombie) == (
        "none",
        False,
        False,
    )
    as_json = json.loads(json.dumps(no_limit.as_dict()))
    assert (as_json["hard_limit"], as_json["hard_limit_source"]) == (None, "none")
    assert [t.id for t in unlimited.zombies] == ["legacy", "past-own"]


# -- the cleanup task ----------------------------------------------------------------------


@pytest.mark.slow
def test_the_cleanup_reaps_zombies_and_leaves_healthy_tasks(cluster: Cluster) -> None:
    worker = cluster.worker(concurrency=4)
    zombie, _ = cluster.send(worker, "sleep", 120)
    zombie_pid = cluster.wait_older_than(zombie, 5).pid
    young, _ = cluster.send(worker, "sleep", 120)
    limited, _ = cluster.send(worker, "sleep_with_time_limit", 120)
    healthy_pids = {cluster.wait_older_than(task_id, 0.1).pid for task_id in (young, limited)}

    dry = cluster.cleanup(hard_limit=3, grace=1, dry_run=True)
    assert dry["dry_run"] is True
    assert zombie_ids(dry) == [zombie]
    assert dry["zombies"][0]["signal"] == "SIGTERM"  # type: ignore[index]
    assert reports(dry, "SIGTERM")["terminated"] == []
    assert cluster.listed(zombie) is not None

    report = cluster.cleanup(hard_limit=3, grace=1)
    assert report["dry_run"] is False
    assert report["workers"] == [worker.name]
    assert zombie_ids(report) == [zombie]
    assert reports(report, "SIGTERM")["terminated"] == [zombie]
    assert report["errors"] == []
    wait_for(lambda: cluster.listed(zombie) is None, timeout=10)
    assert zombie_pid is not None
    wait_for(lambda: not pid_alive(zombie_pid), timeout=10)
    assert json.loads(cluster.client.get(f"revoked:{zombie}") or b"{}")["signum"] == "15"
    assert cluster.client.hexists(SIGNALLED, zombie)
    # The young task and the one with its own 60 s limit still run, in the same processes.
    still = {task.id: task.pid for task in active_tasks(cluster.app).tasks}
    assert young in still and limited in still
    assert set(still.values()) >= healthy_pids
    assert all(pid is not None and pid_alive(pid) for pid in healthy_pids)
    assert cluster.client.get(f"revoked:{young}") is None

    # The next run asks after the signalled task, finds it gone, and forgets it.
    follow_up = cluster.cleanup(hard_limit=60)
    assert reports(follow_up, "SIGKILL")["already_gone"] == [zombie]
    assert zombie_ids(follow_up) == []
    assert not cluster.client.hexists(SIGNALLED, zombie)


@pytest.mark.slow
def test_a_task_ignoring_sigterm_is_killed_on_the_next_run(cluster: Cluster) -> None:
    worker = cluster.worker(concurrency=2)
    stubborn, _ = cluster.send(worker, "ignore_sigterm", 300)
    pid = cluster.wait_older_than(stubborn, 2.5).pid
    assert pid is not None

    first = cluster.cleanup(hard_limit=2, grace=0)
    assert reports(first, "SIGTERM")["terminated"] == [stubborn]
    wait_for(lambda: cluster.client.get(f"revoked:{stubborn}"), timeout=10)
    # Celery forgot it at once, yet its process keeps running it.
    assert cluster.listed(stubborn) is None
    time.sleep(1.0)  # a window: SIGTERM was sent, and a process it ended would be gone by now
    assert pid_alive(pid)
    assert pid in worker.child_pids()

    second = cluster.cleanup(hard_limit=2, grace=0)
    assert reports(second, "SIGKILL")["terminated"] == [stubborn]
    assert reports(second, "SIGTERM")["terminated"] == []
    wait_for(lambda: not pid_alive(pid), timeout=10)
    assert "sending SIGKILL to pid" in worker.log()

    third = cluster.cleanup(hard_limit=2, grace=0)
    assert reports(third, "SIGKILL")["already_gone"] == [stubborn]
    assert not cluster.client.hexists(SIGNALLED, stubborn)


def test_a_threads_worker_refusal_is_reported_not_raised(cluster: Cluster) -> None:
    worker = cluster.worker(pool="threads", concurrency=3)
    # It runs until the test releases it: the pool cannot stop it, and the worker's warm
    # shutdown would wait for it.
    key = uuid.uuid4().hex
    task_id, _ = cluster.send(worker, "sleep_limit_2", 60, key)
    try:
        task = cluster.wait_older_than(task_id, 2.5)

        direct = revoke_tasks(cluster.app, [task])
        assert list(direct.refused) == [task_id]
        assert "NotImplementedError" in direct.refused[task_id]
        assert "kill_job" in direct.refused[task_id]
        assert direct.terminated == []

        report = cluster.cleanup(hard_limit=2, grace=0)
        refused = reports(report, "SIGTERM")["refused"]
        assert isinstance(refused, dict)
        assert list(refused) == [task_id]
        assert "kill_job" in refused[task_id]
        assert not cluster.client.hexists(SIGNALLED, task_id)  # nothing to escalate
        assert cluster.listed(task_id) is not None  # still running: the pool cannot stop it
    finally:
        cluster.client.set(f"release:{key}", 1)


def test_the_cleanup_trims_the_dlq_and_replays_the_spool(cluster: Cluster) -> None:
    worker = cluster.worker(concurrency=1)
    short_lived = DeadLetterQueue(cluster.client, retention=1)
    stale = stream_ms(short_lived.add(make_entry("expired-task", "stale")))
    spooled = make_entry("spooled-task")
    spool = spool_for(worker.spool_dir, cluster.redis.url, "dlq:")
    spool.append(spooled)
    # Past the stale entry's retention; nobody writes to that queue again.
    wait_for_redis_clock(cluster.client, stale + 1000)

    report = cluster.cleanup()
    # The worker's main process drains its spool on its own (core.spool_drain): it may have
    # replayed the entry before the cleanup did.
    assert report["spool_replayed"] in (0, 1)
    # Both queues were indexed when the cleanup trimmed them; the stale one came out empty.
    assert report["dlq_remaining"] == {"stale": 0, "celery": 1}
    dlq = DeadLetterQueue(cluster.client)
    assert [info.queue for info in dlq.queues()] == ["celery"]
    [stored] = dlq.page("celery").items
    assert stored.task_id == "spooled-task"
    assert not spool.pending()
