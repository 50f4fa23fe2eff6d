"""Failure groups against a real Redis and real prefork workers: what is failing, exactly.

The index is checked against the entries themselves after every change: each group's count is
the number of entries that say they are in it, the Redis hash and each group's sorted set agree
with that, and no index key outlives its group.
"""

from __future__ import annotations

import collections
import json
import traceback
from collections.abc import Callable

import pytest
import redis

from celery_morgue.core import DeadLetterQueue, DLQError
from celery_morgue.core.dlq import (
    DETAILS_CHUNK,
    GROUP_CHUNK,
    IDS_PER_DELETE,
    READ_CHUNK,
    WRITE_CHUNK,
)
from celery_morgue.core.entry import (
    TRACEBACK_LIMIT,
    Entry,
    UnreadableEntry,
    group_of,
    unstorable_entry,
)
from celery_morgue.core.groups import (
    UNREADABLE_GROUP,
    fingerprint,
    index_member,
    index_member_id,
    innermost_frame,
    is_group_id,
)
from tests.helpers import (
    Worker,
    make_entry,
    stream_ms,
    wait_for,
    wait_for_entry,
    wait_for_redis_clock,
)


def raised_at(function: str, file: str = "/srv/app/releases/41/shop/billing.py") -> str:
    return (
        "Traceback (most recent call last):\n"
        '  File "/usr/lib/python3/site-packages/celery/app/trace.py", line 453, in trace_task\n'
        "    R = retval = fun(*args, **kwargs)\n"
        f'  File "{file}", line 17, in {function}\n'
        "    raise LookupError(text)\n"
        "LookupError: whatever the message says\n"
    )


def bug(
    task_id: str, function: str, message: str, queue: str = "celery", **fields: object
) -> Entry:
    fields.setdefault("exception", LookupError(message))
    return make_entry(task_id, queue, traceback=raised_at(function), **fields)


def assert_index_exact(client: redis.Redis, dlq: DeadLetterQueue, queue: str) -> dict[str, int]:
    """The groups' counts are those of the entries, in the listing and in Redis; returns them."""
    entries = list(dlq.iter_entries(queue))
    counted = collections.Counter(entry.group for entry in entries)
    report = dlq.groups(queue)
    listed = {summary.group: summary.count for summary in report.groups}
    assert listed == dict(counted)
    assert report.total == sum(counted.values()) == dlq.size(queue)
    assert report.ungrouped == 0
    stored = {k.decode(): int(v) for k, v in client.hgetall(dlq.groups_key(queue)).items()}
    assert stored == dict(counted)
    index_keys = {key.decode() for key in client.scan_iter(f"{dlq.group_key_prefix(queue)}*")}
    assert index_keys == {dlq.group_key(queue, group) for group in counted}
    for group in counted:
        members = client.zrange(dlq.group_key(queue, group), 0, -1)
        indexed = [index_member_id(member.decode()) for member in members]
        assert indexed == sorted(
            (entry.id for entry in entries if entry.group == group),
            key=lambda entry_id: tuple(map(int, entry_id.split("-"))),
        )
    return dict(counted)


def assert_nothing_left(client: redis.Redis, queue: str) -> None:
    """No key of ``queue`` is left but, after a clear, its emptied stream, which expires."""
    leftover = [key.decode() for key in client.scan_iter("dlq*") if queue in key.decode()]
    kept = [key for key in leftover if key == f"dlq:{queue}"]
    assert leftover == kept
    for key in kept:
        assert client.xlen(key) == 0
        assert client.pttl(key) > 0


# -- the fingerprint ---------------------------------------------------------------------------


def test_the_message_and_line_numbers_do_not_split_a_group() -> None:
    one = fingerprint(task="shop.load", exception="LookupError", traceback=raised_at("find"))
    other_line = raised_at("find").replace("line 17", "line 99")
    assert fingerprint(task="shop.load", exception="LookupError", traceback=other_line) == one
    # Deployed at another path: the last two parts of the file name are what counts.
    moved = raised_at("find", file="/opt/venv-2/lib/shop/billing.py")
    assert fingerprint(task="shop.load", exception="LookupError", traceback=moved) == one
    different = {
        fingerprint(task="shop.load", exception="LookupError", traceback=raised_at("charge")),
        fingerprint(task="shop.load", exception="KeyError", traceback=raised_at("find")),
        fingerprint(task="shop.other", exception="LookupError", traceback=raised_at("find")),
        fingerprint(
            task="shop.load",
            exception="LookupError",
            traceback=raised_at("find"),
            reason="terminated",
        ),
    }
    assert one not in different and len(different) == 4
    assert is_group_id(one)


