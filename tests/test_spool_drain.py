"""The spool drains by itself, stays under its cap, streams, and never costs an entry."""

from __future__ import annotations

import json
import logging
import multiprocessing
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery

from celery_morgue import core
from celery_morgue.core import DeadLetterQueue
from celery_morgue.core.capture import FailureCapture
from celery_morgue.core.entry import Entry
from celery_morgue.core.options import Options
from celery_morgue.core.spool import REPLAY_BATCH, Spool, spool_for
from celery_morgue.core.spool_drain import (
    BACKOFF_BASE,
    BACKOFF_MAX,
    IDLE_SECONDS,
    SpoolDrain,
    SpoolDrainStep,
)
from celery_morgue.core.spool_state import (
    SpoolState,
    spool_backlogs,
    spool_states,
    write_spool_state,
)
from celery_morgue.tui.demo.processes import RedisServer
from celery_morgue.tui.widgets.status import Status
from tests.helpers import Morgue, Worker, make_entry, wait_for


@pytest.fixture
def dlq_server() -> Iterator[RedisServer]:
    with RedisServer(persistent=True) as server:
        yield server


def task_ids(dlq: DeadLetterQueue, queue: str) -> list[str]:
    return [entry.task_id for entry in dlq.iter_entries(queue) if isinstance(entry, Entry)]


def recording(dlq: DeadLetterQueue, seen: list[str]) -> Callable[[list[Entry]], int]:
    """A replay target that stores and remembers every task id it was handed, in order."""

    def store(batch: list[Entry]) -> int:
        seen.extend(entry.task_id for entry in batch)
        return sum(1 for stored in dlq.add_many(batch) if stored)

    return store


def segment_files(spool: Spool) -> list[Path]:
    return sorted(spool.directory.glob(f"spool-{spool.tag}.0*.jsonl"))


# -- in a real prefork worker ----------------------------------------------------------------


def test_the_spool_reaches_redis_by_itself_and_failures_go_straight_there_again(
    redis_server: RedisServer, dlq_server: RedisServer, start_worker: Callable[..., Worker]
) -> None:
    queue = "spool-drain"
    worker = start_worker(redis_server.url, queues=queue, env={"MORGUE_TEST_DLQ": dlq_server.url})
    client = redis.Redis.from_url(dlq_server.url)
    dlq = DeadLetterQueue(client)
    spool = spool_for(worker.spool_dir, dlq_server.url, "dlq:")
    first = worker.send("boom", "before", queue=queue)
    wait_for(lambda: task_ids(dlq, queue) == [first], timeout=30)

    dlq_server.stop()
    during = [worker.send("boom", f"during {n}", queue=queue) for n in range(20)]
    wait_for(lambda: spool.status().pending == 20, timeout=30)
    dlq_server.start()
    client.connection_pool.disconnect()
    # No other failure: the worker's main process replays the 20 on its own.
    wait_for(lambda: set(task_ids(dlq, queue)) == {first, *during}, timeout=15)
    assert sorted(task_ids(dlq, queue)) == sorted({first, *during}), "an entry is twice"
    log = worker.log_path.read_text(errors="replace")
    assert all(f"failed task {task_id} " in log for task_id in during)
    # The drain, not a pool child (its line follows the write it reports).
    wait_for(lambda: "MainProcess] celery-morgue: replayed" in worker.log(), timeout=10)

    # The worker reported its spool: empty now, 20 replayed.
    def reported() -> list[SpoolState]:
        return [
            state
            for state in spool_states(client, "dlq:")
            if state.path == str(spool.path) and state.pending == 0 and state.replayed == 20
        ]

    [state] = wait_for(reported, timeout=15)  # type: ignore[misc]
    assert state.host == socket.gethostname()
    assert state.worker == worker.name
    assert state.replayed_at is not None and state.dropped == 0
    assert not [backlog for backlog in spool_backlogs(client, "dlq:") if backlog.path == state.path]

    # Another outage; a failure a second after Redis is back is written to it directly.
    dlq_server.stop()
    second = [worker.send("boom", f"second outage {n}", queue=queue) for n in range(4)]
    wait_for(lambda: spool.status().pending == 4, timeout=30)
    dlq_server.start()
    restarted = time.monotonic()
    client.connection_pool.disconnect()
    time.sleep(max(0.0, restarted + 1.0 - time.monotonic()))
    after = worker.send("boom", "after", queue=queue)
    expected = {first, *during, *second, after}
    wait_for(lambda: set(task_ids(dlq, queue)) == expected, timeout=15)
    assert sorted(task_ids(dlq, queue)) == sorted(expected), "an entry is missing or twice"
    log = worker.log_path.read_text(errors="replace")
    assert all(f"failed task {task_id} " in log for task_id in second)
    assert f"failed task {after} " not in log, "the failure after the restart was spooled"
    wait_for(lambda: not spool.pending(), timeout=15)
    assert spool.status().replayed == 24  # the spool carried the 24, and only them
    assert not segment_files(spool)


