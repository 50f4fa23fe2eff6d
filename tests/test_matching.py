"""Filtered reads and deletes (core.matching) against a real Redis: every filter pages with no
gap and no repeat, counts what it lists, and a bulk action under it touches only what matches
and existed when it started."""

from __future__ import annotations

import collections
import datetime as dt
import json
import sys
from collections.abc import Iterator

import pytest
import redis

from celery_morgue.core import DeadLetterQueue, matching
from celery_morgue.core.entry import Entry, UnreadableEntry
from celery_morgue.core.filters import EntryFilter
from celery_morgue.core.groups import UNREADABLE_GROUP, index_member, index_member_id
from celery_morgue.core.matching_scripts import FOLDS_TO_ASCII, GREP_ROWS
from tests.helpers import make_entry, stream_ms, wait_for_redis_clock

QUEUE = "celery"
# Three bugs: two of one task (raised in find and in charge), one of another task (in ship).
BUGS = {
    "find": ("shop.tasks.load", LookupError),
    "charge": ("shop.tasks.load", KeyError),
    "ship": ("shop.tasks.send", LookupError),
}


def raised_in(function: str) -> str:
    return (
        "Traceback (most recent call last):\n"
        f'  File "/srv/app/shop/tasks.py", line 17, in {function}\n'
        "    raise Oops(text)\n"
    )


def failure(n: int, function: str, message: str | None = None) -> Entry:
    task, kind = BUGS[function]
    text = message if message is not None else f"order {n} failed"
    return make_entry(
        f"t{n}-{function}", task=task, exception=kind(text), traceback=raised_in(function)
    )


def interleaved(dlq: DeadLetterQueue, count: int) -> dict[str, list[str]]:
    """``count`` entries, the bugs interleaved unevenly; each bug's ids, oldest first."""
    pattern = ["find", "charge", "find", "ship", "find", "charge", "find"]
    functions = [pattern[n % len(pattern)] for n in range(count)]
    ids = dlq.add_many(failure(n, function) for n, function in enumerate(functions))
    by_bug: dict[str, list[str]] = collections.defaultdict(list)
    for function, entry_id in zip(functions, ids, strict=True):
        assert isinstance(entry_id, str)
        by_bug[function].append(entry_id)
    return dict(by_bug)


def group_of_bug(dlq: DeadLetterQueue, entry_id: str) -> str:
    entry = dlq.get(QUEUE, entry_id)
    assert isinstance(entry, Entry)
    return entry.group


def newest_first(ids: list[str]) -> list[str]:
    return sorted(ids, key=lambda i: tuple(map(int, i.split("-"))), reverse=True)


def all_pages(
    dlq: DeadLetterQueue, flt: EntryFilter, limit: int, up_to: str | None = None
) -> Iterator[tuple[list[str], int, str | None]]:
    """Every page of a filtered listing: its ids, total and cursor."""
    cursor: str | None = None
    for _ in range(10_000):
        page = dlq.matching_page(QUEUE, flt, cursor, limit, up_to=up_to)
        assert len(page.items) <= limit
        yield [item.id for item in page.items], page.total, page.next
        if page.next is None:
            return
        cursor = page.next
    pytest.fail("the listing never ended")


def listed(
    dlq: DeadLetterQueue, flt: EntryFilter, limit: int, up_to: str | None = None
) -> list[str]:
    ids: list[str] = []
    for page_ids, total, _ in all_pages(dlq, flt, limit, up_to):
        ids += page_ids
        assert total == dlq.count_matching(QUEUE, flt, up_to)
    assert len(ids) == len(set(ids)), "an entry was listed twice"
    return ids


def assert_groups_exact(client: redis.Redis, dlq: DeadLetterQueue) -> None:
    """The group counts and indexes hold exactly the entries in the stream."""
    entries = list(dlq.iter_entries(QUEUE))
    counted = collections.Counter(entry.group for entry in entries)
    stored = {k.decode(): int(v) for k, v in client.hgetall(dlq.groups_key(QUEUE)).items()}
    assert stored == dict(counted)
    for group in counted:
        members = client.zrange(dlq.group_key(QUEUE, group), 0, -1)
        indexed = {index_member_id(member.decode()) for member in members}
        assert indexed == {entry.id for entry in entries if entry.group == group}