def test_the_innermost_frame_of_chained_and_odd_tracebacks() -> None:
    chained = (
        raised_at("outer")
        + "\nDuring handling of the above exception, another exception occurred:\n\n"
        + raised_at("inner", file="C:\\app\\shop\\tax.py")
    )
    assert str(innermost_frame(chained)) == "shop/tax.py:inner"
    frames_only = '  File "/a/b/c.py", line 3, in only\n    x()\n'  # traceback.format_tb
    assert str(innermost_frame(frames_only)) == "b/c.py:only"
    for nothing in ("", "Traceback (most recent call last):\nValueError", "File x, line y"):
        assert innermost_frame(nothing) is None
    # A message that quotes a frame-like line without a line number is not a frame.
    quoted = raised_at("real") + '  File "fake.py", line many, in liar\n'
    assert str(innermost_frame(quoted)) == "shop/billing.py:real"


def test_index_members_sort_as_the_ids_do() -> None:
    ids = [
        "9-0",
        "10-0",
        "1732406400000-0",
        "1732406400000-9",
        "1732406400000-10",
        "99999999999999-1",
    ]
    members = [index_member(entry_id) for entry_id in ids]
    assert sorted(members, key=lambda m: m.encode()) == members
    assert [index_member_id(member) for member in members] == ids
    assert index_member("0001-02") == index_member("1-2")


# -- three bugs from real workers ---------------------------------------------------------------


def test_three_bugs_with_many_arguments_are_three_groups(
    worker: Worker, redis_client: redis.Redis, dlq: DeadLetterQueue
) -> None:
    sent = {
        "unknown user": [worker.send("load_user", n) for n in range(1, 13)],
        "negative id": [worker.send("load_user", -n) for n in range(1, 9)],
        "bad amount": [worker.send("parse_amount", f"{n},00 €") for n in range(5)],
    }
    entries = {
        bug: [wait_for_entry(dlq, "celery", task_id) for task_id in task_ids]
        for bug, task_ids in sent.items()
    }
    for found in entries.values():
        assert len({entry.group for entry in found}) == 1
        assert len({entry.message for entry in found}) == len(found)  # every message differs
    groups = {bug: found[0].group for bug, found in entries.items()}
    assert len(set(groups.values())) == 3

    report = dlq.groups("celery")
    assert [(s.group, s.count) for s in report.groups] == [
        (groups["unknown user"], 12),
        (groups["negative id"], 8),
        (groups["bad amount"], 5),
    ]
    unknown, negative, amount = report.groups
    assert (unknown.task, unknown.exception) == ("tests.workerapp.load_user", "LookupError")
    assert unknown.where == "tests/workerapp.py:_find_user"
    assert (negative.exception, negative.where) == (
        "ValueError",
        "tests/workerapp.py:_check_user_id",
    )
    assert (amount.task, amount.where) == (
        "tests.workerapp.parse_amount",
        "tests/workerapp.py:_parse_amount",
    )
    assert unknown.sample.startswith("user ") and unknown.sample.endswith(" not found")
    assert unknown.first <= unknown.last
    assert report.total == 25
    assert [info.groups for info in dlq.queues() if info.queue == "celery"] == [3]
    assert_index_exact(redis_client, dlq, "celery")

    # A page of one group holds that group's entries only, newest first, without gaps.
    page = dlq.group_page("celery", groups["negative id"], limit=5)
    rest = dlq.group_page("celery", groups["negative id"], page.next, limit=5)
    ids = [entry.id for entry in page.items + rest.items]
    assert page.total == 8 and rest.next is None
    assert sorted(ids) == sorted(entry.id for entry in entries["negative id"])
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))), reverse=True)


def test_dropped_tasks_without_a_traceback_are_grouped_by_task_and_reason(
    worker: Worker, dlq: DeadLetterQueue
) -> None:
    first = [worker.send("no_such_task_here") for _ in range(3)]
    other = worker.send("no_such_task_either")
    found = [wait_for_entry(dlq, "celery", task_id) for task_id in first]
    stray = wait_for_entry(dlq, "celery", other)
    assert {entry.reason for entry in found} == {"unregistered"}
    assert len({entry.group for entry in found}) == 1
    assert stray.group != found[0].group
    summary = next(s for s in dlq.groups("celery").groups if s.group == found[0].group)
    assert (summary.count, summary.exception, summary.where) == (3, "NotRegistered", "")