# -- the spool file ----------------------------------------------------------------------------


def test_a_torn_last_line_costs_only_itself(redis_client: redis.Redis, tmp_path: Path) -> None:
    dlq = DeadLetterQueue(redis_client)
    spool = Spool(tmp_path)
    spool.append(make_entry("before"))
    with open(spool.path, "ab") as handle:  # a process killed mid-append
        handle.write(make_entry("torn").to_json().encode()[:40])
    spool.append(make_entry("good-1"))
    spool.append(make_entry("good-2"))
    seen: list[str] = []
    assert spool.replay_all(recording(dlq, seen)) == 3
    assert seen == ["before", "good-1", "good-2"]
    assert sorted(task_ids(dlq, "celery")) == ["before", "good-1", "good-2"]
    rejected = spool.rejected_path.read_bytes().splitlines()
    assert len(rejected) == 1 and b'"torn"' in rejected[0]
    assert not spool.pending()


def test_a_torn_line_at_the_end_is_set_aside_before_anything_follows(
    redis_client: redis.Redis, tmp_path: Path
) -> None:
    dlq = DeadLetterQueue(redis_client)
    spool = Spool(tmp_path)
    spool.append(make_entry("first"))
    with open(spool.path, "ab") as handle:
        handle.write(b'{"task_id": "torn", "ta')
    assert spool.replay_all(recording(dlq, [])) == 1
    assert b'"torn"' in spool.rejected_path.read_bytes()
    spool.append(make_entry("next"))  # the spool was emptied: nothing to glue it to
    assert spool.replay_all(recording(dlq, [])) == 1
    assert sorted(task_ids(dlq, "celery")) == ["first", "next"]
    assert len(spool.rejected_path.read_bytes().splitlines()) == 1


def test_replay_streams_across_ticks_while_entries_keep_coming(
    redis_client: redis.Redis, tmp_path: Path
) -> None:
    dlq = DeadLetterQueue(redis_client, max_entries=100_000)
    # Small segments, so the replay crosses from one file to the next, but nothing is dropped.
    spool = Spool(tmp_path, max_bytes=2_000_000)
    spool.append_many(make_entry(f"e{n:04d}") for n in range(1000))
    assert len(segment_files(spool)) >= 2
    seen: list[str] = []
    store = recording(dlq, seen)

    assert spool.replay(store, max_seconds=60, max_entries=300) == 300
    assert seen == [f"e{n:04d}" for n in range(300)]
    assert spool.status().pending == 700
    # Appended between two ticks (as pool children do): after everything already there.
    spool.append_many(make_entry(f"late{n}") for n in range(50))
    ticks = 1
    while spool.pending():
        assert spool.replay(store, max_seconds=60, max_entries=300) <= 300
        ticks += 1
    assert ticks == 4  # 300, 300, 300, 150
    assert seen == [f"e{n:04d}" for n in range(1000)] + [f"late{n}" for n in range(50)]
    assert dlq.size("celery") == 1050
    assert not segment_files(spool)
    status = spool.status()
    assert (status.pending, status.pending_bytes, status.replayed) == (0, 0, 1050)


def _append_from_another_process(directory: Path, writer: int, count: int) -> None:
    spool = Spool(directory, max_bytes=1_000_000)
    for n in range(count):
        spool.append(make_entry(f"p{writer}-{n:03d}"))


def test_appends_from_other_processes_during_a_replay_lose_and_repeat_nothing(
    redis_client: redis.Redis, tmp_path: Path
) -> None:
    dlq = DeadLetterQueue(redis_client, max_entries=100_000)
    spool = Spool(tmp_path, max_bytes=1_000_000)  # segments of 125 KB: several seals meanwhile
    context = multiprocessing.get_context("fork")
    writers = [
        context.Process(target=_append_from_another_process, args=(tmp_path, n, 300))
        for n in range(3)
    ]
    for writer in writers:
        writer.start()
    seen: list[str] = []
    store = recording(dlq, seen)
    try:
        while any(writer.is_alive() for writer in writers):
            spool.replay(store, max_entries=40)
    finally:
        for writer in writers:
            writer.join(30)
    spool.replay_all(store)
    expected = [f"p{writer}-{n:03d}" for writer in range(3) for n in range(300)]
    assert sorted(seen) == expected  # each handed to Redis once: none lost, none twice
    for writer in range(3):
        mine = [task_id for task_id in seen if task_id.startswith(f"p{writer}-")]
        assert mine == sorted(mine)  # in the order they were spooled
    assert dlq.size("celery") == 900
    assert not spool.pending() and not segment_files(spool)
    assert spool.status().dropped == 0