# -- listing ----------------------------------------------------------------------------------


def test_a_group_pages_with_no_gap_and_no_repeat(dlq: DeadLetterQueue) -> None:
    bugs = interleaved(dlq, 400)
    group = group_of_bug(dlq, bugs["charge"][0])
    flt = EntryFilter(group=group)
    pages = list(all_pages(dlq, flt, 7))
    assert len(pages) > 10
    assert all(total == len(bugs["charge"]) for _, total, _ in pages)
    ids = [entry_id for page_ids, _, _ in pages for entry_id in page_ids]
    assert ids == newest_first(bugs["charge"])
    assert dlq.count_matching(QUEUE, flt) == len(bugs["charge"])


def test_task_and_exception_select_the_groups_they_name(dlq: DeadLetterQueue) -> None:
    bugs = interleaved(dlq, 300)
    load = listed(dlq, EntryFilter(task="shop.tasks.load"), 11)
    assert load == newest_first(bugs["find"] + bugs["charge"])
    lookup = listed(dlq, EntryFilter(exception="LookupError"), 13)
    assert lookup == newest_first(bugs["find"] + bugs["ship"])
    # A dotted name matches its own last part; an exception nothing raised matches nothing.
    assert listed(dlq, EntryFilter(exception="builtins.KeyError"), 50) == newest_first(
        bugs["charge"]
    )
    assert listed(dlq, EntryFilter(exception="TypeError"), 50) == []
    both = EntryFilter(task="shop.tasks.load", exception="LookupError")
    assert listed(dlq, both, 9) == newest_first(bugs["find"])
    assert dlq.count_matching(QUEUE, EntryFilter(task="no.such.task")) == 0


def test_time_bounds_narrow_the_range(dlq: DeadLetterQueue, redis_client: redis.Redis) -> None:
    batches: list[dict[str, list[str]]] = []
    for _ in range(3):
        batches.append(interleaved(dlq, 40))
        last = max(max(ids, key=stream_ms) for ids in batches[-1].values())
        wait_for_redis_clock(redis_client, stream_ms(last))  # the next batch is a later ms
    middle = [i for ids in batches[1].values() for i in ids]
    later = middle + [i for ids in batches[2].values() for i in ids]
    since = at_ms(min(stream_ms(i) for i in middle))
    until = at_ms(max(stream_ms(i) for i in middle))

    assert listed(dlq, EntryFilter(since=since), 9) == newest_first(later)
    assert listed(dlq, EntryFilter(since=since, until=until), 9) == newest_first(middle)
    earlier = [i for batch in batches[:2] for ids in batch.values() for i in ids]
    assert listed(dlq, EntryFilter(until=until), 9) == newest_first(earlier)
    # With a group: the index's range, and its count from ZLEXCOUNT.
    group = group_of_bug(dlq, batches[0]["ship"][0])
    flt = EntryFilter(group=group, since=since, until=until)
    assert listed(dlq, flt, 2) == newest_first(batches[1]["ship"])
    assert dlq.count_matching(QUEUE, flt) == len(batches[1]["ship"])
    up_to_middle = EntryFilter(group=group, until=until)
    assert listed(dlq, up_to_middle, 3) == newest_first(batches[0]["ship"] + batches[1]["ship"])


def at_ms(millis: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=millis)