def test_a_huge_traceback_and_a_huge_message_still_group(
    worker: Worker, dlq: DeadLetterQueue
) -> None:
    recursed = [wait_for_entry(dlq, "celery", worker.send("recurse_forever")) for _ in range(2)]
    for entry in recursed:
        assert entry.exception == "RecursionError"
        assert (
            "traceback truncated" in entry.traceback
            and len(entry.traceback) < TRACEBACK_LIMIT + 100
        )
        assert is_group_id(entry.group)
    huge = [
        wait_for_entry(dlq, "celery", worker.send("raise_huge_message", size, f"m{size}"))
        for size in (40_000, 90_000)
    ]
    # The message fills the cut traceback's tail; the group still names the raising function.
    assert huge[0].group == huge[1].group
    summary = next(s for s in dlq.groups("celery").groups if s.group == huge[0].group)
    assert summary.where == "tests/workerapp.py:raise_huge_message"
    assert summary.count == 2


# -- exact counts under every way out ------------------------------------------------------------


def test_counts_stay_exact_under_the_cap(redis_client: redis.Redis) -> None:
    dlq = DeadLetterQueue(redis_client, max_entries=10)
    for n in range(25):
        dlq.add(bug(f"t{n}", ("find", "charge", "ship")[n % 3], f"order {n} failed"))
    counts = assert_index_exact(redis_client, dlq, "celery")
    assert sum(counts.values()) == 10
    # A burst larger than the cap, in one pipeline.
    dlq.add_many(bug(f"u{n}", "find", f"order {n}") for n in range(40))
    counts = assert_index_exact(redis_client, dlq, "celery")
    assert list(counts.values()) == [10]


def test_a_lowered_cap_drops_a_bounded_chunk_per_write(redis_client: redis.Redis) -> None:
    roomy = DeadLetterQueue(redis_client, max_entries=1000)
    roomy.add_many(
        bug(f"t{n}", ("find", "charge")[n % 2], "x") for n in range(WRITE_CHUNK * 2 + 50)
    )
    tight = DeadLetterQueue(redis_client, max_entries=10)
    tight.add(bug("one-more", "ship", "x"))
    assert tight.size("celery") == 2 * WRITE_CHUNK + 51 - WRITE_CHUNK  # one write, one chunk
    while tight.size("celery") > 10:
        tight.add(bug(f"more-{tight.size('celery')}", "ship", "x"))
    assert_index_exact(redis_client, tight, "celery")


def test_counts_stay_exact_under_retention(redis_client: redis.Redis) -> None:
    dlq = DeadLetterQueue(redis_client, retention=2)
    old = [stream_ms(dlq.add(bug(f"old{n}", "find", f"user {n}"))) for n in range(5)]
    dlq.add(bug("old-charge", "charge", "card declined"))
    wait_for_redis_clock(redis_client, max(old) + 1000)
    dlq.add(bug("keeper", "refund", "later"))  # keeps the stream alive past the old ones
    wait_for_redis_clock(redis_client, max(old) + 2000)
    assert redis_client.xlen(dlq.key("celery")) == 7, "nothing trimmed yet: retention must be"
    dlq.add_many(bug(f"new{n}", "ship", f"parcel {n}") for n in range(3))
    counts = assert_index_exact(redis_client, dlq, "celery")
    assert sorted(counts.values()) == [1, 3]  # the two old groups are gone, their keys with them
    newest = stream_ms(dlq.newest_id("celery"))
    wait_for_redis_clock(redis_client, newest + 2000)
    assert DeadLetterQueue(redis_client).groups("celery").groups == []
    assert_nothing_left(redis_client, "celery")


def test_a_retention_backlog_is_trimmed_a_chunk_at_a_time_and_exactly(
    redis_client: redis.Redis,
) -> None:
    dlq = DeadLetterQueue(redis_client, retention=2)
    ids = dlq.add_many(bug(f"t{n}", ("find", "charge")[n % 2], "x") for n in range(2500))
    wait_for_redis_clock(redis_client, stream_ms(ids[-1]) + 1000)
    keep = dlq.add(bug("fresh", "ship", "x"))
    wait_for_redis_clock(redis_client, stream_ms(ids[-1]) + 2000)
    assert redis_client.xlen(dlq.key("celery")) > 2400  # a write trims a chunk at most
    assert DeadLetterQueue(redis_client).groups("celery").total == 1
    assert [entry.id for entry in dlq.iter_entries("celery")] == [keep]
    assert_index_exact(redis_client, dlq, "celery")