def test_the_drain_backs_off_while_redis_is_away_then_replays(
    dlq_server: RedisServer, tmp_path: Path
) -> None:
    capture = FailureCapture(Celery("backoff"), dlq_server.url, Options(spool_dir=tmp_path))
    drain = SpoolDrain(capture, worker="w@test", host="host-b")
    assert drain.step() == IDLE_SECONDS  # nothing spooled: nothing to probe
    dlq_server.stop()
    capture.store(make_entry("while-away"))  # fails: spooled, the circuit opens
    assert capture.spool.pending() and capture.circuit_open()
    delays = [drain.step() for _ in range(6)]
    assert all(BACKOFF_BASE <= delay <= BACKOFF_MAX for delay in delays), delays
    assert capture.circuit_open()  # held while the probes fail
    capture.store(make_entry("still-away"))  # straight to the spool, Redis not tried
    assert capture.spool.status().pending == 2

    dlq_server.start()
    while capture.spool.pending():
        drain.step()
    assert not capture.circuit_open()
    assert sorted(task_ids(capture.dlq, "celery")) == ["still-away", "while-away"]
    capture.store(make_entry("direct"))
    assert sorted(task_ids(capture.dlq, "celery")) == ["direct", "still-away", "while-away"]
    assert capture.spool.status().replayed == 2


def test_a_tick_is_bounded_in_time(redis_client: redis.Redis, tmp_path: Path) -> None:
    dlq = DeadLetterQueue(redis_client, max_entries=100_000)
    spool = Spool(tmp_path)
    spool.append_many(make_entry(f"e{n}") for n in range(2000))
    seen: list[str] = []
    assert 1 <= spool.replay(recording(dlq, seen), max_seconds=0.0) <= REPLAY_BATCH
    assert spool.status().pending == 2000 - len(seen)


def test_the_spool_stays_under_its_cap_and_keeps_the_newest(
    redis_client: redis.Redis, tmp_path: Path
) -> None:
    cap = 20_000
    spool = Spool(tmp_path, max_bytes=cap)
    one_entry = len(make_entry("e0000").to_json()) + 1
    for n in range(300):
        spool.append(make_entry(f"e{n:04d}"))
        assert spool.disk_bytes() <= cap + one_entry
    status = spool.status()
    assert status.dropped > 0
    assert status.pending + status.dropped == 300
    assert status.dropped_at is not None
    assert segment_files(spool)
    assert {path.stat().st_mode & 0o777 for path in tmp_path.iterdir()} == {0o600}

    seen: list[str] = []
    spool.replay_all(recording(DeadLetterQueue(redis_client), seen))
    assert seen == [f"e{n:04d}" for n in range(300 - len(seen), 300)]  # the newest, in order
    assert len(seen) == status.pending
    assert spool.status().dropped == status.dropped  # kept after the replay


