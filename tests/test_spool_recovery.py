"""Redis away while tasks fail: entries wait in the local spool and arrive exactly once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from celery_morgue.core import DeadLetterQueue
from celery_morgue.core.entry import Entry
from celery_morgue.core.spool import Spool, spool_for
from celery_morgue.tui.demo.processes import RedisServer
from tests.helpers import Worker, make_entry, wait_for


def into(dlq: DeadLetterQueue) -> Callable[[list[Entry]], int]:
    """A spool replay target that counts what Redis stored anew."""
    return lambda batch: sum(1 for stored in dlq.add_many(batch) if stored)


@pytest.fixture
def dlq_server() -> Iterator[RedisServer]:
    with RedisServer(persistent=True) as server:
        yield server


def test_failures_while_redis_is_down_arrive_once_after_restart(
    redis_server: RedisServer, dlq_server: RedisServer, start_worker: Callable[..., Worker]
) -> None:
    # Its own queue, so the session's shared worker on the same broker takes none of these.
    queue = "spool-recovery"
    worker = start_worker(redis_server.url, queues=queue, env={"MORGUE_TEST_DLQ": dlq_server.url})
    dlq = DeadLetterQueue(redis.Redis.from_url(dlq_server.url))
    spool = spool_for(worker.spool_dir, dlq_server.url, "dlq:")

    before = [worker.send("boom", f"before {n}", queue=queue) for n in range(3)]
    wait_for(lambda: dlq.size(queue) == 3, timeout=30)

    dlq_server.stop()
    during = [worker.send("boom", f"during {n}", queue=queue) for n in range(5)]
    wait_for(lambda: spool.status().pending == 5, timeout=30)

    dlq_server.start()
    dlq.client.connection_pool.disconnect()
    # No failure is needed for the spool to arrive: the worker's main process drains it.
    wait_for(lambda: task_ids(dlq, queue) == set(before + during), timeout=15)
    after = worker.send("boom", "after", queue=queue)
    expected = set(before + during + [after])
    wait_for(lambda: task_ids(dlq, queue) == expected, timeout=15)
    stored = [entry.task_id for entry in dlq.iter_entries(queue) if isinstance(entry, Entry)]
    assert sorted(stored) == sorted(expected), "an entry is missing or duplicated"
    assert not spool.pending()
    assert "spooled" in worker.log()


def task_ids(dlq: DeadLetterQueue, queue: str) -> set[str]:
    return {entry.task_id for entry in dlq.iter_entries(queue) if isinstance(entry, Entry)}


def test_a_replay_of_entries_already_stored_adds_nothing(
    redis_client: redis.Redis, tmp_path: Path
) -> None:
    dlq = DeadLetterQueue(redis_client)
    spool = Spool(tmp_path)
    stored = make_entry("reached-redis")
    dlq.add(stored)
    # A write that timed out after Redis applied it is spooled as well.
    spool.append(stored)
    spool.append(make_entry("never-reached"))
    assert spool.replay(into(dlq)) == 1
    assert sorted(e.task_id for e in dlq.iter_entries("celery")) == [
        "never-reached",
        "reached-redis",
    ]
    assert spool.replay(into(dlq)) == 0


def test_a_torn_spool_line_is_set_aside_not_lost(redis_client: redis.Redis, tmp_path: Path) -> None:
    dlq = DeadLetterQueue(redis_client)
    spool = Spool(tmp_path)
    spool.append(make_entry("good"))
    with open(spool.path, "ab") as handle:
        handle.write(b'{"task_id": "torn", "tas\n[1, 2]\n{"task_id": "no fields"}\n')
    assert spool.replay(into(dlq)) == 1
    assert [e.task_id for e in dlq.iter_entries("celery")] == ["good"]
    assert b'"torn"' in spool.rejected_path.read_bytes()
    assert spool.rejected_path.stat().st_mode & 0o777 == 0o600
    assert not spool.pending()


def test_replay_keeps_the_spool_when_redis_is_still_away(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(make_entry("waiting"))
    dead = DeadLetterQueue(redis.Redis(port=1, socket_connect_timeout=0.2))
    with pytest.raises(redis.ConnectionError):
        spool.replay(into(dead))
    assert spool.pending()


def test_spooled_entries_past_their_retention_are_not_replayed(
    redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path
) -> None:
    import datetime as dt

    from celery import Celery

    from celery_morgue.core.capture import FailureCapture
    from celery_morgue.core.options import Options

    capture = FailureCapture(
        Celery("retention"), redis_server.url, Options(spool_dir=tmp_path, retention=60)
    )
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=120)
    capture.spool.append(make_entry("expired", failed_at=long_ago))
    capture.spool.append(make_entry("fresh"))
    assert capture.replay_spool() == 1
    assert [e.task_id for e in DeadLetterQueue(redis_client).iter_entries("celery")] == ["fresh"]
    assert not capture.spool.pending()


def test_each_destination_has_its_own_spool(tmp_path: Path) -> None:
    billing = spool_for(tmp_path, "redis://:secret@billing:6379/0", "dlq:")
    search = spool_for(tmp_path, "redis://search:6379/0", "dlq:")
    other_prefix = spool_for(tmp_path, "redis://search:6379/0", "search:")
    assert len({billing.path, search.path, other_prefix.path}) == 3
    assert "secret" not in str(billing.path)
    billing.append(make_entry("charge-1"))
    assert billing.pending() and not search.pending()


def test_a_bad_spool_never_reaches_the_worker(
    redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path
) -> None:
    from celery import Celery

    from celery_morgue.core.capture import FailureCapture
    from celery_morgue.core.options import Options

    capture = FailureCapture(Celery("bad-spool"), redis_server.url, Options(spool_dir=tmp_path))
    with open(capture.spool.path, "wb") as handle:
        handle.write(b'[1, 2]\n{"task_id": "x"}\n')
        bad_time = make_entry("bad-time")
        handle.write(bad_time.to_json().replace(bad_time.failed_at, "yesterday").encode() + b"\n")
    capture.spool.append(make_entry("good"))
    capture.store(make_entry("live"))  # a good write replays, and must not raise
    assert sorted(e.task_id for e in DeadLetterQueue(redis_client).iter_entries("celery")) == [
        "good",
        "live",
    ]
    assert not capture.spool.pending()
    assert len(capture.spool.rejected_path.read_bytes().splitlines()) == 3
