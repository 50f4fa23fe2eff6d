"""The reaper never kills a healthy task: the limit each worker enforces, the age on its own clock,
one run at a time, and no default limit unless asked for. Real Redis, real prefork workers.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from celery_morgue.core.broadcast import control
from celery_morgue.core.dlq import DeadLetterQueue
from celery_morgue.core.options import Options
from celery_morgue.core.reap_report import ReapReport
from celery_morgue.core.reaper import RunLock, policy
from celery_morgue.core.spool import spool_for
from celery_morgue.core.worker_limits import ACTIVE_COMMAND
from celery_morgue.core.zombies import (
    CLEANUP_TASK,
    ActiveTask,
    ClusterSnapshot,
    active_tasks,
    build_snapshot,
)
from celery_morgue.tui.demo.processes import RedisServer, pid_alive
from tests.helpers import (
    LAST_REPORT,
    SIGNALLED,
    Cluster,
    Morgue,
    Worker,
    by_id,
    local_reaper,
    make_entry,
    on_db,
    reports,
    wait_for,
    zombie_ids,
)

SKIPPED_REPORT = "dlq@reaper:skipped"
RUN_LOCK = "dlq@reaper:lock"


def inspected_the_old_way(app: Celery, workers: list[str], now: float) -> ClusterSnapshot:
    """What the reaper saw before morgue_active: inspect replies, aged on this host's clock."""
    return build_snapshot(
        app,
        workers,
        control(app, "active", {"safe": True}, workers, 5),
        control(app, "registered", {"taskinfoitems": ["time_limit"]}, workers, 5),
        control(app, "stats", {}, workers, 5),
        hard_limit=2,
        grace=0,
        now=now,
    )


# -- the limit the worker enforces -----------------------------------------------------------


@pytest.mark.slow
def test_a_longer_limit_per_call_is_used_and_the_task_survives_a_revoke(
    cluster: Cluster, morgue: Morgue
) -> None:
    worker = cluster.worker(concurrency=2)
    key = uuid.uuid4().hex
    # Registered with time_limit=2, given 60 s for this call: it runs until the test releases it.
    per_call, _ = cluster.send(worker, "sleep_limit_2", 55, key, time_limit=60)
    plain, _ = cluster.send(worker, "sleep", 120)  # no limit anywhere: the default applies
    cluster.wait_older_than(per_call, 5)
    plain_pid = cluster.wait_older_than(plain, 5).pid

    tasks = by_id(active_tasks(cluster.app, hard_limit=2, grace=0))
    assert (tasks[per_call].hard_limit, tasks[per_call].hard_limit_source) == (60.0, "request")
    assert not tasks[per_call].zombie
    assert (tasks[plain].hard_limit, tasks[plain].hard_limit_source) == (2.0, "default")
    assert tasks[plain].zombie
    # Read the old way (registered time_limit, no per-call limit), it was a zombie too.
    old = by_id(inspected_the_old_way(cluster.app, [worker.name], time.time()))
    assert (old[per_call].hard_limit, old[per_call].hard_limit_source) == (2.0, "task")
    assert old[per_call].zombie

    url = ["--url", cluster.redis.url]
    listed = morgue.json(*url, "tasks", "--hard-limit", "2", "--grace", "0")
    shown = {task["id"]: task for task in listed["tasks"]}
    assert (shown[per_call]["hard_limit"], shown[per_call]["hard_limit_source"]) == (
        60.0,
        "request",
    )
    assert (shown[per_call]["zombie"], shown[per_call]["source"]) == (False, "worker")
    assert (shown[plain]["hard_limit_source"], shown[plain]["zombie"]) == ("default", True)
    table = morgue(*url, "tasks", "--hard-limit", "2", "--grace", "0").stdout
    row = next(line for line in table.splitlines() if line.startswith(per_call[:8]))
    assert row.split()[-1] == "request"  # the from column; no ZOMBIE after it

    revoked = morgue.json(*url, "zombies", "--hard-limit", "2", "--grace", "0", "--revoke", "--yes")
    assert [task["id"] for task in revoked["zombies"]] == [plain]
    assert revoked["revoke"]["terminated"] == [plain]
    assert plain_pid is not None
    wait_for(lambda: not pid_alive(plain_pid), timeout=10)
    # The task given 60 s still runs, well past its registered 2 s, and then ends well.
    assert cluster.listed(per_call) is not None
    assert cluster.client.get(f"finished:{key}") is None
    cluster.client.set(f"release:{key}", 1)
    wait_for(lambda: cluster.client.get(f"finished:{key}"), timeout=30)
    wait_for(lambda: cluster.listed(per_call) is None, timeout=10)
    assert cluster.client.get(f"revoked:{per_call}") is None
    assert json.loads(cluster.client.get(f"revoked:{plain}") or b"{}")["terminated"] is True