def test_counts_stay_exact_after_delete_and_clear(
    redis_client: redis.Redis, dlq: DeadLetterQueue
) -> None:
    ids = [dlq.add(bug(f"t{n}", ("find", "charge", "ship")[n % 3], f"n={n}")) for n in range(30)]
    assert dlq.delete("celery", ids[0], ids[1], ids[1], "1-0") == 2
    assert_index_exact(redis_client, dlq, "celery")
    # Clearing up to a seen id keeps what came after it, in its groups.
    seen = ids[20]
    after = [dlq.add(bug(f"late{n}", "find", "late")) for n in range(4)]
    assert dlq.clear("celery", up_to=seen) == 19
    counts = assert_index_exact(redis_client, dlq, "celery")
    assert sum(counts.values()) == 9 + 4
    assert set(after) <= {entry.id for entry in dlq.iter_entries("celery")}
    dlq.clear("celery")
    assert dlq.groups("celery").groups == []
    assert_nothing_left(redis_client, "celery")


def test_a_large_clear_works_in_chunks_and_exactly(
    redis_client: redis.Redis, dlq: DeadLetterQueue
) -> None:
    ids = dlq.add_many(bug(f"t{n}", ("find", "charge")[n % 2], "x") for n in range(3500))
    assert dlq.clear("celery", up_to=str(ids[2999])) == 3000
    counts = assert_index_exact(redis_client, dlq, "celery")
    assert sum(counts.values()) == 500


def test_a_requeued_entry_leaves_its_group(
    worker: Worker, redis_client: redis.Redis, dlq: DeadLetterQueue
) -> None:
    flags = [f"group-flag-{n}" for n in range(4)]
    entries = [wait_for_entry(dlq, "celery", worker.send("fails_until_flag", f)) for f in flags]
    group = entries[0].group
    assert {entry.group for entry in entries} == {group}
    for flag in flags:
        redis_client.set(flag, 1)
    dlq.requeue(worker.control_app, "celery", entries[0].id)
    assert [s.count for s in dlq.groups("celery").groups] == [3]
    report = dlq.requeue_all(worker.control_app, "celery")
    assert len(report.requeued) == 3
    wait_for(lambda: all(redis_client.exists(f"done:{flag}") for flag in flags), timeout=30)
    assert dlq.groups("celery").groups == []
    assert_nothing_left(redis_client, "celery")


# -- hostile data and entries from before groups ------------------------------------------------


def stored_before_groups(client: redis.Redis, dlq: DeadLetterQueue, entry: Entry) -> str:
    """Write ``entry`` the way the previous version did: no group, in the row or the JSON."""
    data = json.loads(entry.to_json())
    data.pop("group")
    client.hset(dlq.index_key, entry.queue, 7 * 24 * 3600 * 1000)
    stream_id = client.xadd(
        dlq.key(entry.queue), {"task_id": entry.task_id, "entry": json.dumps(data)}
    )
    return stream_id.decode()


def test_entries_from_before_groups_are_grouped_when_first_read(
    redis_client: redis.Redis, dlq: DeadLetterQueue
) -> None:
    old = [
        stored_before_groups(redis_client, dlq, bug(f"o{n}", "find", f"user {n}")) for n in range(6)
    ]
    new = dlq.add(bug("n0", "find", "user 99"))
    report = dlq.groups("celery")
    assert (report.total, report.ungrouped) == (7, 6)
    assert [s.count for s in report.groups] == [1]

    page = dlq.page("celery", limit=4)  # reading them groups them, as they would be at capture
    assert {entry.group for entry in page.items} == {dlq.get("celery", new).group}
    report = dlq.groups("celery")
    assert (report.ungrouped, [s.count for s in report.groups]) == (3, [4])
    assert dlq.get("celery", old[0]).group == report.groups[0].group  # get groups it too

    step = dlq.regroup("celery", chunk=3)
    assert (step.scanned, step.grouped) == (3, 2)  # old[0] was grouped by get() already
    while step.next is not None:
        step = dlq.regroup("celery", step.next, chunk=3)
    assert_index_exact(redis_client, dlq, "celery")
    # Grouped once: another regroup, or reading again, changes nothing.
    assert dlq.regroup("celery").grouped == 0
    assert_index_exact(redis_client, dlq, "celery")

    # Late-grouped entries leave their group like any other.
    dlq.delete("celery", old[1])
    dlq.clear("celery", up_to=old[-1])
    assert [s.count for s in dlq.groups("celery").groups] == [1]
    assert redis_client.hlen(dlq.grouped_key("celery")) == 0
    assert_index_exact(redis_client, dlq, "celery")


