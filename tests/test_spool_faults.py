"""Faults the spool must survive: an entry Redis refuses for good, a replayer killed at the
worst moment, and two threads (or greenlets) of one process taking the spool's lock."""

from __future__ import annotations

import fcntl
import json
import linecache
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery

from celery_morgue.core import DeadLetterQueue
from celery_morgue.core.capture import FailureCapture
from celery_morgue.core.entry import Entry
from celery_morgue.core.options import Options
from celery_morgue.core.spool import Spool, spool_for
from celery_morgue.core.spool_drain import SpoolDrain
from celery_morgue.tui.demo.processes import RedisServer
from tests.helpers import Worker, make_entry, wait_for


@pytest.fixture
def dlq_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def task_ids(dlq: DeadLetterQueue, queue: str = "celery") -> list[str]:
    return sorted(entry.task_id for entry in dlq.iter_entries(queue) if isinstance(entry, Entry))


def into(dlq: DeadLetterQueue) -> Callable[[list[Entry]], int]:
    return lambda batch: sum(1 for stored in dlq.add_many(batch) if stored)


def rejected(spool: Spool) -> list[dict[str, object]]:
    """The entries set aside with their error (not the raw torn lines)."""
    if not spool.rejected_path.exists():
        return []
    rows = []
    for line in spool.rejected_path.read_bytes().splitlines():
        row = json.loads(line)
        if isinstance(row, dict) and "error" in row:
            rows.append(row)
    return rows


def drain_until_empty(drain: SpoolDrain, steps: int = 20) -> None:
    for _ in range(steps):
        drain.step()
        if not drain.capture.spool.pending():
            return


# -- 1. an entry Redis refuses for good -------------------------------------------------------


def test_a_write_redis_refuses_for_good_is_set_aside_not_spooled(
    redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path
) -> None:
    redis_client.set("dlq:poison", "someone else's key")
    capture = FailureCapture(Celery("poison"), redis_server.url, Options(spool_dir=tmp_path))
    capture.store(make_entry("refused", "poison"))
    assert not capture.spool.pending(), "a permanent refusal went to the spool"
    assert not capture.circuit_open(), "a permanent refusal opened the circuit"
    [row] = rejected(capture.spool)
    assert "WRONGTYPE" in str(row["error"])
    assert isinstance(row["entry"], dict) and row["entry"]["task_id"] == "refused"
    capture.store(make_entry("next"))  # straight to Redis
    assert task_ids(capture.dlq) == ["next"]
    assert redis_client.get("dlq:poison") == b"someone else's key"