def test_the_dropped_count_is_reported_once_redis_answers(
    redis_server: RedisServer,
    redis_client: redis.Redis,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    capture = FailureCapture(
        Celery("dropping"), redis_server.url, Options(spool_dir=tmp_path, spool_max_bytes=20_000)
    )
    assert capture.spool.max_bytes == 20_000
    for n in range(300):
        capture.spool.append(make_entry(f"e{n:04d}"))
    dropped = capture.spool.status().dropped
    assert dropped > 0

    drain = SpoolDrain(capture, worker="w@test", host="host-a")
    with caplog.at_level(logging.ERROR, logger="celery_morgue.core.spool_drain"):
        for _ in range(100):
            drain.step()
            if not capture.spool.pending():
                break
        drain.step()  # an idle tick reports the final state
    assert not capture.spool.pending()
    [state] = [state for state in spool_states(redis_client, "dlq:") if state.host == "host-a"]
    assert (state.host, state.worker, state.pending, state.dropped) == (
        "host-a",
        "w@test",
        0,
        dropped,
    )
    assert f"{dropped} spooled entries were dropped" in caplog.text
    assert capture.spool.status().unreported_dropped == 0
    assert capture.dlq.size("celery") == 300 - dropped
    # Shown: entries were lost on that host.
    assert "host-a" in [backlog.host for backlog in spool_backlogs(redis_client, "dlq:")]


def test_a_lost_header_replays_again_but_loses_nothing(
    redis_client: redis.Redis, tmp_path: Path
) -> None:
    dlq = DeadLetterQueue(redis_client)
    spool = Spool(tmp_path, max_bytes=400_000)
    spool.append_many(make_entry(f"e{n:03d}") for n in range(500))
    spool.replay(recording(dlq, []), max_seconds=60, max_entries=200)
    spool.state_path.unlink()  # as if it were lost in a crash
    seen: list[str] = []
    spool.replay_all(recording(dlq, seen))
    assert set(seen) >= {f"e{n:03d}" for n in range(200, 500)}
    assert sorted(task_ids(dlq, "celery")) == [f"e{n:03d}" for n in range(500)]
    assert not spool.pending() and not segment_files(spool)


def test_segments_left_by_a_process_killed_while_sealing_are_still_drained(
    redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path
) -> None:
    capture = FailureCapture(
        Celery("sealing"), redis_server.url, Options(spool_dir=tmp_path, spool_max_bytes=20_000)
    )
    spool = capture.spool
    spool.append_many(make_entry(f"e{n:02d}") for n in range(20))
    assert segment_files(spool)
    # Killed right after renaming the active segment, before the next append or the header.
    header = json.loads(spool.state_path.read_bytes())
    spool.path.rename(spool.segment_path(header["active_no"]))
    assert not spool.pending()  # the one-stat check cannot see them...
    drain = SpoolDrain(capture, host="host-c")
    for _ in range(20):
        drain.step()
        if len(task_ids(capture.dlq, "celery")) == 20:
            break
    # ...the drain's look at the header does.
    assert sorted(task_ids(capture.dlq, "celery")) == [f"e{n:02d}" for n in range(20)]
    assert not segment_files(spool)


def test_spool_max_bytes_is_an_option(tmp_path: Path) -> None:
    installed = core.install(
        Celery("capped", broker="redis://127.0.0.1:1/0"), spool_dir=tmp_path, spool_max_bytes=4096
    )
    assert installed.capture.spool.max_bytes == 4096
    assert Options().spool_max_bytes == 256 * 1024 * 1024
    for bad in (0, -1, 1.5, True, "1"):
        with pytest.raises(ValueError, match="spool_max_bytes"):
            Options(spool_max_bytes=bad)  # type: ignore[arg-type]


def test_install_adds_the_drain_to_the_workers_consumer(tmp_path: Path) -> None:
    app = Celery("drained", broker="redis://127.0.0.1:1/0")
    core.install(app, spool_dir=tmp_path)
    assert SpoolDrainStep in app.steps["consumer"]


# -- the per-host state, where people see it -------------------------------------------------


def test_hosts_with_a_backlog_are_listed_by_queues_and_the_status_line(
    redis_server: RedisServer, redis_client: redis.Redis, morgue: Morgue
) -> None:
    write_spool_state(
        redis_client,
        "dlq:",
        SpoolState(host="host1", path="/var/spool-a.jsonl", pending=12, pending_bytes=6_800),
    )
    write_spool_state(redis_client, "dlq:", SpoolState(host="host2", path="/b", pending=0))
    write_spool_state(redis_client, "dlq:", SpoolState(host="gone", path="/c", pending=3), ttl=1)
    [gone] = _keys(redis_client, "gone")
    wait_for(lambda: not redis_client.exists(gone), timeout=5)  # a host that stopped reporting

    backlogs = spool_backlogs(redis_client, "dlq:")
    assert [(state.host, state.pending) for state in backlogs] == [("host1", 12)]
    assert _keys(redis_client, "gone") == []  # the reader forgot it

    human = morgue("--url", redis_server.url, "queues")
    assert human.returncode == 0, human.stderr
    assert human.stdout.splitlines() == [
        "the DLQ is empty",
        "spool on host1: 12 pending (6,800 bytes)",
    ]
    assert morgue.json("--url", redis_server.url, "queues") == []  # still an array of queues

    hosts = tuple((state.host, state.pending) for state in backlogs)
    status = Status(profile="p", url="redis://x", spool=hosts)
    assert "spool: host1 12 pending" in status.render().plain


def _keys(client: redis.Redis, host: str) -> list[str]:
    return [
        key.decode()
        for key in client.zrange("dlq@spools", 0, -1)
        if key.decode().startswith(f"dlq@spool:{host}:")
    ]