def test_hostile_stream_rows_do_not_break_grouping_or_the_listing(
    redis_client: redis.Redis, dlq: DeadLetterQueue
) -> None:
    good = dlq.add(bug("good", "find", "[red]markup[/red] \x1b[31m and ‮ bidi"))
    frameless = dlq.add(make_entry("frameless", traceback="Traceback (most recent call last):\n"))
    key = dlq.key("celery")
    real_group = dlq.get("celery", good).group
    hostile = [
        redis_client.xadd(key, {"entry": b"{not json \xff"}),
        redis_client.xadd(key, {"something": "else", "group": "<b>not a group</b>"}),
        redis_client.xadd(key, {"entry": "[1, 2]", "group": "g" * 5000}),
        redis_client.xadd(
            key,
            {
                "entry": json.dumps(
                    {
                        "task_id": "t",
                        "task": "x",
                        "queue": "celery",
                        "failed_at": "2024-01-01T00:00:00+00:00",
                        "group": "../../etc",
                    }
                )
            },
        ),
        redis_client.xadd(key, {"entry": "{}", "group": b"\xff\xfe" * 6}),
    ]
    hostile_ids = [row.decode() for row in hostile]
    items = dlq.page("celery").items
    assert len(items) == 7
    by_id = {item.id: item for item in items}
    assert [type(by_id[i]) for i in hostile_ids] == [
        UnreadableEntry,
        UnreadableEntry,
        UnreadableEntry,
        Entry,
        UnreadableEntry,
    ]
    assert {by_id[i].group for i in hostile_ids if isinstance(by_id[i], UnreadableEntry)} == {
        UNREADABLE_GROUP
    }
    report = dlq.groups("celery")
    assert report.ungrouped == 0
    counts = {s.group: s.count for s in report.groups}
    assert counts[UNREADABLE_GROUP] == 4 and counts[real_group] == 1
    no_frame = dlq.get("celery", frameless).group
    assert next(s for s in report.groups if s.group == no_frame).where == ""
    sample = next(s for s in report.groups if s.group == real_group).sample
    assert sample == "[red]markup[/red] \x1b[31m and ‮ bidi"  # kept as it was
    assert_index_exact(redis_client, dlq, "celery")
    assert dlq.delete("celery", *hostile_ids) == 5
    assert_index_exact(redis_client, dlq, "celery")


def test_a_forged_group_field_is_not_trusted_on_the_way_out(
    redis_client: redis.Redis, dlq: DeadLetterQueue
) -> None:
    """A row naming a group in a shape the index does not use leaves no trace in the counts."""
    dlq.add_many(bug(f"t{n}", "find", "x") for n in range(3))
    redis_client.xadd(dlq.key("celery"), {"entry": "{}", "group": "ABCDEF123456"})
    assert_index_exact(redis_client, dlq, "celery")
    dlq.clear("celery")
    assert_nothing_left(redis_client, "celery")


def test_a_group_page_refuses_a_bad_group_id(dlq: DeadLetterQueue) -> None:
    dlq.add(bug("t", "find", "x"))
    for bad in ("", "zzzzzzzzzzzz", "../etc", "a" * 13):
        with pytest.raises(DLQError):
            dlq.group_page("celery", bad)
    assert dlq.group_page("celery", "0" * 12).items == []


def group_keys(client: redis.Redis, dlq: DeadLetterQueue, queue: str) -> list[str]:
    names = [dlq.groups_key(queue), dlq.grouped_key(queue)]
    names += [key.decode() for key in client.scan_iter(f"{dlq.group_key_prefix(queue)}*")]
    return [name for name in names if client.exists(name)]


def test_an_expired_streams_group_keys_expire_with_it(redis_client: redis.Redis) -> None:
    """No reader, no script: the group keys carry the stream's TTL, so nothing is left."""
    dlq = DeadLetterQueue(redis_client, retention=1)
    ids = dlq.add_many(bug(f"t{n}", ("find", "charge")[n % 2], "x") for n in range(6))
    old = redis_client.xadd(dlq.key("celery"), {"entry": "{}"}).decode()  # grouped when read
    assert dlq.get("celery", old).group == UNREADABLE_GROUP
    keys = group_keys(redis_client, dlq, "celery")
    assert len(keys) == 5  # the counts, the grouped hash, three indexes
    assert all(0 < redis_client.pttl(key) <= 1000 for key in keys)
    wait_for(lambda: not redis_client.exists(dlq.key("celery")), timeout=10)
    assert group_keys(redis_client, dlq, "celery") == []
    wait_for_redis_clock(redis_client, stream_ms(ids[-1]) + 1000)
    dlq.add(bug("again", "charge", "y"))
    assert list(assert_index_exact(redis_client, dlq, "celery").values()) == [1]