@pytest.mark.slow
def test_the_worker_reports_each_limit_and_where_it_comes_from(cluster: Cluster) -> None:
    prefork = cluster.worker(concurrency=3, queues="prefork", extra=("--time-limit", "50"))
    threads = cluster.worker(pool="threads", concurrency=1, queues="threads")
    pool, _ = cluster.send(prefork, "sleep", 120, queue="prefork")
    own, _ = cluster.send(prefork, "sleep_with_time_limit", 120, queue="prefork")
    call, _ = cluster.send(prefork, "sleep_limit_2", 120, time_limit=30, queue="prefork")
    # Released at the end: the threads pool cannot stop it, and a warm shutdown waits for it.
    key = uuid.uuid4().hex
    threaded, _ = cluster.send(threads, "sleep_limit_2", 60, key, time_limit=40, queue="threads")
    for task_id in (pool, own, call, threaded):
        cluster.wait_older_than(task_id, 0.5)

    replies = control(cluster.app, ACTIVE_COMMAND, {"safe": True}, [prefork.name, threads.name], 5)
    assert replies[prefork.name]["pool"]["hard_limit"] == 50.0
    raw = {entry["id"]: entry for reply in replies.values() for entry in reply["tasks"]}
    assert {
        task_id: (raw[task_id]["hard_limit"], raw[task_id]["hard_limit_source"]) for task_id in raw
    } == {
        pool: (50.0, "pool"),
        own: (60.0, "task"),
        call: (30.0, "request"),
        threaded: (40.0, "request"),  # the threads pool does not enforce it; the reaper does
    }
    # Prefork: billiard's own start stamp; threads: the task_prerun stamp. Both monotonic.
    assert {entry["runtime_clock"] for entry in raw.values()} == {"monotonic"}
    assert all(entry["runtime"] > 0.5 for entry in raw.values())
    assert raw[call]["args"] == "[120]"  # what active(safe=True) gives, as it gives it

    snapshot = active_tasks(cluster.app, hard_limit=1, grace=0)
    assert {t.id: t.hard_limit_source for t in snapshot.tasks} == {
        pool: "pool",
        own: "task",
        call: "request",
        threaded: "request",
    }
    assert snapshot.inspected == []
    assert snapshot.zombies == []
    cluster.client.set(f"release:{key}", 1)


# -- the worker's clock ------------------------------------------------------------------------


@pytest.mark.slow
def test_ages_come_from_the_worker_clock_not_this_hosts(
    cluster: Cluster, start_worker: Callable[..., Worker]
) -> None:
    installed = cluster.worker(concurrency=1, queues="installed")
    plain = start_worker(
        cluster.redis.url, app="tests.plainworkerapp", concurrency=1, queues="plain"
    )
    sent = time.monotonic()
    mine, _ = cluster.send(installed, "sleep", 120, queue="installed")
    theirs, _ = cluster.send(plain, "sleep", 120, queue="plain")
    cluster.wait_older_than(mine, 1)
    cluster.wait_older_than(theirs, 1)

    # This host's clock an hour ahead: the worker's ages do not move, a zombie does not appear.
    ahead = time.time() + 3600
    snapshot = active_tasks(cluster.app, hard_limit=300, grace=30, now=ahead)
    answered = time.monotonic()
    tasks = by_id(snapshot)
    assert (tasks[mine].source, tasks[mine].zombie) == ("worker", False)
    age = tasks[mine].age
    assert age is not None and 1 <= age <= answered - sent
    assert tasks[mine].started_at is not None
    assert tasks[mine].started_at.timestamp() == pytest.approx(ahead - age)
    # The worker without core.install is asked the old way, and marked so: there the skew counts.
    assert snapshot.inspected == [plain.name]
    assert sorted(snapshot.workers) == sorted([installed.name, plain.name])
    assert tasks[theirs].source == "inspect"
    assert tasks[theirs].age is not None and tasks[theirs].age > 3600
    assert [task.id for task in snapshot.zombies] == [theirs]
    # Read the old way, the installed worker's task would have been a zombie as well.
    old = by_id(inspected_the_old_way(cluster.app, [installed.name], ahead))
    assert old[mine].zombie and (old[mine].age or 0) > 3600

    # This host's clock an hour behind: a zombie does not hide either.
    behind = time.time() - 3600
    late = by_id(active_tasks(cluster.app, hard_limit=1, grace=0, now=behind))
    assert late[mine].zombie
    assert not late[theirs].zombie  # age negative on the old path: hidden
    assert not by_id(inspected_the_old_way(cluster.app, [installed.name], behind))[mine].zombie

    # Without skew nothing is a zombie yet.
    assert active_tasks(cluster.app).zombies == []


