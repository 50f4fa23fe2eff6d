"""The DLQ's storage properties against a real Redis: retention, cap, paging, clear, index."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import redis

from celery_morgue.core import DeadLetterQueue, DLQError, EntryNotFound
from celery_morgue.tui.demo.processes import RedisServer
from tests.helpers import REPO, make_entry, stream_ms, wait_for, wait_for_redis_clock


def test_add_then_read_back(redis_client: redis.Redis) -> None:
    dlq = DeadLetterQueue(redis_client)
    entry_id = dlq.add(make_entry("t1"))
    stored = dlq.get("celery", entry_id)
    assert stored.id == entry_id
    assert stored.task_id == "t1"
    assert stored.kwargs == {"three": 3}
    assert stored.message == "failure of t1"
    assert stored.priority == 0
    assert redis_client.type("dlq:celery") == b"stream"


def test_the_same_failure_is_stored_once(redis_client: redis.Redis) -> None:
    dlq = DeadLetterQueue(redis_client)
    first = dlq.add(make_entry("t1", failure_id="f1"))
    assert first is not None
    # Celery's second signal for one failure, or a spool replay, carries the same failure id.
    assert dlq.add(make_entry("t1", failure_id="f1", exception=RuntimeError("again"))) is None
    # Even when the second signal names another queue (an empty request on the main process).
    assert dlq.add(make_entry("t1", queue="other", failure_id="f1")) is None
    assert dlq.size("celery") == 1
    assert dlq.size("other") == 0
    assert dlq.get("celery", first).exception == "ValueError"
    replies = dlq.add_many([make_entry("t1", failure_id="f1"), make_entry("t2")])
    assert replies[0] is None and replies[1] is not None
    assert dlq.size("celery") == 2


def test_a_later_failure_of_the_same_task_id_is_stored(redis_client: redis.Redis) -> None:
    """Fixed task ids (``task_id=f"invoice-{n}"``): every failure counts, deleted or not."""
    dlq = DeadLetterQueue(redis_client)
    first = dlq.add(make_entry("invoice-7"))
    assert first is not None
    dlq.delete("celery", first)
    second = dlq.add(make_entry("invoice-7"))
    assert second is not None
    assert [entry.id for entry in dlq.iter_entries("celery")] == [second]
    # And while the first is still there, a second failure is a second entry.
    assert dlq.add(make_entry("invoice-7")) is not None
    assert dlq.size("celery") == 2


def test_entries_without_a_failure_id_fall_back_to_the_task_id(redis_client: redis.Redis) -> None:
    """Spool lines written by an older version have no failure id."""
    dlq = DeadLetterQueue(redis_client)
    old = make_entry("t-old")
    old.failure_id = ""
    assert dlq.add(old) is not None
    assert dlq.add(old) is None


def test_remembered_failures_are_bounded(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("celery_morgue.core.dlq.SEEN_LIMIT", 50)
    dlq = DeadLetterQueue(redis_client, max_entries=5)
    dlq.add_many(make_entry(f"t{n}", failure_id=f"f{n}") for n in range(300))
    assert dlq.size("celery") == 5
    assert redis_client.zcard("dlq@seen") == 50
    # The newest are the ones remembered.
    assert dlq.add(make_entry("t299", failure_id="f299")) is None


def test_reader_applies_retention_before_the_key_expires(redis_client: redis.Redis) -> None:
    writer = DeadLetterQueue(redis_client, retention=2)
    old = stream_ms(writer.add(make_entry("old")))
    wait_for_redis_clock(redis_client, old + 1000)
    writer.add(make_entry("new"))
    wait_for_redis_clock(redis_client, old + 2000)  # "old" is past its retention, "new" is not
    assert redis_client.xlen("dlq:celery") == 2, "nothing trimmed yet: the reader must do it"
    reader = DeadLetterQueue(redis_client)
    assert [e.task_id for e in reader.iter_entries("celery")] == ["new"]
    assert [(q.queue, q.total) for q in reader.queues()] == [("celery", 1)]


def test_retention_drops_old_entries_and_keeps_newer(redis_client: redis.Redis) -> None:
    dlq = DeadLetterQueue(redis_client, retention=1)
    old = stream_ms(dlq.add(make_entry("old")))
    wait_for_redis_clock(redis_client, old + 1000)
    dlq.add(make_entry("new"))
    assert [e.task_id for e in dlq.iter_entries("celery")] == ["new"]
    # The key's own TTL follows the newest entry, so a quiet queue still empties itself.
    assert 0 < redis_client.pttl("dlq:celery") <= 1000


def test_a_queue_nobody_writes_to_empties_itself(redis_client: redis.Redis) -> None:
    dlq = DeadLetterQueue(redis_client, retention=1)
    dlq.add(make_entry("a", queue="quiet"))
    newest = stream_ms(dlq.add(make_entry("b", queue="busy")))
    wait_for_redis_clock(redis_client, newest + 1000)
    reader = DeadLetterQueue(redis_client)  # a reader knows nothing of the writer's retention
    assert reader.queues() == []
    assert redis_client.hlen("dlq@queues") == 0
    assert not redis_client.exists("dlq:quiet", "dlq:busy")


def test_retention_is_per_entry_not_refreshed_by_new_failures(redis_client: redis.Redis) -> None:
    dlq = DeadLetterQueue(redis_client, retention=2)
    first = stream_ms(dlq.add(make_entry("first")))
    for n in range(3):
        wait_for_redis_clock(redis_client, first + 800 * (n + 1))
        dlq.add(make_entry(f"later-{n}"))
    ids = [e.task_id for e in dlq.iter_entries("celery")]
    assert "first" not in ids
    assert ids[0] == "later-2"


def test_the_cap_drops_the_oldest_first(redis_client: redis.Redis) -> None:
    dlq = DeadLetterQueue(redis_client, max_entries=5)
    for n in range(8):
        dlq.add(make_entry(f"t{n}"))
    assert [e.task_id for e in dlq.iter_entries("celery")] == ["t7", "t6", "t5", "t4", "t3"]
    dlq.add_many([make_entry(f"u{n}") for n in range(3)])
    assert dlq.size("celery") == 5


def test_queues_lists_counts_and_times_from_the_index(redis_client: redis.Redis) -> None:
    dlq = DeadLetterQueue(redis_client)
    redis_client.set("unrelated", "x")
    dlq.add_many([make_entry(f"a{n}", queue="alpha") for n in range(3)])
    dlq.add(make_entry("b0", queue="beta"))
    infos = dlq.queues()
    assert [(i.queue, i.total) for i in infos] == [("alpha", 3), ("beta", 1)]
    alpha = infos[0]
    assert alpha.oldest is not None and alpha.newest is not None
    assert alpha.oldest <= alpha.newest
    assert json.loads(json.dumps(alpha.as_dict()))["total"] == 3
    # Cleared or expired queues leave the index.
    dlq.clear("beta")
    redis_client.delete("dlq:alpha")
    assert dlq.queues() == []


@pytest.mark.slow
def test_paging_25000_entries_has_no_duplicates_and_no_gaps(redis_client: redis.Redis) -> None:
    dlq = DeadLetterQueue(redis_client, max_entries=100_000)
    total = 25_000
    for start in range(0, total, 2_500):
        dlq.add_many(make_entry(f"t{n}", args=[n]) for n in range(start, start + 2_500))
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        page = dlq.page("celery", cursor, limit=50)
        assert page.total == total
        seen.extend(int(entry.args[0]) for entry in page.items)  # type: ignore[arg-type]
        pages += 1
        if page.next is None:
            break
        cursor = page.next
    assert pages == total // 50 + 1  # the last full page is followed by an empty one
    assert seen == list(range(total - 1, -1, -1))


@pytest.mark.parametrize("bad", ["garbage", " 1-0", "+1-0", "1_0-0", "\u0661-0", "1-0-0", ""])
def test_malformed_entry_ids_are_refused_before_redis_sees_them(
    redis_client: redis.Redis, bad: str
) -> None:
    dlq = DeadLetterQueue(redis_client)
    for call in (
        lambda: dlq.page("celery", cursor=bad),
        lambda: dlq.get("celery", bad),
        lambda: dlq.delete("celery", bad),
        lambda: dlq.clear("celery", up_to=bad),
    ):
        with pytest.raises(DLQError, match="not an entry id"):
            call()


def test_a_prefix_must_end_with_a_colon(redis_client: redis.Redis) -> None:
    with pytest.raises(ValueError, match="end with ':'"):
        DeadLetterQueue(redis_client, prefix="dlq")


def test_delete_one_entry(redis_client: redis.Redis) -> None:
    dlq = DeadLetterQueue(redis_client)
    keep, drop = dlq.add(make_entry("keep")), dlq.add(make_entry("drop"))
    assert keep is not None and drop is not None
    assert dlq.delete("celery", drop) == 1
    assert dlq.delete("celery", drop) == 0
    assert [e.id for e in dlq.iter_entries("celery")] == [keep]
    with pytest.raises(EntryNotFound):
        dlq.get("celery", drop)


def test_clear_up_to_keeps_what_arrived_later(redis_client: redis.Redis) -> None:
    dlq = DeadLetterQueue(redis_client)
    dlq.add_many(make_entry(f"seen{n}") for n in range(10))
    newest_seen = dlq.newest_id("celery")
    assert newest_seen is not None
    late = dlq.add(make_entry("late"))
    assert dlq.clear("celery", up_to=newest_seen) == 10
    assert [e.id for e in dlq.iter_entries("celery")] == [late]


WRITER = """
import sys, redis
from celery_morgue.core import DeadLetterQueue
from tests.helpers import make_entry
dlq = DeadLetterQueue(redis.Redis.from_url(sys.argv[1]), max_entries=1_000_000)
count = int(sys.argv[2])
for n in range(count):
    dlq.add(make_entry(f"w{n}"))