def test_a_stream_started_anew_unlinks_what_keys_without_a_ttl_still_held(
    redis_client: redis.Redis, dlq: DeadLetterQueue
) -> None:
    """Keys an older version wrote without a TTL, of a stream that expired (or went by hand)."""
    dlq.add_many(bug(f"t{n}", ("find", "charge", "ship")[n % 3], "x") for n in range(9))
    for key in group_keys(redis_client, dlq, "celery"):
        redis_client.persist(key)
    redis_client.delete(dlq.key("celery"))
    dlq.add(bug("new", "refund", "y"))
    assert list(assert_index_exact(redis_client, dlq, "celery").values()) == [1]


def test_a_row_naming_its_group_twice_is_read_alike_by_python_and_the_scripts(
    redis_client: redis.Redis, dlq: DeadLetterQueue
) -> None:
    """A field written twice: redis-py keeps the last, and so do the scripts."""
    real = dlq.get("celery", dlq.add(bug("real", "find", "x"))).group
    other = bug("other", "charge", "y")
    key = dlq.key("celery")
    payload = other.to_json()
    last_valid = redis_client.execute_command(
        "XADD", key, "*", "group", "not-a-group!", "entry", payload, "group", real
    ).decode()
    last_invalid = redis_client.execute_command(
        "XADD", key, "*", "group", real, "entry", payload, "group", "NOT-HEX-12ch"
    ).decode()
    assert dlq.get("celery", last_valid).group == real
    assert dlq.get("celery", last_invalid).group == other.group  # its entry's, counted now
    # The hand-written row naming a group is not counted until a regroup indexes it ...
    assert {s.group: s.count for s in dlq.groups("celery").groups} == {real: 1, other.group: 1}
    # ... and taking it out does not uncount what it never counted.
    assert dlq.delete("celery", last_valid) == 1
    assert assert_index_exact(redis_client, dlq, "celery") == {real: 1, other.group: 1}
    again = redis_client.execute_command(
        "XADD", key, "*", "group", "x", "entry", payload, "group", real
    ).decode()
    step = dlq.regroup("celery")
    assert (step.scanned, step.grouped, step.next) == (3, 1, None)
    assert assert_index_exact(redis_client, dlq, "celery") == {real: 2, other.group: 1}
    assert dlq.delete("celery", again, last_invalid) == 2
    assert assert_index_exact(redis_client, dlq, "celery") == {real: 1}
    dlq.clear("celery")
    assert_nothing_left(redis_client, "celery")


def test_an_entry_stored_without_its_details_joins_its_bugs_group() -> None:
    def parse_invoice(order: int) -> None:
        raise ValueError(f"order {order} has no invoice")

    try:
        parse_invoice(17)
    except ValueError as exc:
        stored = make_entry(exception=exc, traceback=traceback.format_exc())
        kept = unstorable_entry(
            task_id="t",
            task=stored.task,
            queue="celery",
            exception=exc,
            problem=TypeError("cannot encode"),
            hostname="w1",
        )
    assert kept.group == stored.group == group_of(kept)
    assert innermost_frame(kept.traceback) == innermost_frame(stored.traceback)
    lost = unstorable_entry(
        task_id="u", task="t", queue="celery", exception=None, problem=OSError(), hostname="w"
    )
    assert lost.group == group_of(lost)


def test_many_groups_are_read_in_chunks_and_listed_up_to_a_limit(
    redis_client: redis.Redis, dlq: DeadLetterQueue
) -> None:
    """A message formatted into the frame's name: a group per failure."""
    distinct = GROUP_CHUNK * 2 + 17
    dlq.add_many(bug(f"t{n}", f"find_{n}", "x") for n in range(distinct))
    dlq.add_many(bug(f"big{n}", "find_7", "x") for n in range(3))
    dlq.add_many(bug(f"mid{n}", "find_9", "x") for n in range(2))
    report = dlq.groups("celery", limit=DETAILS_CHUNK + 5)
    assert (report.distinct, report.total, report.ungrouped) == (distinct, distinct + 5, 0)
    assert [s.count for s in report.groups[:3]] == [4, 3, 1]
    assert len(report.groups) == DETAILS_CHUNK + 5
    assert report.as_dict()["total_groups"] == distinct
    everything = dlq.groups("celery")
    assert len(everything.groups) == distinct
    assert sum(s.count for s in everything.groups) == distinct + 5