# -- one run at a time -------------------------------------------------------------------------


@pytest.mark.slow
def test_two_runs_at_once_act_once(cluster: Cluster, tmp_path: Path) -> None:
    worker = cluster.worker(concurrency=2)
    zombie, _ = cluster.send(worker, "sleep", 120)
    pid = cluster.wait_older_than(zombie, 3).pid
    assert pid is not None
    # Run A, in this process, sharing the worker's DLQ Redis (and so its lock): its broker is
    # another database where no worker answers, so its ping waits out the inspect timeout.
    first = local_reaper(
        on_db(cluster.redis.url, 1), cluster.redis.url, tmp_path / "spool", inspect_timeout=8
    )
    spooled = make_entry("spooled-by-a")
    spool_for(tmp_path / "spool", cluster.redis.url, "dlq:").append(spooled)
    results: list[dict[str, Any]] = []
    run_a = threading.Thread(target=lambda: results.append(first.run().as_dict()))
    run_a.start()
    try:
        held = wait_for(lambda: cluster.client.get(RUN_LOCK), timeout=10)
        assert isinstance(held, bytes)
        assert cluster.client.pttl(RUN_LOCK) > 0

        # Run B, the worker's scheduled cleanup, while A runs: it skips and says so.
        cluster.client.delete(LAST_REPORT, SKIPPED_REPORT)
        cluster.app.send_task(CLEANUP_TASK, kwargs={"hard_limit": 2, "grace": 0})
        raw = wait_for(lambda: cluster.client.get(SKIPPED_REPORT), timeout=30)
        assert isinstance(raw, bytes)
        skipped = json.loads(raw)
        assert run_a.is_alive()  # B ran during A
        assert skipped["status"] == "skipped"
        assert skipped["holder"]["pid"] == json.loads(held)["pid"]
        assert "token" not in skipped["holder"]
        assert "celery-morgue: reaper: skipped, another run is under way" in worker.log()
        # B left A's lock alone, wrote no run report, and did not touch the zombie.
        assert cluster.client.get(RUN_LOCK) == held
        last = cluster.client.get(LAST_REPORT)  # A's own, if it ended meanwhile; never B's
        assert last is None or json.loads(last)["hard_limit"] != 2
        assert cluster.client.get(f"revoked:{zombie}") is None
        assert pid_alive(pid)
    finally:
        run_a.join(30)
    [done] = results
    assert done["status"] == "completed"
    assert done["errors"] == []
    assert done["spool_replayed"] == 1  # A did its work: its spool is in the DLQ
    assert [e.task_id for e in DeadLetterQueue(cluster.client).page("celery").items] == [
        "spooled-by-a"
    ]
    assert cluster.client.get(RUN_LOCK) is None  # released by its owner

    # Now the worker's run acts: the zombie B left alone was one.
    report = cluster.cleanup(hard_limit=2, grace=0)
    assert report["status"] == "completed"
    assert zombie_ids(report) == [zombie]
    assert reports(report, "SIGTERM")["terminated"] == [zombie]
    wait_for(lambda: not pid_alive(pid), timeout=10)
    assert cluster.client.hexists(SIGNALLED, zombie)


def test_the_run_lock_is_owned_by_its_token_and_expires(private_redis: RedisServer) -> None:
    client = redis.Redis.from_url(private_redis.url)
    client.delete("dlq@reaper:lock")
    try:
        one = RunLock(client, "dlq:", ttl=30)
        other = RunLock(client, "dlq:", ttl=30)
        assert one.acquire()
        assert not other.acquire()
        assert 0 < client.pttl(RUN_LOCK) <= 30_000
        holder = other.holder()
        assert holder is not None and set(holder) == {"host", "pid", "since"}
        assert not other.release()  # not its lock: nothing deleted
        assert not other.renew()
        assert client.exists(RUN_LOCK)
        assert one.renew()
        assert one.release()
        assert not client.exists(RUN_LOCK)
        # A lock that expired under its run and was taken by another is not released by the first.
        short = RunLock(client, "dlq:", ttl=0.05)
        assert short.acquire()
        wait_for(lambda: not client.exists(RUN_LOCK), timeout=5)
        assert other.acquire()
        assert not short.renew()
        assert not short.release()
        assert other.holder() is not None
        assert other.release()
    finally:
        client.delete(RUN_LOCK)
        client.close()


# -- no default limit ------------------------------------------------------------------------