def test_a_poison_entry_in_the_spool_is_set_aside_and_the_rest_replays(
    redis_server: RedisServer,
    redis_client: redis.Redis,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    redis_client.set("dlq:poison", "x")
    capture = FailureCapture(Celery("poison"), redis_server.url, Options(spool_dir=tmp_path))
    capture.spool.append(make_entry("before"))
    capture.spool.append(make_entry("poisoned", "poison"))  # spooled by an earlier version
    capture.spool.append(make_entry("after"))
    drain = SpoolDrain(capture, host="host-p")
    with caplog.at_level(logging.INFO):
        drain_until_empty(drain)
        for _ in range(3):
            drain.step()  # idle ticks: nothing left to refuse
    assert not capture.spool.pending(), "the poison entry blocks the spool"
    assert task_ids(capture.dlq) == ["after", "before"]
    assert not capture.circuit_open()
    [row] = rejected(capture.spool)
    assert isinstance(row["entry"], dict) and row["entry"]["task_id"] == "poisoned"
    assert "WRONGTYPE" in str(row["error"])
    refusals = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1 and refusals[0].levelno == logging.ERROR
    assert "spool replay deferred" not in caplog.text
    assert capture.spool.status().replayed == 3


def test_a_transient_refusal_keeps_the_spool_and_the_backoff(
    dlq_server: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = redis.Redis.from_url(dlq_server.url)
    capture = FailureCapture(Celery("oom"), dlq_server.url, Options(spool_dir=tmp_path))
    capture.store(make_entry("first"))  # loads the script, while there is room
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", 1)  # every write is refused with OOM; PING still answers
    capture.store(make_entry("live-oom"))
    assert capture.spool.pending() and capture.circuit_open(), "OOM is Redis away, not poison"
    capture.close_circuit()
    drain = SpoolDrain(capture, host="host-o")
    with caplog.at_level(logging.DEBUG, logger="celery_morgue.core.spool_drain"):
        for _ in range(6):
            drain.step()
    assert capture.spool.status().pending == 1 and not rejected(capture.spool)
    assert capture.circuit_open()  # held: writes would fail too
    warnings = [
        r
        for r in caplog.records
        if r.name == "celery_morgue.core.spool_drain" and r.levelno >= logging.WARNING
    ]
    assert [r.getMessage().split(":")[1].strip() for r in warnings] == ["spool replay deferred"]
    # PING answered every time, yet the backoff was not reset: "answers again" is never said.
    assert "answers again" not in caplog.text

    client.config_set("maxmemory", 0)
    drain_until_empty(drain)
    assert task_ids(capture.dlq) == ["first", "live-oom"]
    assert not capture.circuit_open()


@pytest.mark.slow
def test_a_poison_entry_does_not_hold_the_main_process_on_the_spool(
    redis_server: RedisServer, dlq_server: RedisServer, start_worker: Callable[..., Worker]
) -> None:
    worker = start_worker(
        redis_server.url, queues="poisoned,fine", env={"MORGUE_TEST_DLQ": dlq_server.url}
    )
    client = redis.Redis.from_url(dlq_server.url)
    dlq = DeadLetterQueue(client)
    spool = spool_for(worker.spool_dir, dlq_server.url, "dlq:")
    client.set("dlq:poisoned", "not a stream")
    refused = worker.send("boom", "refused for good", queue="poisoned")
    wait_for(lambda: [r for r in rejected(spool) if r["entry"]["task_id"] == refused], timeout=30)  # type: ignore[index]
    # A failure the main process stores (the pool child died): straight into Redis.
    lost = worker.send("kill_own_process", queue="fine")
    wait_for(lambda: task_ids(dlq, "fine") == [lost], timeout=30)
    assert not spool.pending()
    assert "spooled" not in worker.log()
    assert client.get("dlq:poisoned") == b"not a stream"


# -- 2. a replayer killed between emptying the active segment and the header ------------------


def _replay_then_die_at_truncate(spool: Spool, url: str) -> None:
    """In a forked child: replay, and be killed right after the active segment is emptied."""
    try:
        truncate = os.truncate

        def truncate_then_die(path: object, length: int) -> None:
            truncate(path, length)  # type: ignore[arg-type]
            os._exit(9)

        os.truncate = truncate_then_die  # type: ignore[assignment]
        spool.replay(into(DeadLetterQueue(redis.Redis.from_url(url))), max_seconds=60)
    finally:
        os._exit(1)


def test_a_replayer_killed_right_after_emptying_the_spool_loses_no_later_entry(
    redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path
) -> None:
    spool = Spool(tmp_path)
    spool.append_many(make_entry(f"e{n:02d}") for n in range(30))  # two batches: 20, then 10
    pid = os.fork()
    if pid == 0:
        _replay_then_die_at_truncate(spool, redis_server.url)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 9, "the child did not reach the truncate"
    # The header was written before the truncate, not left at the last batch's offset.
    assert json.loads(spool.state_path.read_bytes())["read_offset"] == 0
    dlq = DeadLetterQueue(redis_client)
    assert task_ids(dlq) == [f"e{n:02d}" for n in range(30)]
    spool.append(make_entry("late-1"))
    spool.append(make_entry("late-2"))
    assert spool.status().pending == 2
    assert Spool(tmp_path).replay_all(into(dlq)) == 2
    assert task_ids(dlq) == sorted([f"e{n:02d}" for n in range(30)] + ["late-1", "late-2"])
    assert not spool.pending()


def test_a_header_left_past_the_end_of_the_active_segment_is_reset(
    redis_client: redis.Redis, tmp_path: Path
) -> None:
    # What an earlier version left when killed after truncating: the offset of a batch ago.
    dlq = DeadLetterQueue(redis_client)
    spool = Spool(tmp_path)
    spool.append_many(make_entry(f"e{n:02d}") for n in range(30))
    spool.replay(into(dlq), max_seconds=60, max_entries=20)
    stale = spool.state_path.read_bytes()
    assert json.loads(stale)["read_offset"] > 0
    spool.replay_all(into(dlq))
    spool.state_path.write_bytes(stale)
    spool.append(make_entry("late-1"))
    spool.append(make_entry("late-2"))
    assert spool.status().pending == 2
    assert spool.replay_all(into(dlq)) == 2
    assert task_ids(dlq) == sorted([f"e{n:02d}" for n in range(30)] + ["late-1", "late-2"])


# -- 3. two threads (greenlets) of one process --------------------------------------------------


def _waiting_on_a_lock(thread: threading.Thread) -> bool:
    """Is ``thread`` blocked acquiring a lock in core/spool.py?"""
    frame = sys._current_frames().get(thread.ident or -1)
    if frame is None or not frame.f_code.co_filename.endswith(os.path.join("core", "spool.py")):
        return False
    return ".acquire(" in linecache.getline(frame.f_code.co_filename, frame.f_lineno)


def test_threads_of_one_process_wait_in_process_not_on_the_flock(
    redis_client: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Under gevent or eventlet a greenlet blocked in flock() blocks every other greenlet, the
    # one holding the lock too: in one process, the wait must be on a (patchable) lock.
    real_flock = fcntl.flock
    contended: list[str] = []

    def flock(fd: int, operation: int) -> None:
        if operation & fcntl.LOCK_EX and not operation & fcntl.LOCK_NB:
            try:
                return real_flock(fd, operation | fcntl.LOCK_NB)
            except BlockingIOError:
                contended.append(threading.current_thread().name)
        return real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock)
    dlq = DeadLetterQueue(redis_client)
    spool = Spool(tmp_path)
    spool.append(make_entry("replayed"))
    holding, release = threading.Event(), threading.Event()

    def slow_store(batch: list[Entry]) -> int:
        stored = into(dlq)(batch)
        holding.set()
        release.wait()  # the replay's Redis call, in flight
        return stored

    replayer = threading.Thread(target=spool.replay, args=(slow_store,), name="replayer")
    appender = threading.Thread(target=spool.append, args=(make_entry("appended"),), name="app")
    replayer.start()
    try:
        assert holding.wait(30)
        appender.start()
        wait_for(lambda: contended or _waiting_on_a_lock(appender), timeout=30)
    finally:
        release.set()
        replayer.join(30)
        if appender.ident is not None:
            appender.join(30)
    assert contended == [], "a thread of the process holding the spool blocked in flock()"
    assert task_ids(dlq) == ["replayed"]
    assert spool.status().pending == 1
    assert spool.replay_all(into(dlq)) == 1
    assert task_ids(dlq) == ["appended", "replayed"]


def test_an_acl_that_refuses_writes_keeps_entries_waiting_in_the_spool(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    """NOPERM refuses every entry alike until someone fixes the ACL: not a poison entry."""
    from celery_morgue.core.spool_drain import redis_away

    redis_client.execute_command("ACL", "SETUSER", "readonly-morgue", "on", ">pw", "~*", "+@read")
    try:
        limited = redis.Redis.from_url(
            redis_server.url,
            username="readonly-morgue",
            password="pw",  # noqa: S106 - a test's
        )
        with pytest.raises(redis.RedisError) as refused:
            DeadLetterQueue(limited).add(make_entry("acl-1"))
        assert redis_away(refused.value), refused.value
        limited.close()
    finally:
        redis_client.execute_command("ACL", "DELUSER", "readonly-morgue")