def test_deleting_more_ids_than_a_chunk_is_exact(
    redis_client: redis.Redis, dlq: DeadLetterQueue
) -> None:
    count = IDS_PER_DELETE * 5 + 30
    ids = dlq.add_many(bug(f"t{n}", ("find", "charge")[n % 2], "x") for n in range(count))
    assert dlq.delete("celery", *[str(i) for i in ids][:-2], "1-0") == count - 2
    assert sorted(assert_index_exact(redis_client, dlq, "celery").values()) == [1, 1]


def test_rebuild_recounts_drifted_groups_while_old_and_new_workers_write(
    redis_client: redis.Redis, dlq: DeadLetterQueue
) -> None:
    """An older worker writes rows without their group beside a newer one; counts drift by
    hand; a rebuild in small chunks makes them exact again."""
    key = dlq.key("celery")
    for n in range(60):
        entry = bug(f"t{n}", ("find", "charge", "ship")[n % 3], "x")
        if n % 2:
            dlq.add(entry)
        else:  # an older worker: no group field, and no group in the entry either
            entry.group = ""
            redis_client.xadd(key, {"task_id": entry.task_id, "entry": entry.to_json()})
    dlq.page("celery", limit=10)  # the newest old-style rows are grouped when read
    find = dlq.get("celery", dlq.page("celery").items[-1].id).group
    redis_client.hincrby(dlq.groups_key("celery"), find, 40)  # counts drifted up
    redis_client.hincrby(dlq.groups_key("celery"), "abcdefabcdef", 3)  # a group long gone
    redis_client.zadd(dlq.group_key("celery", find), {"a1a0": 0})  # a member with no row
    victim = dlq.page("celery", limit=1).items[0].id
    redis_client.xdel(key, victim)  # a row removed by hand, still counted
    redis_client.hset(dlq.grouped_key("celery"), "1-0", find)  # a stale grouped entry
    report = dlq.rebuild_groups("celery", chunk=7)
    assert report.scanned == 59
    assert report.stale >= 3
    counts = assert_index_exact(redis_client, dlq, "celery")
    assert sum(counts.values()) == 59 and len(counts) == 3
    assert not redis_client.hexists(dlq.grouped_key("celery"), "1-0")
    assert dlq.rebuild_groups("celery", chunk=7).stale == 0  # nothing left to fix


def test_a_row_without_a_group_whose_entry_names_one_joins_that_group(
    redis_client: redis.Redis, dlq: DeadLetterQueue
) -> None:
    """The entry's group was computed at capture from the whole traceback: it is the one kept."""
    entry = bug("named", "find", "x")
    entry.group = "abcdefabcdef"
    redis_client.hset(dlq.index_key, "celery", 7 * 24 * 3600 * 1000)
    stream_id = redis_client.xadd(dlq.key("celery"), {"entry": entry.to_json()}).decode()
    assert dlq.get("celery", stream_id).group == "abcdefabcdef"
    assert [(s.group, s.count) for s in dlq.groups("celery").groups] == [("abcdefabcdef", 1)]
    assert_index_exact(redis_client, dlq, "celery")


def _run_script(path: str) -> None:
    # A subprocess's stderr quoted in the message: a whole traceback of another program.
    raise RuntimeError(
        "script failed:\nTraceback (most recent call last):\n"
        f'  File "{path}", line 3, in <module>\n    main()\nValueError: bad input\n'
    )


def _fail_in_a_group() -> None:
    raise ExceptionGroup("two failed", [ValueError("a"), KeyError("b")])


def _fail_in_another_group() -> None:
    raise ExceptionGroup("two failed", [ValueError("a"), KeyError("b")])


def failure_of(function: Callable[..., None], *args: object) -> Entry:
    try:
        function(*args)
    except BaseException as exc:
        return make_entry(exception=exc, traceback=traceback.format_exc())
    raise AssertionError(f"{function.__name__} did not raise")


def test_a_traceback_quoted_in_the_message_does_not_split_or_decide_the_group() -> None:
    first = failure_of(_run_script, "/tmp/job_a1b2/step.py")
    second = failure_of(_run_script, "/tmp/job_c3d4/step.py")
    assert first.group == second.group
    # The frames decide, not the quoted text: where the task raised it is the group.
    assert first.group == fingerprint(
        task=first.task,
        exception="RuntimeError",
        traceback='  File "tests/test_groups.py", line 1, in _run_script\n',
    )


