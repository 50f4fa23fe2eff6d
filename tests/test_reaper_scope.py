"""Whose tasks the reaper may end: only its own DLQ's workers, never before a soft limit, and
never once it lost its run lock. Real Redis, real prefork workers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from celery_morgue.core.broadcast import control
from celery_morgue.core.reaper import RunLock
from celery_morgue.core.revoke import kill_jobs, revoke_tasks
from celery_morgue.core.worker_limits import ACTIVE_COMMAND, dlq_identity
from celery_morgue.core.zombies import ActiveTask, active_tasks, build_snapshot
from celery_morgue.tui.demo.processes import RedisServer, pid_alive
from tests.helpers import (
    Cluster,
    Morgue,
    Worker,
    by_id,
    local_reaper,
    on_db,
    reports,
    wait_for,
    zombie_ids,
)


def skipped(report: dict[str, Any]) -> dict[str, str]:
    return {entry["id"]: entry["reason"] for entry in report["skipped"]}


# -- only the workers of its own DLQ -------------------------------------------------------


@pytest.mark.slow
def test_the_reaper_ends_only_its_own_dlqs_tasks_with_their_own_hard_limit(
    cluster: Cluster, start_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    url = cluster.redis.url
    mine = cluster.worker(concurrency=1, queues="mine")
    plain = start_worker(url, app="tests.plainworkerapp", concurrency=1, queues="plain")
    other = cluster.worker(concurrency=1, queues="other", env={"MORGUE_TEST_DLQ": on_db(url, 2)})
    nolimit = start_worker(
        url, env={"MORGUE_TEST_HARD_LIMIT": "none"}, concurrency=1, queues="nolimit"
    )
    ours, _ = cluster.send(mine, "sleep", 120, queue="mine")
    theirs, _ = cluster.send(plain, "sleep", 600, queue="plain")  # another team's report
    elsewhere, _ = cluster.send(other, "sleep", 120, queue="other")
    unlimited, _ = cluster.send(nolimit, "sleep", 120, queue="nolimit")
    pids = {task_id: cluster.wait_older_than(task_id, 4).pid for task_id in (ours, theirs)}
    pids |= {t: cluster.wait_older_than(t, 4).pid for t in (elsewhere, unlimited)}
    assert all(pids.values())

    # Each installed worker says which DLQ it writes to (never the URL) and its own options.
    replies = control(cluster.app, ACTIVE_COMMAND, {"safe": True}, [mine.name, nolimit.name], 5)
    assert replies[mine.name]["installation"] == {
        "dlq": dlq_identity("dlq:", url),
        "hard_limit": 300.0,
        "grace": 30.0,
    }
    assert replies[nolimit.name]["installation"]["hard_limit"] is None
    assert url not in json.dumps(replies)
    snapshot = active_tasks(cluster.app, hard_limit=3, grace=1, worker_defaults=True)
    assert snapshot.dlqs == {
        mine.name: dlq_identity("dlq:", url),
        other.name: dlq_identity("dlq:", on_db(url, 2)),
        nolimit.name: dlq_identity("dlq:", url),
    }
    assert snapshot.inspected == [plain.name]
    tasks = by_id(snapshot)
    # The workers' own hard_limit applies to their tasks; the argument only to the plain one.
    assert (tasks[ours].hard_limit, tasks[ours].hard_limit_source) == (300.0, "default")
    assert (tasks[unlimited].hard_limit_source, tasks[unlimited].zombie) == ("none", False)
    assert (tasks[theirs].hard_limit, tasks[theirs].zombie) == (3.0, True)
    # Listed for `morgue tasks` and the UI all the same.
    assert set(tasks) == {ours, theirs, elsewhere, unlimited}

    # The reported reproduction: hard_limit=3, grace=1. Nothing of ours is past 330 s; the
    # other app's task is a zombie, and is left alone.
    reaper = local_reaper(url, url, tmp_path / "spool", hard_limit=3, grace=1)
    report = reaper.run().as_dict()
    assert report["status"] == "completed"
    assert report["dlq"] == dlq_identity("dlq:", url)
    assert zombie_ids(report) == []
    assert list(skipped(report)) == [theirs]
    assert "without core.install" in skipped(report)[theirs]
    assert reports(report, "SIGTERM")["terminated"] == []

    # An override for one run applies to every worker but the one installed with None.
    forced = reaper.run(hard_limit=2, grace=0).as_dict()
    assert zombie_ids(forced) == [ours]
    reasons = skipped(forced)
    assert set(reasons) == {theirs, elsewhere}
    assert "another DLQ" in reasons[elsewhere]
    assert url not in reasons[elsewhere]
    assert reports(forced, "SIGTERM")["terminated"] == [ours]
    wait_for(lambda: not pid_alive(pids[ours]), timeout=10)
    assert all(pid_alive(pids[t]) for t in (theirs, elsewhere, unlimited))
    assert cluster.listed(unlimited) is not None

    # Opting in, the workers without core.install are reaped; another DLQ's never.
    opted = local_reaper(
        url, url, tmp_path / "spool2", hard_limit=3, grace=1, reap_uninstalled_workers=True
    )
    taken = opted.run().as_dict()
    assert zombie_ids(taken) == [theirs]
    assert reports(taken, "SIGTERM")["terminated"] == [theirs]
    wait_for(lambda: not pid_alive(pids[theirs]), timeout=10)
    assert pid_alive(pids[elsewhere]) and pid_alive(pids[unlimited])


@pytest.mark.slow
def test_morgue_zombies_revoke_says_which_zombies_run_without_core_install(
    cluster: Cluster, start_worker: Callable[..., Worker], morgue: Morgue
) -> None:
    url = cluster.redis.url
    plain = start_worker(url, app="tests.plainworkerapp", concurrency=1, queues="plain")
    theirs, _ = cluster.send(plain, "sleep", 600, queue="plain")
    pid = cluster.wait_older_than(theirs, 3).pid
    assert pid is not None
    args = ["--url", url, "zombies", "--hard-limit", "2", "--grace", "0"]

    listed = morgue.json(*args)
    assert [(task["id"], task["source"]) for task in listed["zombies"]] == [(theirs, "inspect")]

    done = morgue(*args, "--revoke", "--yes").stdout
    assert "1 terminated" in done
    assert "1 zombie on workers without core.install" in " ".join(done.split())
    assert theirs in done
    wait_for(lambda: not pid_alive(pid), timeout=10)

    # In JSON, the revoke report names them.
    again, _ = cluster.send(plain, "sleep", 600, queue="plain")
    cluster.wait_older_than(again, 3)
    revoked = morgue.json(*args, "--revoke", "--yes")
    assert revoked["revoke"]["terminated"] == [again]
    assert revoked["revoke"]["without_install"] == [again]


# -- a soft limit is a limit --------------------------------------------------------------


@pytest.mark.slow
def test_a_task_with_only_a_soft_limit_is_not_reaped_before_it(
    cluster: Cluster, morgue: Morgue
) -> None:
    # Three processes: the two tasks, and one for the cleanup task.
    worker = cluster.worker(concurrency=3, extra=("--soft-time-limit", "600"))
    own, _ = cluster.send(worker, "sleep_soft_limit_500", 120)
    pooled, _ = cluster.send(worker, "sleep", 120)
    pids = [cluster.wait_older_than(task_id, 3).pid for task_id in (own, pooled)]

    replies = control(cluster.app, ACTIVE_COMMAND, {"safe": True}, [worker.name], 5)
    raw = {entry["id"]: entry for entry in replies[worker.name]["tasks"]}
    assert (raw[own]["hard_limit"], raw[own]["soft_limit"]) == (None, 500.0)
    assert (raw[pooled]["hard_limit"], raw[pooled]["soft_limit"]) == (None, 600.0)

    tasks = by_id(active_tasks(cluster.app, hard_limit=2, grace=0))
    assert (tasks[own].hard_limit, tasks[own].hard_limit_source) == (500.0, "soft")
    assert (tasks[pooled].hard_limit, tasks[pooled].hard_limit_source) == (600.0, "soft")
    assert not tasks[own].zombie and not tasks[pooled].zombie
    # The default wins where it is longer.
    longer = by_id(active_tasks(cluster.app, hard_limit=550, grace=0))
    assert (longer[own].hard_limit, longer[own].hard_limit_source) == (550.0, "default")
    assert (longer[pooled].hard_limit, longer[pooled].hard_limit_source) == (600.0, "soft")

    report = cluster.cleanup(hard_limit=2, grace=0)
    assert zombie_ids(report) == []
    assert reports(report, "SIGTERM")["terminated"] == []
    assert all(pid is not None and pid_alive(pid) for pid in pids)

    url = ["--url", cluster.redis.url]
    table = morgue(*url, "tasks", "--hard-limit", "2", "--grace", "0").stdout
    row = next(line for line in table.splitlines() if line.startswith(own[:8]))
    assert row.split()[-1] == "soft"  # the from column; no ZOMBIE after it
    shown = morgue.json(*url, "tasks", "--hard-limit", "2", "--grace", "0")
    assert {t["id"]: t["hard_limit_source"] for t in shown["tasks"]} == {
        own: "soft",
        pooled: "soft",
    }


def test_a_soft_limit_alone_is_the_limit_when_there_is_no_default() -> None:
    now = time.time()

    def info(task_id: str, soft: float | None) -> dict[str, Any]:
        return {
            "id": task_id,
            "name": "app.t",
            "hard_limit": None,
            "soft_limit": soft,
            "runtime": 50,
        }

    reply = {
        "version": 2,
        "installation": {"dlq": "dlq:abc", "hard_limit": None, "grace": 0},
        "tasks": [info("soft", 40.0), info("none", None)],
    }
    snapshot = build_snapshot(
        None, ["w@h"], {}, {}, {}, hard_limit=300, grace=0, now=now, reports={"w@h": reply}
    )
    tasks: dict[str, ActiveTask] = by_id(snapshot)
    assert (tasks["soft"].hard_limit, tasks["soft"].hard_limit_source) == (40.0, "soft")
    assert tasks["soft"].zombie
    # The worker was installed with hard_limit=None: no limit, whatever is asked here.
    assert (tasks["none"].hard_limit_source, tasks["none"].zombie) == ("none", False)
    # A worker without core.install: the soft limit it registered counts too.
    inspected = build_snapshot(
        None,
        ["old@h"],
        {"old@h": [{"id": "x", "name": "app.t", "time_start": now - 50}]},
        {"old@h": ["app.t [soft_time_limit=400]"]},
        {"old@h": {"pool": {"timeouts": [0, 0]}}},
        hard_limit=300,
        grace=0,
        now=now,
    )
    [task] = inspected.tasks
    assert (task.hard_limit, task.hard_limit_source, task.source) == (400.0, "soft", "inspect")


# -- the run lock, renewed before each worker -----------------------------------------------


def test_revoking_renews_the_lock_before_each_worker_and_stops_once_it_is_lost(
    private_redis: RedisServer,
) -> None:
    from celery import Celery

    client = redis.Redis.from_url(private_redis.url)
    app = Celery("lock-test", broker=on_db(private_redis.url, 3))  # nobody answers there
    key = "dlq@reaper:lock"
    client.delete(key)
    try:
        for call, tasks in (
            (revoke_tasks, [_Task("a1", "w1@h"), _Task("a2", "w2@h"), _Task("a3", "w3@h")]),
            (kill_jobs, [("a1", "w1@h"), ("a2", "w2@h"), ("a3", "w3@h")]),
        ):
            lock = RunLock(client, "dlq:", ttl=30)
            assert lock.acquire()
            client.pexpire(key, 2000)
            asked: list[int] = []

            def keepalive(lock: RunLock = lock, asked: list[int] = asked) -> bool:
                asked.append(client.pttl(key))
                if len(asked) == 2:  # the lock expired meanwhile, and another run took it
                    client.delete(key)
                    assert RunLock(client, "dlq:", ttl=30).acquire()
                return lock.renew()

            result = call(app, tasks, signal="SIGTERM", timeout=0.2, keepalive=keepalive)
            assert len(asked) == 2  # before the first worker, before the second, then no more
            assert result.no_reply == ["a1"]
            assert result.not_sent == ["a2", "a3"]
            assert result.terminated == []
            assert result.as_dict()["not_sent"] == ["a2", "a3"]
            client.delete(key)

        # Renewed before the first worker: the TTL went back up to the lock's 30 s.
        lock = RunLock(client, "dlq:", ttl=30)
        assert lock.acquire()
        client.pexpire(key, 2000)
        ttls: list[int] = []

        def renewing() -> bool:
            kept = lock.renew()
            ttls.append(client.pttl(key))
            return kept

        result = revoke_tasks(
            app, [_Task("b1", "w1@h"), _Task("b2", "w2@h")], timeout=0.2, keepalive=renewing
        )
        assert result.no_reply == ["b1", "b2"] and result.not_sent == []
        assert len(ttls) == 2 and all(ttl > 20_000 for ttl in ttls)
    finally:
        client.delete(key)
        client.close()
        app.close()


class _Task:
    def __init__(self, task_id: str, worker: str) -> None:
        self.id = task_id
        self.worker = worker