def test_grep_scans_in_bounded_chunks_and_continues_where_it_stopped(
    dlq: DeadLetterQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    wanted = []
    for n in range(200):
        function = ("find", "charge", "ship")[n % 3]
        message = f"Needle {n} in stock" if n % 17 == 0 else f"order {n} failed"
        entry_id = dlq.add(failure(n, function, message))
        assert entry_id is not None
        if n % 17 == 0:
            wanted.append((entry_id, function))
    # Small chunks and scan limit: most pages stop at the limit with fewer matches than asked.
    monkeypatch.setattr(matching, "SCAN_CHUNK", 10)
    monkeypatch.setattr(matching, "PAGE_SCAN_LIMIT", 20)
    pages = list(all_pages(dlq, EntryFilter(grep="needle"), 5))
    assert any(len(page_ids) < 5 and cursor is not None for page_ids, _, cursor in pages)
    ids = [entry_id for page_ids, _, _ in pages for entry_id in page_ids]
    assert ids == newest_first([entry_id for entry_id, _ in wanted])
    assert {total for _, total, _ in pages} == {len(wanted)}
    # Combined with a group (through the index) and with a task.
    ship = group_of_bug(dlq, next(i for i, function in wanted if function == "ship"))
    shipped = newest_first([i for i, function in wanted if function == "ship"])
    assert listed(dlq, EntryFilter(group=ship, grep="NEEDLE"), 2) == shipped
    loaded = newest_first([i for i, function in wanted if function != "ship"])
    assert listed(dlq, EntryFilter(task="shop.tasks.load", grep="needle"), 3) == loaded
    # A call in Redis that stops early on its byte budget is continued where it stopped.
    monkeypatch.setattr(matching, "SCAN_CHUNK", 1000)
    monkeypatch.setattr(matching, "GREP_BYTES", 1)
    assert listed(dlq, EntryFilter(grep="needle"), 4) == ids


def test_up_to_leaves_out_what_came_later(dlq: DeadLetterQueue) -> None:
    bugs = interleaved(dlq, 70)
    seen = dlq.newest_id(QUEUE)
    assert seen is not None
    later = interleaved(dlq, 30)
    group = group_of_bug(dlq, bugs["find"][0])
    flt = EntryFilter(group=group)
    assert listed(dlq, flt, 8, up_to=seen) == newest_first(bugs["find"])
    assert dlq.count_matching(QUEUE, flt) == len(bugs["find"]) + len(later["find"])
    assert dlq.count_matching(QUEUE, EntryFilter(), up_to=seen) == 70


def test_iter_matching_is_oldest_first_in_chunks_and_stops_at_its_start(
    dlq: DeadLetterQueue,
) -> None:
    bugs = interleaved(dlq, 120)
    group = group_of_bug(dlq, bugs["find"][0])
    chunks = dlq.iter_matching(QUEUE, EntryFilter(group=group), chunk=16)
    dlq.add_many(failure(1000 + n, "find") for n in range(20))  # after the call: not listed
    first = next(chunks)
    dlq.add_many(failure(2000 + n, "find") for n in range(20))
    rest = [entry for chunk in chunks for entry in chunk]
    assert len(first) == 16
    assert [entry.id for entry in first + rest] == bugs["find"]


def test_entries_stored_before_groups_are_counted_and_listed(
    dlq: DeadLetterQueue, redis_client: redis.Redis
) -> None:
    redis_client.hset(dlq.index_key, QUEUE, 7 * 24 * 3600 * 1000)
    old = []
    for n in range(30):  # the previous version's rows: no group in the row or the entry
        data = json.loads(failure(n, ("find", "ship")[n % 2]).to_json())
        del data["group"]
        old.append(
            redis_client.xadd(dlq.key(QUEUE), {"task_id": f"o{n}", "entry": json.dumps(data)})
        )
    new = interleaved(dlq, 14)
    flt = EntryFilter(task="shop.tasks.send")
    expected = [i.decode() for i in old[1::2]] + new["ship"]
    assert dlq.count_matching(QUEUE, flt) == 15 + len(new["ship"])
    assert listed(dlq, flt, 4) == newest_first(expected)
    assert dlq.groups(QUEUE).ungrouped == 0
    assert_groups_exact(redis_client, dlq)


# -- changing ---------------------------------------------------------------------------------


def test_a_filtered_clear_keeps_other_and_newer_entries(
    dlq: DeadLetterQueue, redis_client: redis.Redis
) -> None:
    bugs = interleaved(dlq, 500)
    seen = dlq.newest_id(QUEUE)
    newer = interleaved(dlq, 21)  # after the clear's start point
    group = group_of_bug(dlq, bugs["find"][0])
    removed = dlq.clear(QUEUE, up_to=seen, flt=EntryFilter(group=group))
    assert removed == len(bugs["find"])
    kept = {entry.id for entry in dlq.iter_entries(QUEUE)}
    expected = {i for ids in newer.values() for i in ids} | set(bugs["charge"] + bugs["ship"])
    assert kept == expected
    assert_groups_exact(redis_client, dlq)
    # A task filter and a grep filter clear only what they match too.
    assert dlq.clear(QUEUE, flt=EntryFilter(task="shop.tasks.send")) == len(
        bugs["ship"] + newer["ship"]
    )
    assert dlq.clear(QUEUE, flt=EntryFilter(grep="order 50")) == 1  # order 50, 500..520
    assert_groups_exact(redis_client, dlq)
    assert dlq.size(QUEUE) == len(newer["find"] + bugs["charge"] + newer["charge"]) - 1


def test_a_clear_until_keeps_what_is_later(dlq: DeadLetterQueue, redis_client: redis.Redis) -> None:
    first = interleaved(dlq, 60)
    last = max((i for ids in first.values() for i in ids), key=stream_ms)
    wait_for_redis_clock(redis_client, stream_ms(last))
    second = interleaved(dlq, 20)
    removed = dlq.clear(QUEUE, flt=EntryFilter(until=at_ms(stream_ms(last))))
    assert removed == 60
    assert {entry.id for entry in dlq.iter_entries(QUEUE)} == {
        i for ids in second.values() for i in ids
    }
    assert_groups_exact(redis_client, dlq)


def test_delete_matching_deletes_a_chunk_of_ids_a_call(
    dlq: DeadLetterQueue, redis_client: redis.Redis
) -> None:
    bugs = interleaved(dlq, 2000)
    group = group_of_bug(dlq, bugs["find"][0])
    assert len(bugs["find"]) > 2 * matching.DELETE_CHUNK
    before = command_calls(redis_client, "evalsha") + command_calls(redis_client, "eval")
    assert dlq.delete_matching(QUEUE, EntryFilter(group=group)) == len(bugs["find"])
    scripts = command_calls(redis_client, "evalsha") + command_calls(redis_client, "eval")
    # One delete script per chunk of ids, plus a few retention trims: never one per entry.
    assert scripts - before < 20
    assert dlq.count_matching(QUEUE, EntryFilter(group=group)) == 0
    assert dlq.size(QUEUE) == len(bugs["charge"] + bugs["ship"])
    assert_groups_exact(redis_client, dlq)


def command_calls(client: redis.Redis, command: str) -> int:
    stats = client.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


# -- hostile rows -----------------------------------------------------------------------------


def test_malformed_rows_do_not_break_a_filtered_listing_or_delete(
    dlq: DeadLetterQueue, redis_client: redis.Redis
) -> None:
    bugs = interleaved(dlq, 50)
    key = dlq.key(QUEUE)
    garbage = [
        redis_client.xadd(key, {"entry": b"{not json \xff"}).decode(),
        redis_client.xadd(key, {"something": "else", "group": "<b>not a group</b>"}).decode(),
        redis_client.xadd(key, {"entry": "[1, 2]", "group": "g" * 5000}).decode(),
        redis_client.xadd(
            key, {"entry": json.dumps({"task_id": 1, "task": "shop.tasks.load"})}
        ).decode(),
    ]
    more = interleaved(dlq, 20)
    load = EntryFilter(task="shop.tasks.load")
    expected = bugs["find"] + bugs["charge"] + more["find"] + more["charge"]
    assert listed(dlq, load, 6) == newest_first(expected)
    assert listed(dlq, EntryFilter(grep="order 1"), 4) == newest_first(
        [e.id for e in dlq.iter_entries(QUEUE) if isinstance(e, Entry) and "order 1" in e.message]
    )
    # The unreadable rows are one group, and only that group or no filter selects them.
    unreadable = listed(dlq, EntryFilter(group=UNREADABLE_GROUP), 3)
    assert unreadable == newest_first(garbage)
    assert len(listed(dlq, EntryFilter(), 17)) == 50 + 20 + 4
    assert dlq.delete_matching(QUEUE, load) == len(expected)
    left = list(dlq.iter_entries(QUEUE))
    assert sorted(e.id for e in left if isinstance(e, UnreadableEntry)) == sorted(garbage)
    assert dlq.clear(QUEUE, flt=EntryFilter(group=UNREADABLE_GROUP)) == 4
    assert all(isinstance(e, Entry) for e in dlq.iter_entries(QUEUE))
    assert_groups_exact(redis_client, dlq)


@pytest.mark.parametrize(
    "needle",
    [
        "café",
        "CAFÉ",
        "strasse",
        "k",
        "Ok",
        '"quoted"',
        "a/b",
        "order 3",
        "ünïcode",
        "\u017f",
        "file",
        "FFI",
    ],
)
def test_grep_finds_exactly_what_decoding_every_row_finds(
    dlq: DeadLetterQueue, redis_client: redis.Redis, needle: str
) -> None:
    messages = [
        "Café closed",
        "STRASSE 5",
        "Straße 5",
        "\u212a only",
        'said "quoted" twice',
        "path a/b missing",
        "order 3 failed",
        "ÜNÏCODE everywhere",
        "long \u017f here",
        "\ufb01le and o\ufb03ce",  # the fi and ffi ligatures
        "nothing to see",
    ]
    for n, message in enumerate(messages):
        dlq.add(failure(n, ("find", "ship")[n % 2], message))
    # Rows another writer stored with \u escapes, and with a needle-like text split by one.
    for n, message in enumerate(["Caf\u00e9 escaped", "ORDER 3 escaped", "x/y"]):
        data = json.loads(failure(100 + n, "find", message).to_json())
        raw = json.dumps(data, ensure_ascii=True)
        redis_client.xadd(dlq.key(QUEUE), {"group": data["group"], "entry": raw})
        redis_client.hincrby(dlq.groups_key(QUEUE), data["group"], 1)
        redis_client.zadd(dlq.group_key(QUEUE, data["group"]), {index_member(raw_id(dlq)): 0})
    flt = EntryFilter(grep=needle)
    expected = [entry.id for entry in dlq.iter_entries(QUEUE) if flt.matches(entry)]
    assert listed(dlq, flt, 3) == expected
    assert dlq.count_matching(QUEUE, flt) == len(expected)
    group = group_of_bug(dlq, expected[0]) if expected else None
    if group:
        in_group = EntryFilter(group=group, grep=needle)
        assert listed(dlq, in_group, 2) == [
            entry.id for entry in dlq.iter_entries(QUEUE) if in_group.matches(entry)
        ]


def test_every_character_whose_folding_holds_ascii_is_looked_for() -> None:
    for code in range(0x80, sys.maxunicode + 1):
        char = chr(code)
        if any(folded.isascii() for folded in char.casefold()):
            encoded = char.encode("utf-8", "surrogatepass")
            assert encoded.startswith(FOLDS_TO_ASCII), f"U+{code:04X}"


def raw_id(dlq: DeadLetterQueue) -> str:
    newest = dlq.newest_id(QUEUE)
    assert newest is not None
    return newest


def test_a_row_written_by_hand_is_indexed_once_then_reads_scan_nothing(
    dlq: DeadLetterQueue, redis_client: redis.Redis
) -> None:
    bugs = interleaved(dlq, 3500)
    group = group_of_bug(dlq, bugs["find"][0])
    # Names a real group that never counted it: the stream is one longer than the counts.
    stray = redis_client.xadd(dlq.key(QUEUE), {"entry": "{}", "group": group}).decode()
    flt = EntryFilter(group=group)
    assert dlq.count_matching(QUEUE, flt) == len(bugs["find"]) + 1
    assert_groups_exact(redis_client, dlq)
    for _ in range(3):
        reads = command_calls(redis_client, "xrevrange")
        page = dlq.matching_page(QUEUE, flt, limit=10)
        assert page.total == len(bugs["find"]) + 1
        assert [item.id for item in page.items] == [stray, *newest_first(bugs["find"])[:9]]
        assert isinstance(page.items[0], UnreadableEntry)
        assert command_calls(redis_client, "xrevrange") - reads <= 1
    assert dlq.delete_matching(QUEUE, flt) == len(bugs["find"]) + 1
    assert_groups_exact(redis_client, dlq)


def test_a_task_over_many_groups_pages_and_counts_exactly(dlq: DeadLetterQueue) -> None:
    # 150 groups of one task (a function each) and 30 of another, more than a script reads.
    entries = [
        make_entry(
            f"m{n}",
            task="shop.tasks.many" if n % 6 else "shop.tasks.few",
            exception=LookupError(f"order {n}"),
            traceback=raised_in(f"step_{n % 180}"),
        )
        for n in range(540)
    ]
    ids = dlq.add_many(entries)
    many = [str(i) for i, entry in zip(ids, entries, strict=True) if entry.task.endswith("many")]
    assert len(dlq.groups(QUEUE).groups) == 180
    flt = EntryFilter(task="shop.tasks.many")
    assert listed(dlq, flt, 40) == newest_first(many)
    assert dlq.count_matching(QUEUE, flt) == len(many) == 450


def test_a_text_search_call_looks_at_its_byte_budget_and_one_row_at_most(
    redis_client: redis.Redis,
) -> None:
    """Entries can be 1 MiB: a call that reads a hundred rows before it checks its budget
    holds Redis for 100 MB. Paging by the call's last row still sees every row once."""
    key = "dlq:celery"
    row_bytes = 1_000_000
    ids = [
        redis_client.xadd(key, {"entry": f"{n:03d} needle ".ljust(row_bytes, "x")}).decode()
        for n in range(12)
    ]
    grep_rows = redis_client.register_script(GREP_ROWS)
    for direction, start, stop, order in (("fwd", "-", "+", ids), ("rev", "+", "-", ids[::-1])):
        seen: list[str] = []
        while True:
            args = [direction, start, stop, 1000, "needle", matching.GREP_BYTES]
            scanned, last, kept, more = grep_rows(keys=[key], args=args)
            looked_at = sum(len(row[1][row[1].index(b"entry") + 1]) for row in kept)
            assert looked_at <= matching.GREP_BYTES + row_bytes
            assert int(scanned) == len(kept)
            seen += [row[0].decode() for row in kept]
            if not int(more):
                break
            start = "(" + last.decode()
        assert seen == order


def test_once_a_queue_is_known_grouped_a_filtered_read_reads_no_whole_groups_hash(
    dlq: DeadLetterQueue, redis_client: redis.Redis
) -> None:
    """HGETALL or HVALS of 200,000 groups hold Redis 100-160 ms: a read checks only the rows
    stored since the last one, and still groups rows written by hand meanwhile."""
    entries = [
        make_entry(f"m{n}", exception=LookupError("x"), traceback=raised_in(f"step_{n}"))
        for n in range(5000)
    ]
    ids = dlq.add_many(entries)
    first = str(ids[0])
    group = group_of_bug(dlq, first)
    flt = EntryFilter(group=group)
    assert dlq.count_matching(QUEUE, flt) == 1  # the first read in this process
    data = json.loads(entries[0].to_json())
    del data["group"]  # as stored before groups existed
    unnamed = redis_client.xadd(dlq.key(QUEUE), {"entry": json.dumps(data)}).decode()
    # Names the group but was never counted in it.
    named = redis_client.xadd(dlq.key(QUEUE), {"entry": "{}", "group": group}).decode()
    whole_hash = ("hgetall", "hvals", "hkeys")
    before = [command_calls(redis_client, command) for command in whole_hash]
    for _ in range(2):
        lookups = command_calls(redis_client, "hexists")
        page = dlq.matching_page(QUEUE, flt, limit=10)
        assert [item.id for item in page.items] == [named, unnamed, first]
        assert page.total == 3
    # Nothing new since the first page: the second came by the one-round-trip path.
    assert command_calls(redis_client, "hexists") == lookups
    assert dlq.count_matching(QUEUE, flt) == 3
    assert dlq.count_matching(QUEUE, EntryFilter(group=group, grep="x")) == 2
    assert [command_calls(redis_client, command) for command in whole_hash] == before
    assert_groups_exact(redis_client, dlq)


class DeletesDuringTheFirstCount(redis.Redis):
    """A client whose first HSCAN of the group counts is followed by another operator's delete."""

    def __init__(self, *args: object, victims: list[str], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.victims = victims

    def hscan(self, *args: object, **kwargs: object) -> object:
        counts = super().hscan(*args, **kwargs)  # type: ignore[arg-type]
        if self.victims:  # after the counts were read, before the length is
            victims, self.victims = self.victims, []
            assert DeadLetterQueue(self).delete("celery", *victims) == len(victims)
        return counts


def test_deletes_while_a_process_first_counts_its_groups_hide_no_ungrouped_row(
    redis_client: redis.Redis,
) -> None:
    setup = DeadLetterQueue(redis_client)
    setup.clear("celery")
    normal = setup.add_many(make_entry(f"new-{n}", task="proj.tasks.fresh") for n in range(2000))
    # Another writer's rows: they name their group but no index holds them.
    for n in range(600):
        entry = make_entry(f"old-{n}", task="proj.tasks.legacy")
        fields = {"task_id": entry.task_id, "group": entry.group, "entry": entry.to_json()}
        redis_client.xadd(setup.key("celery"), fields)  # type: ignore[arg-type]
    legacy = EntryFilter(task="proj.tasks.legacy")
    racing = DeletesDuringTheFirstCount(
        connection_pool=redis_client.connection_pool, victims=[str(i) for i in normal[:100]]
    )
    dlq = DeadLetterQueue(racing)
    assert dlq.count_matching("celery", legacy) == 600
    assert dlq.count_matching("celery", legacy) == 600
    assert len(dlq.matching_page("celery", legacy, limit=1000).items) == 600


def test_a_read_after_a_storm_of_failures_does_not_fetch_their_entries(
    dlq: DeadLetterQueue, redis_client: redis.Redis
) -> None:
    """Rows celery-morgue stored since the last read are in their index already: Redis checks
    them and sends back nothing of them; a row written by hand among them is still grouped."""
    dlq.clear(QUEUE)
    dlq.add_many(make_entry(f"calm-{n}", QUEUE) for n in range(10))
    flt = EntryFilter(task="proj.tasks.example")
    assert dlq.count_matching(QUEUE, flt) == 10  # the first read in this process
    storm = [
        make_entry(
            f"storm-{n}", QUEUE, traceback="Traceback (most recent call last):\n" + "x" * 30_000
        )
        for n in range(40)
    ]
    assert all(dlq.add_many(storm))
    entry = make_entry("by-hand", QUEUE)
    fields = {"task_id": entry.task_id, "group": entry.group, "entry": entry.to_json()}
    redis_client.xadd(dlq.key(QUEUE), fields)  # type: ignore[arg-type]
    sent = int(redis_client.info("stats")["total_net_output_bytes"])
    assert dlq.count_matching(QUEUE, flt) == 51
    sent = int(redis_client.info("stats")["total_net_output_bytes"]) - sent
    assert sent < 40 * 30_000 // 4, sent  # not the storm's tracebacks