def test_exception_groups_raised_in_different_places_are_different_groups() -> None:
    here = failure_of(_fail_in_a_group)
    there = failure_of(_fail_in_another_group)
    assert here.group != there.group
    assert here.group == failure_of(_fail_in_a_group).group


def test_a_clear_that_empties_the_stream_in_a_full_chunk_stops_there(
    redis_client: redis.Redis, dlq: DeadLetterQueue
) -> None:
    # The emptied stream is deleted and forgets its last id: another chunk could clear an entry
    # added meanwhile with a lower id (a Redis clock behind the one that stored the others).
    dlq.add_many(bug(f"t{n}", "find", "x") for n in range(READ_CHUNK))
    keys = dlq._queue_keys("celery")
    args = ["celery", dlq.group_key_prefix("celery"), "99999999999999-0", READ_CHUNK]
    assert [int(part) for part in dlq._clear_before(keys=keys, args=args)] == [READ_CHUNK, 0]
    assert_nothing_left(redis_client, "celery")


def test_the_entry_after_a_clear_that_emptied_the_queue_is_newer_than_all_it_cleared(
    redis_client: redis.Redis, dlq: DeadLetterQueue
) -> None:
    # An id ahead of Redis's clock stands for a clear in the same millisecond as the next
    # failure (or a clock that stepped back): a deleted stream would start again below it.
    ahead = "99999999999999-0"
    redis_client.xadd(dlq.key("celery"), {"entry": "{}"}, id=ahead)
    redis_client.hset(dlq.index_key, "celery", 1)
    assert dlq.clear("celery", up_to=ahead) == 1
    assert [info.queue for info in dlq.queues()] == []
    new_id = dlq.add(bug("after", "find", "x"))
    assert new_id is not None
    assert new_id == "99999999999999-1"
    assert [entry.id for entry in dlq.page("celery").items] == [new_id]
    assert_index_exact(redis_client, dlq, "celery")


def test_a_clear_of_big_entries_reads_a_bounded_number_of_bytes_a_call(
    redis_client: redis.Redis, dlq: DeadLetterQueue
) -> None:
    """A count alone does not bound a call: entries can be 1 MiB."""
    dlq.add_many(bug(f"t{n}", "find", "x", args=["y" * 60_000]) for n in range(60))
    keys = dlq._queue_keys("celery")
    args = ["celery", dlq.group_key_prefix("celery"), dlq.newest_id("celery"), READ_CHUNK]
    removed, more = (int(part) for part in dlq._clear_before(keys=keys, args=args))
    assert 0 < removed < 60 and more == 1
    assert assert_index_exact(redis_client, dlq, "celery") != {}
    assert dlq.clear("celery") == 60 - removed
    assert_nothing_left(redis_client, "celery")


def test_a_clear_of_megabyte_rows_reads_a_few_of_them_a_call(
    redis_client: redis.Redis, dlq: DeadLetterQueue
) -> None:
    """The byte budget is checked after each step of reads: a step of 25 rows of 1 MB read
    25 MB in one call, where the budget is a quarter of a MiB."""
    row_bytes = 1_000_000
    for n in range(30):
        redis_client.xadd(dlq.key("celery"), {"entry": str(n).ljust(row_bytes, "x")})
    keys = dlq._queue_keys("celery")
    args = ["celery", dlq.group_key_prefix("celery"), dlq.newest_id("celery"), READ_CHUNK]
    removed, more = (int(part) for part in dlq._clear_before(keys=keys, args=args))
    assert 0 < removed * row_bytes <= 4 * 2**20 and more == 1
    assert dlq.clear("celery") == 30 - removed


def test_entries_of_a_group_whose_index_expired_are_still_uncounted(
    redis_client: redis.Redis, dlq: DeadLetterQueue
) -> None:
    """An index not written since its newest entry passed its retention expires before a trim
    takes its entries out: they were counted, and leave the count all the same."""
    ids = dlq.add_many(bug(f"t{n}", ("find", "charge")[n % 2], "x") for n in range(10))
    find = dlq.get("celery", str(ids[0])).group
    redis_client.delete(dlq.group_key("celery", find))  # as its TTL would
    assert dlq.delete("celery", str(ids[0])) == 1
    assert redis_client.hget(dlq.groups_key("celery"), find) == b"4"
    dlq.clear("celery", up_to=str(ids[5]))
    assert redis_client.hget(dlq.groups_key("celery"), find) == b"2"
    dlq.clear("celery")
    assert_nothing_left(redis_client, "celery")