print(count)
"""


def test_clear_up_to_while_another_process_writes(
    redis_client: redis.Redis, redis_server: RedisServer
) -> None:
    dlq = DeadLetterQueue(redis_client)
    written = 4_000
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, redis_server.url, str(written)],
        cwd=REPO,
        stdout=subprocess.PIPE,
    )
    try:
        wait_for(lambda: dlq.size("celery") >= 500, timeout=30)
        up_to = dlq.newest_id("celery")
        assert up_to is not None
        removed = dlq.clear("celery", up_to=up_to)
    finally:
        out, _ = writer.communicate(timeout=60)
    assert writer.returncode == 0
    assert int(out) == written
    remaining = list(dlq.iter_entries("celery"))
    assert removed >= 500
    assert removed + len(remaining) == written
    assert all(
        tuple(map(int, entry.id.split("-"))) > tuple(map(int, up_to.split("-")))
        for entry in remaining
    )
    assert removed < written, "the writer finished before the clear: nothing was tested"


def test_summary_is_ready_to_serve(redis_client: redis.Redis) -> None:
    dlq = DeadLetterQueue(redis_client)
    dlq.add_many(make_entry(f"t{n}") for n in range(3))
    summary = dlq.summary("celery", limit=2)
    assert set(summary) == {"queue", "total", "items"}
    assert summary["total"] == 3
    assert [item["task_id"] for item in summary["items"]] == ["t2", "t1"]
    json.dumps(summary)


def test_trim_applies_retention_to_every_queue(redis_client: redis.Redis) -> None:
    writer = DeadLetterQueue(redis_client, retention=1)
    one = stream_ms(writer.add(make_entry("x", queue="one")))
    DeadLetterQueue(redis_client, retention=60).add(make_entry("y", queue="two"))
    wait_for_redis_clock(redis_client, one + 1000)
    assert DeadLetterQueue(redis_client).trim() == {"one": 0, "two": 1}
