"""The entries of a queue an :class:`EntryFilter` selects: pages, counts, chunks and deletes.

Candidate rows come from one of two sources, read a bounded slice at a time:

- the group index, when the filter names a group, a task or an exception: the groups that can
  hold matching entries (their task and exception are known per group), each group's sorted
  set read from a cursor for at most a slice, and the slices merged by id. A page costs
  O(groups x (log N + page)) whatever the queue's size;
- the stream itself otherwise: its id range narrowed by the time bounds.

Each candidate is then tested with :meth:`EntryFilter.matches`: the text of ``--grep``, and
rows that are not celery-morgue entries (which only filters that can select them match). A
page returns after ``limit`` matches or after it looked at ``PAGE_SCAN_LIMIT`` candidates,
whichever comes first; in the second case its cursor is the last row looked at, so the next
page continues there with no gap and no repeat.

Counts without ``--grep`` come from the index too: ``ZLEXCOUNT`` of each selected group in the
id range. That needs every row grouped: rows stored before groups existed (or written by
something else) are grouped first, newest first, until the groups count the whole stream
(once per such row; see :func:`_group_the_ungrouped`). With ``--grep`` the count is a scan, a
chunk at a time.

Deletes go by id, ``DELETE_CHUNK`` ids a script call, up to a given id: entries stored after
the action started are never touched.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from celery_morgue.core.dlq import (
    READ_CHUNK,
    DeadLetterQueue,
    Page,
    StoredEntry,
    _row_group,
    _text,
    _with_group,
    check_entry_id,
)
from celery_morgue.core.filters import EntryFilter
from celery_morgue.core.groups import index_member, index_member_id

# Rows a call reads when every row is tested (--grep): a few milliseconds of Redis.
SCAN_CHUNK = 1000
# Candidates one page looks at, at most, before it returns what it found.
PAGE_SCAN_LIMIT = 10 * SCAN_CHUNK
# Ids a delete script takes a call.
DELETE_CHUNK = 500

# A candidate: its stream id, and its entry (None when the row went meanwhile).
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


# -- the two sources -------------------------------------------------------------------------


class _StreamSource:
    """Rows straight from the stream."""

    def __init__(self, dlq: DeadLetterQueue, queue: str) -> None:
        self.dlq = dlq
        self.queue = queue

    def read(self, newest_first: bool, start: str, end: str, count: int) -> list[Candidate]:
        key = self.dlq.key(self.queue)
        if newest_first:
            rows = self.dlq.client.xrevrange(key, max=start, min=end, count=count)
        else:
            rows = self.dlq.client.xrange(key, min=start, max=end, count=count)
        entries = self.dlq._grouped_entries(self.queue, rows or [])
        return [(entry.id, entry) for entry in entries]


class _IndexSource:
    """Rows of some groups, through their indexes: a slice of each, merged by id."""

    def __init__(self, dlq: DeadLetterQueue, queue: str, groups: list[str]) -> None:
        self.dlq = dlq
        self.queue = queue
        self.groups = groups

    def read(self, newest_first: bool, start: str, end: str, count: int) -> list[Candidate]:
        if not self.groups:
            return []
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
            return []
        ids = [index_member_id(member) for member, _ in merged]
        pipe = client.pipeline(transaction=False)
        for entry_id in ids:
            pipe.xrange(self.dlq.key(self.queue), min=entry_id, max=entry_id, count=1)
        found: list[Candidate] = []
        for entry_id, (_, group), rows in zip(ids, merged, pipe.execute(), strict=True):
            entry = _with_group(self.dlq._entry(rows[0]), group) if rows else None
            found.append((entry_id, entry))
        return found


Source = _StreamSource | _IndexSource


def _walk(
    source: Source, newest_first: bool, start: str, end: str, chunk: int
) -> Iterator[list[Candidate]]:
    """The candidates from ``start`` towards ``end``, a chunk a call, each chunk's cursor the
    last id of the one before (exclusive), so rows removed meanwhile leave no gap."""
    while True:
        batch = source.read(newest_first, start, end, chunk)
        if batch:
            yield batch
        if len(batch) < chunk:
            return
        start = "(" + batch[-1][0]


def _source(dlq: DeadLetterQueue, queue: str, flt: EntryFilter) -> Source:
    if not flt.by_group:
        return _StreamSource(dlq, queue)
    _group_the_ungrouped(dlq, queue)
    return _IndexSource(dlq, queue, selected_groups(dlq, queue, flt))


def selected_groups(dlq: DeadLetterQueue, queue: str, flt: EntryFilter) -> list[str]:
    """The groups of ``queue`` that can hold entries ``flt`` matches."""
    if flt.group is not None and flt.task is None and flt.exception is None:
        present = dlq.client.hexists(dlq.groups_key(queue), flt.group)
        return [flt.group] if present else []
    if not flt.by_group:
        return sorted(_text(group) for group in dlq.client.hkeys(dlq.groups_key(queue)))
    return [
        summary.group
        for summary in dlq.groups(queue).groups
        if flt.matches_group(summary.task, summary.exception, summary.group)
    ]


def _group_the_ungrouped(dlq: DeadLetterQueue, queue: str) -> None:
    """Group the rows no group counts yet (stored before groups existed, or by something other
    than celery-morgue), newest first, until the groups count the whole stream.

    The adding scripts keep the stream's length and the groups' counts in step, so their
    difference is exactly the rows not grouped yet; when there is none this costs one
    ``XLEN`` and one ``HVALS``. Rows written raw are usually the newest, so the scan from the
    newest end usually stops after a chunk; entries from before groups are read once.
    """
    top = "+"
    while _ungrouped(dlq, queue) > 0:
        rows: list[Any] = (
            dlq.client.xrevrange(dlq.key(queue), max=top, min="-", count=READ_CHUNK) or []
        )
        late = [row for row in rows if not _row_group(row[1])]
        if late:
            dlq._grouped_entries(queue, late)
        if len(rows) < READ_CHUNK:
            return
        top = "(" + _text(rows[-1][0])


def _ungrouped(dlq: DeadLetterQueue, queue: str) -> int:
    length = dlq.size(queue)
    counts = dlq.client.hvals(dlq.groups_key(queue))
    return length - sum(int(count) for count in counts)


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
) -> Page:
    if limit <= 0:
        raise ValueError(f"limit must be positive, got {limit!r}")
    low, high = _range(flt, up_to)
    if cursor is not None:
        high = _lower_of(high, "(" + check_entry_id(cursor))
    dlq.size(queue)  # retention first: what it removes is not listed
    source = _source(dlq, queue, flt)
    items: list[StoredEntry] = []
    scanned = 0
    next_cursor: str | None = None
    for batch in _walk(source, True, high, low, _chunk(flt, limit)):
        for entry_id, entry in batch:
            if entry is not None and flt.matches(entry):
                items.append(entry)
                if len(items) == limit:
                    next_cursor = entry_id
                    break
        if next_cursor is not None:
            break
        scanned += len(batch)
        if scanned >= PAGE_SCAN_LIMIT:
            next_cursor = batch[-1][0]
            break
    total = count_matching(dlq, queue, flt, up_to)
    return Page(queue=queue, total=total, items=items, next=next_cursor)


def count_matching(
    dlq: DeadLetterQueue, queue: str, flt: EntryFilter, up_to: str | None = None
) -> int:
    low, high = _range(flt, up_to)
    size = dlq.size(queue)
    if flt.is_empty and up_to is None:
        return size
    if flt.grep:
        return sum(
            1
            for batch in _walk(_source(dlq, queue, flt), False, low, high, SCAN_CHUNK)
            for _, entry in batch
            if entry is not None and flt.matches(entry)
        )
    _group_the_ungrouped(dlq, queue)
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
    if chunk <= 0:
        raise ValueError(f"chunk must be positive, got {chunk!r}")
    if up_to is None:
        up_to = dlq.newest_id(queue)
        if up_to is None:
            return
    low, high = _range(flt, up_to)
    dlq.size(queue)
    found: list[StoredEntry] = []
    for batch in _walk(_source(dlq, queue, flt), False, low, high, _chunk(flt, chunk)):
        for _, entry in batch:
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
