"""The entries of a queue an :class:`EntryFilter` selects: pages, counts, chunks and deletes.

Candidate rows come from one of two sources, read a bounded slice at a time:

- the group index, when the filter names a group, a task or an exception: the groups that can
  hold matching entries (their task and exception are known per group), each group's sorted
  set read from a cursor for at most a slice, and the slices merged by id. A page costs
  O(groups x (log N + page)) whatever the queue's size;
- the stream itself otherwise: its id range narrowed by the time bounds.

Each candidate is then tested with :meth:`EntryFilter.matches`: the text of ``--grep``, and
rows that are not celery-morgue entries (which only filters that can select them match). A
page returns after ``limit`` matches or after it looked at ``PAGE_SCAN_LIMIT`` rows, whichever
comes first; in the second case its cursor is the last row looked at, so the next page
continues there with no gap and no repeat.

``--grep`` first looks at the raw rows, to decode only those that may hold the text: on the
stream, in Redis (core.matching_scripts), so the rows passed over are never sent; through the
index, in Python (:func:`_text_test`).

Counts without ``--grep`` come from the index too: ``ZLEXCOUNT`` of each selected group in the
id range. That needs every row grouped: rows stored before groups existed (or written by
something else) are grouped first, once per such row, and a process remembers up to which row
every row is grouped, so a later read looks only at the rows stored since, never at all the
groups (see :func:`_settle`). With ``--grep`` the count is a scan, a chunk at a time.

Deletes go by id, ``DELETE_CHUNK`` ids a script call, up to a given id: entries stored after
the action started are never touched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

import redis

from celery_morgue.core.dlq import (
    READ_CHUNK,
    DeadLetterQueue,
    Page,
    StoredEntry,
    _row_group,
    _script_row,
    _successor,
    _text,
    _with_group,
    check_entry_id,
)
from celery_morgue.core.dlq_scripts import GROUP_HELPERS
from celery_morgue.core.entry import Entry
from celery_morgue.core.filters import EntryFilter
from celery_morgue.core.groups import UNREADABLE_GROUP, index_member, index_member_id
from celery_morgue.core.matching_scripts import GREP_ROWS, UNINDEXED_ROWS
from celery_morgue.core.redis_cluster import queue_script

# Rows a call reads when every row is tested (--grep): a few milliseconds of Redis.
SCAN_CHUNK = 1000
# Candidates one page looks at, at most, before it returns what it found.
PAGE_SCAN_LIMIT = 10 * SCAN_CHUNK
# Bytes of entries the text test in Redis looks at a call, at most: a few milliseconds.
GREP_BYTES = 4 * 1024 * 1024
# Ids a delete script takes a call.
DELETE_CHUNK = 500

# A candidate: its stream id, and its entry (None when the row went meanwhile, or the text
# test passed over it).
Candidate = tuple[str, StoredEntry | None]


# -- id bounds, in XRANGE's spelling: "-", "+", "ID" (inclusive) or "(ID" (exclusive) ---------


def _bound_key(bound: str) -> tuple[int, int, int]:
    exclusive = bound.startswith("(")
    millis, _, sequence = bound.lstrip("(").partition("-")
    return int(millis), int(sequence or 0), 0 if exclusive else 1


def _lower_of(upper: str, other: str) -> str:
    """The tighter of two upper bounds."""
    if upper == "+":
        return other
    if other == "+":
        return upper
    return min(upper, other, key=_bound_key)


def _lex(bound: str) -> str:
    """A stream id bound as a bound on a group index's members (see core.groups)."""
    if bound in ("-", "+"):
        return bound
    if bound.startswith("("):
        return "(" + index_member(bound[1:])
    return "[" + index_member(bound)


def _range(flt: EntryFilter, up_to: str | None) -> tuple[str, str]:
    low, high = flt.id_range()
    if up_to is not None:
        high = _lower_of(high, check_entry_id(up_to))
    return low, high


# -- --grep without decoding every row -------------------------------------------------------

# Whether a raw stream row (its fields) can hold a match: False only when it certainly cannot.
RowTest = Callable[[dict[Any, Any]], bool]
# Characters JSON may store escaped (so the raw row need not hold them as typed).
_ESCAPABLE = frozenset('"\\/')