@pytest.mark.slow
def test_without_a_default_a_task_with_no_limit_is_never_reaped(
    cluster: Cluster, morgue: Morgue, tmp_path: Path
) -> None:
    worker = cluster.worker(concurrency=2)  # one process left for the cleanup task
    unlimited, _ = cluster.send(worker, "sleep", 120)
    pid = cluster.wait_older_than(unlimited, 3).pid
    assert pid is not None

    snapshot = active_tasks(cluster.app, hard_limit=None, grace=0)
    [task] = snapshot.tasks
    assert (task.hard_limit_source, task.limit_known, task.zombie) == ("none", False, False)
    shown = morgue.json("--url", cluster.redis.url, "tasks", "--hard-limit", "none", "--grace", "0")
    [listed] = shown["tasks"]
    assert (listed["hard_limit"], listed["hard_limit_source"], listed["zombie"]) == (
        None,
        "none",
        False,
    )
    table = morgue("--url", cluster.redis.url, "tasks", "--hard-limit", "none").stdout
    row = next(line for line in table.splitlines() if line.startswith(unlimited[:8]))
    assert row.split()[-2:] == ["none", "none"]  # limit, from

    # A reaper installed with hard_limit=None leaves it running, and says why in its report.
    reaper = local_reaper(
        cluster.redis.url, cluster.redis.url, tmp_path / "spool", hard_limit=None, grace=0
    )
    report = reaper.run()
    assert isinstance(report, ReapReport)
    assert report.hard_limit is None
    assert report.zombies == ()
    assert report.signals["SIGTERM"].terminated == []
    assert cluster.listed(unlimited) is not None and pid_alive(pid)
    assert json.loads(cluster.client.get(LAST_REPORT) or b"{}")["hard_limit"] is None

    # With a default it would have been reaped: the same task, the worker's own cleanup.
    reaped = cluster.cleanup(hard_limit=2, grace=0)
    assert zombie_ids(reaped) == [unlimited]
    [entry] = reaped["zombies"]  # type: ignore[misc]
    assert (entry["hard_limit"], entry["hard_limit_source"], entry["source"]) == (
        2.0,
        "default",
        "worker",
    )
    assert reports(reaped, "SIGTERM")["terminated"] == [unlimited]
    wait_for(lambda: not pid_alive(pid), timeout=10)


def test_the_worker_logs_its_reaping_policy_once_at_start(cluster: Cluster) -> None:
    worker = cluster.worker(concurrency=1)
    line = wait_for(
        lambda: next((text for text in worker.log().splitlines() if "policy:" in text), None)
    )
    assert isinstance(line, str)
    assert line.endswith(
        "celery-morgue: reaper policy: hard limit: the call's, else the task's, else the "
        "pool's, else 300 s (hard_limit); zombie at limit + 30 s grace; every 300 s; "
        "signals SIGTERM, then SIGKILL; dry run off"
    )
    assert worker.log().count("reaper policy:") == 1
    assert "only tasks with a known limit are reaped" in policy(Options(hard_limit=None))


# -- the UI ------------------------------------------------------------------------------------


def test_enter_on_a_task_in_the_ui_shows_its_limit_and_where_it_comes_from() -> None:
    from celery_morgue.tui.app import MorgueApp
    from celery_morgue.tui.messages import ClusterRefreshed
    from celery_morgue.tui.profiles import Profile

    def task(task_id: str, limit: float, source: str, origin: str) -> ActiveTask:
        return ActiveTask(
            id=task_id,
            name="shop.tasks.rebuild_index",
            worker="celery@worker-1",
            pid=4242,
            started_at=None,
            age=75.0,
            hard_limit=limit,
            zombie=False,
            redelivered=False,
            args="()",
            kwargs="{}",
            hard_limit_source=source,
            source=origin,
        )

    snapshot = ClusterSnapshot(
        tasks=[
            task("aaaaaaaa-per-call", 600.0, "request", "worker"),
            task("bbbbbbbb-legacy", 300.0, "default", "inspect"),
        ],
        workers=["celery@worker-1", "celery@old-1"],
        unreachable=[],
        taken_at=dt.datetime.now(dt.UTC),
        inspected=["celery@old-1"],
    )
    app = MorgueApp(Profile(name="p", url="redis://127.0.0.1:1/0"), poll=False)
    subtitles: list[str] = []

    async def scenario() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            app.dashboard.post_message(ClusterRefreshed(snapshot))
            await pilot.pause()
            pane = app.dashboard.tasks_pane
            pane.table.focus()
            await pilot.pause()
            subtitles.append(str(pane.border_subtitle))
            await pilot.press("enter")
            await pilot.pause()
            await pilot.press("down", "enter")
            await pilot.pause()

    asyncio.run(scenario())  # no pytest asyncio plugin here, as in tests/test_tui.py
    assert "1 without core.install" in subtitles[0]
    shown = [notification.message for notification in app._notifications]
    assert any("limit 600 s: set on the call" in m and "worker's own clock" in m for m in shown)
    assert any(
        "limit 300 s: a default, the worker's or the profile's" in m
        and "a per-call limit is unseen" in m
        for m in shown
    )