def _text_test(flt: EntryFilter) -> RowTest | None:
    """A test on the raw row for ``--grep``: most rows are told apart without decoding them.

    Sound, never dropping a match: JSON keeps a message's characters as they are (the entry
    encoder writes UTF-8, not ``\\u`` escapes) except quotes, backslashes, slashes and control
    characters, which the needle may not hold for this test; a row with a ``\\u`` escape is
    decoded. Case folding maps character by character, so the folded row holds the folded
    needle whenever the folded message does. None when the needle has such characters.
    """
    if not flt.grep:
        return None
    if any(char in _ESCAPABLE or not char.isprintable() for char in flt.grep):
        return None
    folded = flt.grep.casefold()
    folded_ascii = folded.encode() if folded.isascii() else None

    def may_match(fields: dict[Any, Any]) -> bool:
        data = fields.get(b"entry", fields.get("entry"))
        if data is None:
            return True  # not an entry: EntryFilter.matches decides
        raw = data if isinstance(data, bytes) else str(data).encode("utf-8", "surrogatepass")
        if b"\\u" in raw:
            return True
        if raw.isascii():
            return folded_ascii is not None and folded_ascii in raw.lower()
        try:
            return folded in raw.decode("utf-8").casefold()
        except UnicodeDecodeError:
            return True

    return may_match


# -- the two sources -------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """One read of a source: the candidates, how many rows it looked at (a candidate each,
    but for rows the text test in Redis passed over), the last row's id, and whether the
    range may hold more."""

    candidates: list[Candidate]
    scanned: int
    last: str | None
    more: bool


class _StreamSource:
    """Rows straight from the stream; for ``--grep``, first looked at in Redis."""

    def __init__(self, dlq: DeadLetterQueue, queue: str, flt: EntryFilter) -> None:
        self.dlq = dlq
        self.queue = queue
        self.grep_in_redis = _text_test(flt) is not None
        self.needle = ""
        if flt.grep and flt.grep.casefold().isascii():
            self.needle = flt.grep.casefold()
        self._grep_rows = dlq.client.register_script(GREP_ROWS)

    def read(self, newest_first: bool, start: str, end: str, count: int) -> Batch:
        if self.grep_in_redis:
            return self._grep(newest_first, start, end, count)
        key = self.dlq.key(self.queue)
        if newest_first:
            rows = self.dlq.client.xrevrange(key, max=start, min=end, count=count) or []
        else:
            rows = self.dlq.client.xrange(key, min=start, max=end, count=count) or []
        entries = self.dlq._grouped_entries(self.queue, rows)
        last_id = entries[-1].id if entries else None
        return Batch(
            [(entry.id, entry) for entry in entries], len(rows), last_id, len(rows) == count
        )

    def _grep(self, newest_first: bool, start: str, end: str, count: int) -> Batch:
        args: list[str | int] = [
            "rev" if newest_first else "fwd",
            start,
            end,
            count,
            self.needle,
            GREP_BYTES,
        ]
        scanned, last, kept, more = self._grep_rows(keys=[self.dlq.key(self.queue)], args=args)
        entries = self.dlq._grouped_entries(self.queue, [_script_row(row) for row in kept])
        return Batch(
            [(entry.id, entry) for entry in entries],
            int(scanned),
            _text(last) if last else None,
            bool(int(more)),
        )


class _IndexSource:
    """Rows of some groups, through their indexes: a slice of each, merged by id."""

    def __init__(
        self, dlq: DeadLetterQueue, queue: str, groups: list[str], may_match: RowTest | None
    ) -> None:
        self.dlq = dlq
        self.queue = queue
        self.groups = groups
        self.may_match = may_match

    def read(self, newest_first: bool, start: str, end: str, count: int) -> Batch:
        if not self.groups:
            return Batch([], 0, None, False)
        client = self.dlq.client
        pipe = client.pipeline(transaction=False)
        for group in self.groups:
            index = self.dlq.group_key(self.queue, group)
            if newest_first:
                pipe.zrevrangebylex(index, _lex(start), _lex(end), start=0, num=count)
            else:
                pipe.zrangebylex(index, _lex(start), _lex(end), start=0, num=count)
        slices = pipe.execute()
        # Members sort bytewise as their ids do; each slice is its group's first `count`, so the
        # first `count` of the merge are the first `count` of all the groups together.
        merged = sorted(
            (
                (_text(member), group)
                for group, members in zip(self.groups, slices, strict=True)
                for member in members
            ),
            reverse=newest_first,
        )[:count]
        if not merged:
            return Batch([], 0, None, False)
        ids = [index_member_id(member) for member, _ in merged]
        pipe = client.pipeline(transaction=False)
        for entry_id in ids:
            pipe.xrange(self.dlq.key(self.queue), min=entry_id, max=entry_id, count=1)
        found: list[Candidate] = []
        test = self.may_match
        for entry_id, (_, group), rows in zip(ids, merged, pipe.execute(), strict=True):
            if rows and (test is None or test(rows[0][1])):
                found.append((entry_id, _with_group(self.dlq._entry(rows[0]), group)))
            else:
                found.append((entry_id, None))
        return Batch(found, len(ids), ids[-1], len(ids) == count)


Source = _StreamSource | _IndexSource


def _walk(source: Source, newest_first: bool, start: str, end: str, chunk: int) -> Iterator[Batch]:
    """The batches from ``start`` towards ``end``, each read from after the last row of the
    one before (exclusive), so rows removed meanwhile leave no gap."""
    while True:
        batch = source.read(newest_first, start, end, chunk)
        if batch.scanned:
            yield batch
        if not batch.more or batch.last is None:
            return
        start = "(" + batch.last


def _source(dlq: DeadLetterQueue, queue: str, flt: EntryFilter) -> Source:
    """Where ``flt``'s candidates come from; retention is applied first (what it removes is
    neither listed nor counted)."""
    if not flt.by_group:
        dlq.size(queue)
        return _StreamSource(dlq, queue, flt)
    return _IndexSource(dlq, queue, selected_groups(dlq, queue, flt), _text_test(flt))


def selected_groups(dlq: DeadLetterQueue, queue: str, flt: EntryFilter) -> list[str]:
    """The groups of ``queue`` that can hold entries ``flt`` matches (all of them for a filter
    without group, task or exception), every row of the queue grouped first."""
    _settle(dlq, queue)
    if flt.group is not None and flt.task is None and flt.exception is None:
        return [flt.group] if dlq.client.hexists(dlq.groups_key(queue), flt.group) else []
    names = sorted(_group_names(dlq, queue))
    if not flt.by_group:
        return names
    kinds = _group_kinds(dlq, queue, names)
    return [
        group
        for group, (task, exception) in kinds.items()
        if flt.matches_group(task, exception, group)
    ]


def group_kind(dlq: DeadLetterQueue, queue: str, group: str) -> tuple[str, str]:
    """The task and exception of one group of ``queue`` ("" and "" when it has none)."""
    return _group_kinds(dlq, queue, [group])[group]


# Per DeadLetterQueue, each group's task and exception: its id is a fingerprint of them, so
# they never change, and a page under --task reads only the groups it has not met yet.
_kinds: WeakKeyDictionary[DeadLetterQueue, dict[str, tuple[str, str]]] = WeakKeyDictionary()
# Groups whose newest entry one script call reads, at most.
_KINDS_CHUNK = 100


def _group_kinds(dlq: DeadLetterQueue, queue: str, groups: list[str]) -> dict[str, tuple[str, str]]:
    """The task and exception of each group, from its newest entry ("" for the group of rows
    that are not celery-morgue entries, and for a group emptied meanwhile)."""
    known = _kinds.setdefault(dlq, {})
    known.setdefault(UNREADABLE_GROUP, ("", ""))
    missing = [group for group in groups if group not in known]
    for start in range(0, len(missing), _KINDS_CHUNK):
        chunk = missing[start : start + _KINDS_CHUNK]
        keys = [dlq.key(queue), dlq.groups_key(queue)]
        keys += [dlq.group_key(queue, group) for group in chunk]
        details = dlq._group_details(keys=keys, args=chunk)
        for group, (_, _, _, row) in zip(chunk, details, strict=True):
            newest = dlq._entry(_script_row(row)) if row else None
            if isinstance(newest, Entry):
                known[group] = (newest.task, newest.exception)
    return {group: known.get(group, ("", "")) for group in groups}


# Group counts one HSCAN call reads: a queue can have 200,000 groups, which one HGETALL or
# HVALS reads in 100-160 ms.
_COUNTS_CHUNK = 1000


def _group_counts(dlq: DeadLetterQueue, queue: str) -> Iterator[tuple[str, int]]:
    for group, count in dlq.client.hscan_iter(dlq.groups_key(queue), count=_COUNTS_CHUNK):
        yield _text(group), int(count)


def _group_names(dlq: DeadLetterQueue, queue: str) -> list[str]:
    # HSCAN may return a field twice (a hash rehashed mid-scan): a group counted twice would be
    # counted, and listed, twice.
    return list(dict(_group_counts(dlq, queue)))


# Per DeadLetterQueue and queue, the newest id up to which every row is known to be in its
# group's index (or known not to be indexable: a read-only user, a replica).
_grouped_up_to: WeakKeyDictionary[DeadLetterQueue, dict[str, str]] = WeakKeyDictionary()


def _settle(dlq: DeadLetterQueue, queue: str) -> None:
    """Apply retention and put every row of ``queue`` in its group's index.

    Rows only ever join a stream at its newest end, and a row stored by celery-morgue joins its
    group's index in the same script, so once every row up to an id is known grouped, a later
    read looks only at the rows after it (see :func:`_group_new_rows`), never at the groups.
    The first read in a process sums the group counts (a bounded HSCAN a call) against the
    stream's length: the scripts count a row in its group exactly while its index holds it, so
    the difference is the rows not indexed yet (stored before groups existed, written by
    something other than celery-morgue), grouped newest first (see :func:`_group_older_rows`).
    """
    key = dlq.key(queue)
    pipe = dlq.client.pipeline(transaction=False)
    dlq._trim_in(pipe, queue)
    pipe.xrevrange(key, count=1)
    (_, more), newest_rows = pipe.execute()
    if int(more):  # a backlog of retention: finish it first
        dlq._finish_retention(queue)
    known = _grouped_up_to.setdefault(dlq, {})
    if not newest_rows:
        known.pop(queue, None)
        return
    newest = _text(newest_rows[0][0])
    floor = known.get(queue)
    if floor is not None and _bound_key(floor) > _bound_key(newest):
        floor = None  # the stream started anew
    if floor is None:
        _group_older_rows(dlq, queue, newest)
    else:
        _group_new_rows(dlq, queue, floor, newest)
    known[queue] = newest


def _uncounted(dlq: DeadLetterQueue, queue: str) -> int:
    """How many rows no group counts. The counts take several calls, so rows stored or removed
    meanwhile move them: the longer of the lengths before and after errs high for either (a
    scan that finds nothing), and each group is counted once though HSCAN may repeat it."""
    before = int(dlq.client.xlen(dlq.key(queue)))
    counted = sum(dict(_group_counts(dlq, queue)).values())
    after = int(dlq.client.xlen(dlq.key(queue)))
    return max(before, after) - counted


def _group_older_rows(dlq: DeadLetterQueue, queue: str, newest: str) -> None:
    """Index the rows up to ``newest`` that no group counts, newest first, until none is left
    (or the oldest row was reached: the user may not write). A chunk that indexed none (the
    rows are older, another reader indexed them, or the count was high) counts again."""
    missing = _uncounted(dlq, queue)
    top = newest
    while missing > 0:
        rows: list[Any] = dlq.client.xrevrange(dlq.key(queue), max=top, count=READ_CHUNK) or []
        indexed = _index_rows(dlq, queue, rows)
        if len(rows) < READ_CHUNK:
            return
        missing -= indexed
        if not indexed or missing <= 0:
            # Counted down to none, or found none: count again before taking the queue for
            # grouped (other operators' deletes and requeues move the count), since a process
            # never looks below its settled id again.
            missing = _uncounted(dlq, queue)
        top = "(" + _text(rows[-1][0])


def _group_new_rows(dlq: DeadLetterQueue, queue: str, floor: str, newest: str) -> None:
    """Index the rows after ``floor`` up to ``newest`` that their group's index does not hold:
    only rows written by hand (celery-morgue's own are indexed as they are stored). Redis
    checks each row (UNINDEXED_ROWS, a bounded chunk a call) and sends back only the ids of
    those, which are then read and grouped."""
    after = "(" + floor
    unindexed = dlq.client.register_script(GROUP_HELPERS + UNINDEXED_ROWS)
    keys = [dlq.key(queue), dlq.grouped_key(queue)]
    while True:
        args: list[str | int] = [after, newest, dlq.group_key_prefix(queue), READ_CHUNK, GREP_BYTES]
        _, last, ids, more = unindexed(keys=keys, args=args)
        if ids:
            pipe = dlq.client.pipeline(transaction=False)
            for entry_id in ids:
                pipe.xrange(dlq.key(queue), min=entry_id, max=entry_id, count=1)
            rows = [found[0] for found in pipe.execute() if found]
            _index_rows(dlq, queue, rows)
        if not int(more) or not last:
            return
        after = "(" + _text(last)


def _index_rows(dlq: DeadLetterQueue, queue: str, rows: list[Any]) -> int:
    """Put each of ``rows`` in its group's index unless it is there (core.dlq's GROUP script
    checks, in Redis); how many it put. Only the rows without a group of their own are
    decoded, to find theirs."""
    own = [(_text(row[0]), _row_group(row[1])) for row in rows if _row_group(row[1])]
    late = [row for row in rows if not _row_group(row[1])]
    pairs = own + [(entry.id, entry.group) for entry in dlq._grouped_entries(queue, late)]
    if not pairs:
        return 0
    try:
        return dlq._index_groups(queue, pairs)
    except redis.ResponseError:  # a read-only user, a replica: listed, not kept
        return 0


def _chunk(flt: EntryFilter, wanted: int) -> int:
    """Candidates a read takes: what is wanted when nearly every candidate matches, a scan's
    chunk when rows are tested for text."""
    return max(wanted, SCAN_CHUNK) if flt.grep else wanted


# -- the public operations (DeadLetterQueue delegates here) -----------------------------------


def matching_page(
    dlq: DeadLetterQueue,
    queue: str,
    flt: EntryFilter,
    cursor: str | None = None,
    limit: int = 50,
    up_to: str | None = None,
    counted: bool = True,
) -> Page:
    if limit <= 0:
        raise ValueError(f"limit must be positive, got {limit!r}")
    low, last = _range(flt, up_to)
    high = last if cursor is None else _lower_of(last, "(" + check_entry_id(cursor))
    one_group = _one_group_page(dlq, queue, flt, high, last, limit) if counted else None
    if one_group is not None:
        return one_group
    source = _source(dlq, queue, flt)
    items: list[StoredEntry] = []
    scanned = 0
    next_cursor: str | None = None
    for batch in _walk(source, True, high, low, _chunk(flt, limit)):
        for entry_id, entry in batch.candidates:
            if entry is not None and flt.matches(entry):
                items.append(entry)
                if len(items) == limit:
                    next_cursor = entry_id
                    break
        if next_cursor is not None:
            break
        scanned += batch.scanned
        if scanned >= PAGE_SCAN_LIMIT and batch.more:
            next_cursor = batch.last
            break
    if not counted:  # the caller knows the count; with --grep it is a scan of the queue
        return Page(queue=queue, total=-1, items=items, next=next_cursor)
    groups = source.groups if isinstance(source, _IndexSource) else None
    total = _count(dlq, queue, flt, up_to, groups)
    return Page(queue=queue, total=total, items=items, next=next_cursor)


def _one_group_page(
    dlq: DeadLetterQueue, queue: str, flt: EntryFilter, high: str, last: str, limit: int
) -> Page | None:
    """A page of one group without --since or --grep in one round trip, as an unfiltered page
    is: retention, the grouping check, the page (core.dlq's GROUP_PAGE) and the count, in one
    pipeline. None when that does not apply, or when retention or grouping is due first (the
    general path does them). ``high`` bounds the page, ``last`` the count."""
    if flt.group is None or flt.task or flt.exception or flt.since or flt.grep:
        return None
    group = flt.group
    # GROUP_PAGE reads below an exclusive member: an inclusive bound is the id after it.
    if high == "+":
        top = ""
    elif high.startswith("("):
        top = index_member(high[1:])
    else:
        top = index_member(_successor(high))
    floor = _grouped_up_to.get(dlq, {}).get(queue)
    if floor is None:  # not known grouped yet: the general path groups it first
        return None
    index = dlq.group_key(queue, group)
    pipe = dlq.client.pipeline(transaction=False)
    dlq._trim_in(pipe, queue)
    # Rows stored after every row was known grouped, to check first (the general path does).
    pipe.xrevrange(dlq.key(queue), max="+", min="(" + floor, count=1)
    keys = [dlq.key(queue), dlq.groups_key(queue), index]
    queue_script(pipe, dlq._group_page, keys, [group, top, limit])
    pipe.zlexcount(index, "-", _lex(last))
    (_, more), newer, (_, members, rows), total = pipe.execute()
    if int(more) or newer:
        return None
    entries = [_with_group(dlq._entry(_script_row(row)), group) for row in rows if row]
    items = [entry for entry in entries if flt.matches(entry)]
    next_cursor = index_member_id(_text(members[-1])) if len(members) == limit else None
    return Page(queue=queue, total=int(total), items=items, next=next_cursor)


def count_matching(
    dlq: DeadLetterQueue, queue: str, flt: EntryFilter, up_to: str | None = None
) -> int:
    return _count(dlq, queue, flt, up_to, None)


def _count(
    dlq: DeadLetterQueue,
    queue: str,
    flt: EntryFilter,
    up_to: str | None,
    groups: list[str] | None,
) -> int:
    """The matching count; ``groups`` are the selected groups when the caller has them."""
    low, high = _range(flt, up_to)
    if flt.is_empty and up_to is None:
        return dlq.size(queue)
    if flt.grep:
        source: Source = (
            _IndexSource(dlq, queue, groups, _text_test(flt))
            if groups is not None
            else _source(dlq, queue, flt)
        )
        return sum(
            1
            for batch in _walk(source, False, low, high, SCAN_CHUNK)
            for _, entry in batch.candidates
            if entry is not None and flt.matches(entry)
        )
    if groups is None:
        groups = selected_groups(dlq, queue, flt)
    if not groups:
        return 0
    pipe = dlq.client.pipeline(transaction=False)
    for group in groups:
        pipe.zlexcount(dlq.group_key(queue, group), _lex(low), _lex(high))
    return sum(int(count) for count in pipe.execute())


def iter_matching(
    dlq: DeadLetterQueue,
    queue: str,
    flt: EntryFilter,
    up_to: str | None = None,
    chunk: int = 500,
) -> Iterator[list[StoredEntry]]:
    """Not a generator itself: the newest id is read at the call, not at the first chunk,
    so an entry stored in between is not among them."""
    if chunk <= 0:
        raise ValueError(f"chunk must be positive, got {chunk!r}")
    if up_to is None:
        up_to = dlq.newest_id(queue)
        if up_to is None:
            return iter(())
    return _chunks(dlq, queue, flt, up_to, chunk)


def _chunks(
    dlq: DeadLetterQueue, queue: str, flt: EntryFilter, up_to: str, chunk: int
) -> Iterator[list[StoredEntry]]:
    low, high = _range(flt, up_to)
    found: list[StoredEntry] = []
    for batch in _walk(_source(dlq, queue, flt), False, low, high, _chunk(flt, chunk)):
        for _, entry in batch.candidates:
            if entry is not None and flt.matches(entry):
                found.append(entry)
                if len(found) == chunk:
                    yield found
                    found = []
    if found:
        yield found


def delete_matching(
    dlq: DeadLetterQueue, queue: str, flt: EntryFilter, up_to: str | None = None
) -> int:
    deleted = 0
    for entries in iter_matching(dlq, queue, flt, up_to, chunk=DELETE_CHUNK):
        deleted += dlq.delete(queue, *(entry.id for entry in entries))
    return deleted


def clear_matching(
    dlq: DeadLetterQueue, queue: str, flt: EntryFilter, up_to: str | None = None
) -> int:
    """Remove the matching entries up to ``up_to`` (default: the newest now)."""
    if up_to is None:
        up_to = dlq.newest_id(queue)
        if up_to is None:
            return 0
    if flt.until and not (flt.since or flt.by_group or flt.grep):
        # Everything up to a point: the oldest-first chunked clear, no id by id.
        _, high = _range(flt, up_to)  # inclusive: until and up_to both are
        return dlq.clear(queue, up_to=high)
    return delete_matching(dlq, queue, flt, up_to)
