"""The dead-letter queue: one Redis stream per Celery queue, under ``{prefix}{queue}``.

Why streams: a stream is trimmed oldest-first, which gives the cap and each entry its own
retention (an entry leaves ``retention`` after it was stored, whatever comes later) cheaply,
``XREVRANGE`` with an exclusive cursor pages newest-first in O(log N + page), and a clear up to
a seen id removes exactly what the user looked at and nothing newer. The scripts in
core.dlq_scripts do each of these a chunk at a time, so none holds Redis long.

The prefix must end with ``:``. Besides the streams, keys live under the namespace: the prefix
with ``@`` for its final ``:`` (``dlq@``), which no ``dlq:{queue}`` key can equal:

- ``dlq@queues``: hash queue -> retention in ms: the index, so listing queues never scans, and
  the writer's retention, so readers trim with it;
- ``dlq@seen``: sorted set of stored failure ids by time, so a spool replay, or Celery's second
  ``task_failure`` for the same failure (hard time limits fire two), stores nothing new, while a
  later failure of the same task id is stored. It keeps about a day (or the retention, if
  shorter) and at most ``SEEN_LIMIT`` ids, so its memory is bounded whatever the failure rate
  (about 100 bytes an id);
- ``dlq@requeue:{queue}:{id}``: set, by an owner's token, when an entry is claimed for requeue,
  before anything is published, and removed with the entry once the publish succeeded. Two
  operators requeueing one entry publish it once; a requeue that crashed between publishing and
  removing leaves the entry marked with the task id it was sent as, and nobody sends it again
  unannounced. It lives as long as the queue's retention;
- ``dlq@groups:{queue}``: hash group -> how many of the queue's entries are in it, and
  ``dlq@group:{queue}:{group}``: sorted set, the ids of the group's entries (core.groups), so
  the groups of a queue and a page of one group cost the same at any queue size. Each stream row
  holds its group (field ``group``), so the scripts that take rows out (retention, the cap,
  delete, clear, requeue) take them out of their group in the same step, and the counts stay
  exact. ``dlq@grouped:{queue}``: hash entry id -> group for entries stored before groups
  existed, grouped when first read or by :meth:`DeadLetterQueue.regroup`. A row counts while its
  group's index holds it, so a row written by hand is never uncounted for what it never
  counted, and :meth:`DeadLetterQueue.rebuild_groups` recounts from the rows a chunk at a time.
  The group keys get the stream's TTL at every write, so an expired stream's groups expire with
  it; whole keys dropped otherwise (an emptied queue, a stream started anew) go by ``UNLINK``,
  freed off Redis's main thread.

Every bulk path costs a bounded chunk per Redis call (``READ_CHUNK`` rows for a clear,
retention on read or a regroup, ``IDS_PER_DELETE`` ids for a delete, ``WRITE_CHUNK`` for a
write's cap and retention, ``GROUP_CHUNK`` and ``DETAILS_CHUNK`` for listing groups), so a
concurrent ``PING`` waits milliseconds, not the length of the queue.

Needs Redis 6.2 or later (``XTRIM MINID``, exclusive ranges).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import redis
from kombu.exceptions import EncodeError
from redis.exceptions import NoPermissionError, NoScriptError, ReadOnlyError

from celery_morgue.core.dlq_scripts import (
    ADD,
    CLAIM,
    CLEAR_BEFORE,
    CONFIRM,
    DELETE,
    FINISH,
    GROUP,
    GROUP_DETAILS,
    GROUP_HELPERS,
    GROUP_PAGE,
    LENGTH,
    REBUILD_GROUP,
    REBUILD_GROUPED,
    RELEASE,
    TRIM,
    lua_string,
)
from celery_morgue.core.entry import RAW_SHOWN_LIMIT, Entry, UnreadableEntry, group_of
from celery_morgue.core.errors import (
    AlreadyRequeued,
    DLQError,
    EntryBusy,
    EntryNotFound,
    InvalidEntryError,
    LossyEntryError,
    UnreadableEntryError,
    UnroutableEntry,
)
from celery_morgue.core.filters import EntryFilter
from celery_morgue.core.groups import (
    UNREADABLE_GROUP,
    GroupReport,
    GroupSummary,
    RebuildReport,
    RegroupStep,
    index_member,
    index_member_id,
    is_group_id,
    summarise,
)
from celery_morgue.core.redis_cluster import DLQClient, queue_script
from celery_morgue.core.requeue import REQUEUED_FROM_HEADER, Route, publish, resolve_route  # noqa: F401 - re-exported

DEFAULT_PREFIX = "dlq:"
DEFAULT_RETENTION = 7 * 24 * 3600
DEFAULT_MAX_ENTRIES = 10_000
DEFAULT_PAGE_SIZE = 50
# How long, and how many, task ids are remembered for de-duplication: double signals arrive
# within milliseconds, spool replays within minutes of Redis coming back.
DEDUPE_WINDOW = 24 * 3600
SEEN_LIMIT = 100_000
# Entries a write takes out at most (the cap, retention): a write never stalls on a backlog.
WRITE_CHUNK = 100
# Entries a read's retention, a clear, a delete or a regroup takes a call (and at most a
# quarter of a MiB of them, see dlq_scripts.oldest_rows): 1 to 3 ms of Redis on a busy
# two-core machine, so a concurrent PING waits little longer than the call it queued behind.
READ_CHUNK = 250
# Ids a delete takes a call: each is a lookup of its row (read whole, for its group), an XDEL
# and a ZREM, about 10 µs, several times a range's row.
IDS_PER_DELETE = 100
# Group counts read a call, and groups whose details (first, last, newest row) are read a call.
GROUP_CHUNK = 1000
DETAILS_CHUNK = 100
# A requeue marker younger than this is someone's requeue in progress; older, one that stopped.
_CLAIM_SECONDS = 60.0
# What publishing raises for a malformed entry (its own options), as opposed to the broker.
_INVALID_ENTRY: tuple[type[BaseException], ...] = (
    TypeError,
    ValueError,
    KeyError,
    AttributeError,
    EncodeError,
)
log = logging.getLogger(__name__)
_ENTRY_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")


@dataclass(frozen=True)
class QueueInfo:
    queue: str
    total: int
    oldest: dt.datetime | None
    newest: dt.datetime | None
    groups: int = 0  # distinct failure groups

    def as_dict(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "total": self.total,
            "oldest": self.oldest.isoformat() if self.oldest else None,
            "newest": self.newest.isoformat() if self.newest else None,
            "groups": self.groups,
        }


StoredEntry = Entry | UnreadableEntry


@dataclass(frozen=True)
class Page:
    queue: str
    total: int
    items: list[StoredEntry]
    next: str | None

    def as_dict(self, *, raw: bool = False) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "total": self.total,
            "items": [item.as_dict(raw=raw) for item in self.items],
            "next": self.next,
        }


@dataclass
class RequeueReport:
    requeued: dict[str, str] = field(default_factory=dict)  # entry id -> new task id
    skipped_lossy: list[str] = field(default_factory=list)
    skipped_busy: list[str] = field(default_factory=list)  # being requeued by someone else
    skipped_unreadable: list[str] = field(default_factory=list)
    # Sent earlier by a requeue that stopped before removing them: entry id -> that task id.
    already_requeued: dict[str, str] = field(default_factory=dict)
    unroutable: dict[str, str] = field(default_factory=dict)  # entry id -> why
    # Entries whose stored options the broker client refused (entry id -> why): kept.
    invalid: dict[str, str] = field(default_factory=dict)
    # Sent again after an earlier requeue stopped before confirming its own publish
    # (entry id -> the task id that one may have sent): it may run twice.
    retried: dict[str, str] = field(default_factory=dict)
    # Set when publishing stopped part-way (the broker went away); the entries not yet sent
    # are still in the DLQ.
    error: str | None = None
    # A bulk requeue told to stop (Ctrl+C, escape) before it was done; ``remaining``: how many
    # of the entries it was about are still in the DLQ (sent again, the same run continues).
    stopped: bool = False
    remaining: int = 0
    # How many a bulk requeue sent: ``requeued`` lists them unless it was told not to keep
    # their ids (a big requeue whose ids nobody reads keeps its memory flat).
    sent: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "requeued": self.requeued,
            "skipped_lossy": self.skipped_lossy,
            "skipped_busy": self.skipped_busy,
            "skipped_unreadable": self.skipped_unreadable,
            "already_requeued": self.already_requeued,
            "unroutable": self.unroutable,
            "invalid": self.invalid,
            "retried": self.retried,
            "error": self.error,
        }


def namespace_for(prefix: str) -> str:
    """``dlq:`` -> ``dlq@``: where the DLQ's own keys live beside its streams."""
    if not prefix.endswith(":"):
        raise ValueError(f"prefix must end with ':' (like 'dlq:'), got {prefix!r}")
    return prefix[:-1] + "@"


def check_entry_id(entry_id: str) -> str:
    if not isinstance(entry_id, str) or not _ENTRY_ID.fullmatch(entry_id):
        raise DLQError(f"{entry_id!r} is not an entry id (expected e.g. 1732406400000-0)")
    return entry_id


def stream_id_time(entry_id: str) -> dt.datetime:
    millis = int(entry_id.split("-", 1)[0])
    return dt.datetime.fromtimestamp(millis / 1000, dt.UTC)


def _successor(entry_id: str) -> str:
    """The smallest stream id greater than ``entry_id``."""
    millis, seq = check_entry_id(entry_id).split("-", 1)
    if int(seq) >= 2**64 - 1:
        return f"{int(millis) + 1}-0"
    return f"{int(millis)}-{int(seq) + 1}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else value


class DeadLetterQueue:
    """Read and change the DLQ. Writers pass their retention and cap; readers need not."""

    def __init__(
        self,
        client: DLQClient,
        prefix: str = DEFAULT_PREFIX,
        retention: int = DEFAULT_RETENTION,
        max_entries: int = DEFAULT_MAX_ENTRIES,
    ) -> None:
        if retention <= 0:
            raise ValueError(f"retention must be positive seconds, got {retention!r}")
        if max_entries <= 0:
            raise ValueError(f"max_entries must be positive, got {max_entries!r}")
        self.client = client
        self.prefix = prefix
        self.retention = retention
        self.max_entries = max_entries
        self.namespace = namespace_for(prefix)
        self.index_key = f"{self.namespace}queues"
        self.seen_key = f"{self.namespace}seen"
        self.captured_key = f"{self.namespace}captured"
        self._add = client.register_script(
            GROUP_HELPERS
            + ADD
            % {
                "namespace": lua_string(self.namespace),
                "seen": lua_string(self.seen_key),
                "queues": lua_string(self.index_key),
                "captured": lua_string(self.captured_key),
                "cap": max_entries,
                "retention_ms": retention * 1000,
                "dedupe_ms": min(retention, DEDUPE_WINDOW) * 1000,
                "seen_limit": SEEN_LIMIT,
                # Trimmed a hundredth below the limit, so the trim runs once per that many ids.
                "seen_kept": SEEN_LIMIT - SEEN_LIMIT // 100,
                "chunk": WRITE_CHUNK,
            }
        )
        self._trim = client.register_script(TRIM)
        self._length = client.register_script(LENGTH)
        # Whether this client may apply retention as it reads: unknown until the first read.
        self._applies_retention: bool | None = None
        self._clear_before = client.register_script(CLEAR_BEFORE)
        self._delete = client.register_script(DELETE)
        self._group_script = client.register_script(GROUP)
        self._rebuild_group = client.register_script(REBUILD_GROUP)
        self._rebuild_grouped = client.register_script(REBUILD_GROUPED)
        self._group_page = client.register_script(GROUP_PAGE)
        self._group_details = client.register_script(GROUP_DETAILS)
        self._claim_script = client.register_script(CLAIM)
        self._release_script = client.register_script(RELEASE)
        self._confirm_script = client.register_script(CONFIRM)
        self._finish_script = client.register_script(FINISH)

    def key(self, queue: str) -> str:
        return f"{self.prefix}{queue}"

    def groups_key(self, queue: str) -> str:
        """Hash group -> how many of the queue's entries are in it."""
        return f"{self.namespace}groups:{queue}"

    def group_key(self, queue: str, group: str) -> str:
        """The group's index: a sorted set of its entries' ids (see :func:`index_member`)."""
        return f"{self.group_key_prefix(queue)}{group}"

    def group_key_prefix(self, queue: str) -> str:
        return f"{self.namespace}group:{queue}:"

    def grouped_key(self, queue: str) -> str:
        """Hash entry id -> group, for entries stored before groups existed, once grouped."""
        return f"{self.namespace}grouped:{queue}"

    def _queue_keys(self, queue: str) -> list[str]:
        """KEYS of the scripts that take entries out: stream, queues, groups, grouped."""
        return [self.key(queue), self.index_key, self.groups_key(queue), self.grouped_key(queue)]

    # -- writing -------------------------------------------------------------------------

    def _add_args(self, entry: Entry, payload: bytes | None = None) -> tuple[list[str], list[Any]]:
        # Entries spooled by an older version have no group (nor failure id): computed here.
        group = entry.group if is_group_id(entry.group) else group_of(entry)
        data: str | bytes = entry.to_json() if payload is None else payload
        # Entries spooled by an older version have no failure id: their task id stands in.
        failure_id = entry.failure_id or entry.task_id
        argv = [entry.queue, data, entry.task_id, failure_id, group, entry.reason]
        return [self.prefix + entry.queue], argv

    def add(self, entry: Entry, payload: bytes | None = None) -> str | None:
        """Store ``entry``; returns its stream id, or None if this failure was already stored.

        ``payload`` is ``entry.to_json()`` encoded, when the caller already has it.
        """
        keys, argv = self._add_args(entry, payload)
        try:
            # EVALSHA directly: redis-py's Script wrapper costs as much as the Lua it runs.
            reply = self.client.evalsha(self._add.sha, len(keys), *keys, *argv)
        except NoScriptError:
            reply = self._add(keys=keys, args=argv)
        return _text(reply) if reply else None

    def add_many(
        self, entries: Iterable[Entry], *, raise_on_error: bool = True
    ) -> list[str | redis.ResponseError | None]:
        """Store several entries in one round trip, each de-duplicated like :meth:`add`.

        With ``raise_on_error=False`` an entry Redis refused (a ``ResponseError``: a key of
        another type, out of memory, ...) has that error in its place, and the others are
        stored; without, the first such error raises (the others are stored all the same).
        Connection errors raise either way.
        """
        return self.add_many_acknowledged(entries, raise_on_error=raise_on_error)[0]

    def add_many_acknowledged(
        self, entries: Iterable[Entry], *, raise_on_error: bool = True, wait_ms: int | None = None
    ) -> tuple[list[str | redis.ResponseError | None], int]:
        """:meth:`add_many`, then with ``wait_ms`` a ``WAIT 1 wait_ms`` on the same connection:
        how many replicas have these writes (0 without ``wait_ms``).

        One pipeline, so one connection: WAIT only answers for the writes of the connection
        it runs on, and another thread's connection could say "replicated" for writes it never
        made.
        """
        pipe = self.client.pipeline(transaction=False)
        count = 0
        for entry in entries:
            keys, argv = self._add_args(entry)
            queue_script(pipe, self._add, keys, argv)
            count += 1
        if count == 0:
            return [], 0
        if wait_ms is not None:
            pipe.wait(1, wait_ms)
        replies = pipe.execute(raise_on_error=raise_on_error)
        acknowledged = int(replies.pop()) if wait_ms is not None else 0
        stored = [
            reply if isinstance(reply, redis.ResponseError) else (_text(reply) if reply else None)
            for reply in replies
        ]
        return stored, acknowledged

    # -- reading -------------------------------------------------------------------------

    def applies_retention(self, queue: str) -> bool:
        """Whether reads may apply retention: False for a read-only ACL user or a replica.

        Found once, by a write that removes nothing (an ``XTRIM`` to a length no stream
        reaches), so such a client reads instead of failing on the first queue with rows past
        their retention. It then sees those rows until a writer (a capture, the reaper) trims
        them.
        """
        if self._applies_retention is None:
            try:
                self.client.xtrim(self.key(queue), maxlen=2**62, approximate=False)
                self._applies_retention = True
            except (NoPermissionError, ReadOnlyError):
                log.info("celery-morgue: this Redis user may not write: reading without retention")
                self._applies_retention = False
        return self._applies_retention

    def _trim_in(self, pipe: Any, queue: str) -> None:
        """Queue one chunk of retention on ``pipe``; its reply is ``[length, more]``."""
        if not self.applies_retention(queue):
            queue_script(pipe, self._length, [self.key(queue)], [])
            return
        args: list[str | int] = [queue, self.group_key_prefix(queue), READ_CHUNK]
        queue_script(pipe, self._trim, self._queue_keys(queue), args)

    def _finish_retention(self, queue: str) -> int:
        """Apply retention to ``queue`` a chunk at a time, until none is due; its length."""
        if not self.applies_retention(queue):
            return int(self.client.xlen(self.key(queue)))
        args: list[str | int] = [queue, self.group_key_prefix(queue), READ_CHUNK]
        while True:
            length, more = self._trim(keys=self._queue_keys(queue), args=args)
            if not int(more):
                return int(length)

    def queues(self) -> list[QueueInfo]:
        """Every queue with entries, by name, with its count, oldest and newest failure and
        number of failure groups."""
        names = sorted(_text(name) for name in self.client.hkeys(self.index_key))
        if not names:
            return []
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            self._queue_info_in(pipe, name)
        replies = pipe.execute()
        result = []
        for position, name in enumerate(names):
            info = self._queue_info(name, replies[position * 4 : position * 4 + 4])
            if info is not None:
                result.append(info)
        return result

    def _queue_info_in(self, pipe: Any, queue: str) -> None:
        self._trim_in(pipe, queue)
        pipe.xrange(self.key(queue), count=1)
        pipe.xrevrange(self.key(queue), count=1)
        pipe.hlen(self.groups_key(queue))

    def _queue_info(self, queue: str, replies: list[Any]) -> QueueInfo | None:
        (total, more), first, last, groups = replies
        if int(more):  # a backlog of retention: finish it, then read again
            self._finish_retention(queue)
            pipe = self.client.pipeline(transaction=False)
            self._queue_info_in(pipe, queue)
            return self._queue_info(queue, pipe.execute())
        if not total or not first or not last:
            return None
        return QueueInfo(
            queue=queue,
            total=int(total),
            oldest=stream_id_time(_text(first[0][0])),
            newest=stream_id_time(_text(last[0][0])),
            groups=int(groups),
        )

    def size(self, queue: str) -> int:
        return self._finish_retention(queue)

    def page(self, queue: str, cursor: str | None = None, limit: int = DEFAULT_PAGE_SIZE) -> Page:
        """Up to ``limit`` entries older than ``cursor`` (or the newest), newest first."""
        if limit <= 0:
            raise ValueError(f"limit must be positive, got {limit!r}")
        if cursor is not None:
            _successor(cursor)  # validates the cursor's shape before Redis sees it
        pipe = self.client.pipeline(transaction=False)
        self._trim_in(pipe, queue)
        pipe.xrevrange(self.key(queue), max=f"({cursor}" if cursor else "+", min="-", count=limit)
        (total, more), rows = pipe.execute()
        if int(more):
            total = self._finish_retention(queue)
            rows = self.client.xrevrange(
                self.key(queue), max=f"({cursor}" if cursor else "+", min="-", count=limit
            )
        items = self._grouped_entries(queue, rows)
        next_cursor = items[-1].id if len(items) == limit else None
        return Page(queue=queue, total=int(total), items=items, next=next_cursor)

    def iter_entries(self, queue: str, page_size: int = 500) -> Iterator[StoredEntry]:
        """Every entry of ``queue``, newest first, a page at a time."""
        cursor: str | None = None
        while True:
            page = self.page(queue, cursor, page_size)
            yield from page.items
            if page.next is None:
                return
            cursor = page.next

    def get(self, queue: str, entry_id: str) -> StoredEntry:
        check_entry_id(entry_id)
        self.size(queue)  # an entry past its retention is gone, even if nobody trimmed yet
        rows = self.client.xrange(self.key(queue), min=entry_id, max=entry_id, count=1)
        if not rows:
            raise EntryNotFound(f"no entry {entry_id} in queue {queue!r}")
        return self._grouped_entries(queue, rows)[0]

    def newest_id(self, queue: str) -> str | None:
        rows = self.client.xrevrange(self.key(queue), count=1)
        return _text(rows[0][0]) if rows else None

    def summary(self, queue: str, limit: int = DEFAULT_PAGE_SIZE) -> dict[str, Any]:
        """``{"queue", "total", "items"}``: the newest ``limit`` entries, ready to serve as JSON."""
        page = self.page(queue, limit=limit)
        return {
            "queue": queue,
            "total": page.total,
            "items": [item.as_dict() for item in page.items],
        }

    @staticmethod
    def _entry(row: Any) -> StoredEntry:
        """The entry of a stream row; anything malformed is an :class:`UnreadableEntry`.

        Its group is the row's own ``group`` field, the one the index counts. A row without one
        (stored before groups) keeps what its entry says, if anything: :meth:`_grouped_entries`
        looks its group up, or groups it.
        """
        entry_id, fields = row
        entry_id = _text(entry_id)
        group = _row_group(fields)
        data = fields.get(b"entry", fields.get("entry"))
        if data is None:
            names = ", ".join(sorted(_text_lossy(name) for name in fields)[:5]) or "none"
            return UnreadableEntry(
                entry_id, f"no 'entry' field (fields: {names})", _raw_text(fields), group
            )
        try:
            entry = Entry.from_json(entry_id, data)
        except ValueError as exc:
            return UnreadableEntry(entry_id, str(exc), _raw_text(data), group)
        if group:
            entry.group = group
        return entry

    def _grouped_entries(self, queue: str, rows: list[Any]) -> list[StoredEntry]:
        """The entries of ``rows``, each with its group; those stored before groups existed
        are grouped now, once (lazily: the first read that meets them)."""
        entries = [self._entry(row) for row in rows]
        late, pending = self._late_groups(queue, rows, entries)
        for position, group in late.items():
            entries[position] = _with_group(entries[position], group)
        if pending:
            try:
                self._index_groups(queue, pending)
            except redis.ResponseError as exc:  # a read-only user, a replica: shown, not kept
                log.debug("celery-morgue: could not keep the groups of %s: %s", queue, exc)
        return entries

    def _late_groups(
        self, queue: str, rows: list[Any], entries: list[StoredEntry]
    ) -> tuple[dict[int, str], list[tuple[str, str]]]:
        """For the rows stored without a group: the group of each (by position), and the
        ``(id, group)`` pairs not in the index yet. Such a row's group is the one its entry
        names (computed from the whole traceback when it was captured), else computed now."""
        positions = [position for position, row in enumerate(rows) if not _row_group(row[1])]
        if not positions:
            return {}, []
        ids = [entries[position].id for position in positions]
        known = self.client.hmget(self.grouped_key(queue), ids)
        late: dict[int, str] = {}
        pending: list[tuple[str, str]] = []
        for position, found in zip(positions, known, strict=True):
            entry = entries[position]
            if found is not None:
                late[position] = _text_lossy(found)
                continue
            group = entry.group if is_group_id(entry.group) else _first_group(entry)
            late[position] = group
            pending.append((entry.id, group))
        return late, pending

    def _index_groups(self, queue: str, pairs: list[tuple[str, str]]) -> int:
        keys = self._queue_keys(queue) + [self.group_key(queue, group) for _, group in pairs]
        args: list[str] = [queue]
        for entry_id, group in pairs:
            args += [entry_id, group]
        return int(self._group_script(keys=keys, args=args))

    def regroup(
        self, queue: str, cursor: str | None = None, chunk: int = READ_CHUNK
    ) -> RegroupStep:
        """Index a chunk of the rows not in their group's index yet (entries stored before
        groups existed, rows written by hand), oldest first, from after ``cursor``; a bounded
        cost a call. Call again with ``step.next`` until None."""
        if chunk <= 0:
            raise ValueError(f"chunk must be positive, got {chunk!r}")
        lower = "-" if cursor is None else f"({check_entry_id(cursor)}"
        if cursor is None:
            self.size(queue)
        rows: list[Any] = self.client.xrange(self.key(queue), min=lower, max="+", count=chunk) or []
        entries = [self._entry(row) for row in rows]
        late, _ = self._late_groups(queue, rows, entries)
        pairs = [
            (entries[position].id, late.get(position) or _row_group(row[1]))
            for position, row in enumerate(rows)
        ]
        grouped = self._index_groups(queue, pairs) if pairs else 0
        next_cursor = _text(rows[-1][0]) if len(rows) == chunk else None
        seen = tuple(sorted({group for _, group in pairs}))
        return RegroupStep(scanned=len(rows), grouped=grouped, next=next_cursor, groups=seen)

    def rebuild_groups(self, queue: str, chunk: int = READ_CHUNK) -> RebuildReport:
        """Recount ``queue``'s groups from its rows, for counts that drifted (rows removed by
        hand, a version that wrote rows without their group beside one that wrote them).

        Three passes, each a chunk a call, so Redis is never held for long while workers go on
        writing: every row into its group's index (:meth:`regroup`); out of each index the
        members whose row is gone, then the group's count set to what its index holds; out of
        the ``grouped`` hash the entries whose row is gone. Every script keeps a group's count
        and its index in step, so the counts are exact at the end, with writes meanwhile.
        """
        if chunk <= 0:
            raise ValueError(f"chunk must be positive, got {chunk!r}")
        scanned = indexed = stale = 0
        groups: set[str] = set()
        cursor: str | None = None
        while True:
            step = self.regroup(queue, cursor, chunk)
            scanned += step.scanned
            indexed += step.grouped
            groups.update(step.groups)
            if step.next is None:
                break
            cursor = step.next
        groups_key = self.groups_key(queue)
        groups.update(_text(group) for group, _ in self.client.hscan_iter(groups_key, count=chunk))
        for group in sorted(group for group in groups if is_group_id(group)):
            keys = [self.key(queue), groups_key, self.group_key(queue, group)]
            after = ""
            while True:
                removed, after = self._rebuild_group(keys=keys, args=[group, after, chunk])
                stale += int(removed)
                after = _text(after)
                if not after:
                    break
        keys = [self.key(queue), self.grouped_key(queue)]
        scan: str = "0"
        while True:
            removed, scan = self._rebuild_grouped(keys=keys, args=[scan, chunk])
            stale += int(removed)
            scan = _text(scan)
            if scan == "0":
                break
        return RebuildReport(scanned=scanned, indexed=indexed, stale=stale)

    def groups(self, queue: str, limit: int | None = None) -> GroupReport:
        """The queue's failure groups, largest first (ties by group id), at most ``limit``.

        The counts are read, and the groups' details fetched, a bounded chunk a call: a queue
        of 100,000 groups (a message formatted into the frame's name) stalls nobody.
        """
        if limit is not None and limit <= 0:
            raise ValueError(f"limit must be positive, got {limit!r}")
        groups_key = self.groups_key(queue)
        pipe = self.client.pipeline(transaction=False)
        self._trim_in(pipe, queue)
        pipe.hscan(groups_key, 0, count=GROUP_CHUNK)
        found: Any
        (total, more), (scan, found) = pipe.execute()
        if int(more):
            total = self._finish_retention(queue)
            scan, found = self.client.hscan(groups_key, 0, count=GROUP_CHUNK)
        counts = {_text(group): int(count) for group, count in found.items()}
        while int(scan):
            scan, found = self.client.hscan(groups_key, scan, count=GROUP_CHUNK)
            counts.update((_text(group), int(count)) for group, count in found.items())
        total = int(total)
        ranked = sorted(counts.items(), key=lambda pair: (-pair[1], pair[0]))
        counted = sum(count for _, count in ranked)
        shown = [group for group, _ in ranked[:limit]]
        summaries: list[GroupSummary] = []
        for start in range(0, len(shown), DETAILS_CHUNK):
            summaries += self._group_summaries(queue, shown[start : start + DETAILS_CHUNK])
        return GroupReport(
            queue=queue,
            total=total,
            ungrouped=max(0, total - counted),
            groups=summaries,
            distinct=len(ranked),
        )

    def _group_summaries(self, queue: str, shown: list[str]) -> list[GroupSummary]:
        keys = [self.key(queue), self.groups_key(queue)]
        keys += [self.group_key(queue, group) for group in shown]
        details = self._group_details(keys=keys, args=shown)
        summaries: list[GroupSummary] = []
        for group, (count, first, last, row) in zip(shown, details, strict=True):
            if not count or not first or not last:
                continue  # emptied since the counts were read
            newest = self._entry(_script_row(row)) if row else None
            if isinstance(newest, Entry):
                described = {
                    "task": newest.task,
                    "exception": newest.exception,
                    "traceback": newest.traceback,
                    "sample": newest.message,
                }
            else:
                described = {"sample": newest.problem if newest else ""}
            first_at = stream_id_time(index_member_id(_text(first)))
            last_at = stream_id_time(index_member_id(_text(last)))
            summaries.append(summarise(group, int(count), first_at, last_at, **described))
        return summaries

    def group_page(
        self, queue: str, group: str, cursor: str | None = None, limit: int = DEFAULT_PAGE_SIZE
    ) -> Page:
        """Up to ``limit`` entries of one group older than ``cursor``, newest first; ``total``
        is the group's count. Costs about an unfiltered page, whatever the queue's size."""
        if limit <= 0:
            raise ValueError(f"limit must be positive, got {limit!r}")
        if not is_group_id(group):
            raise DLQError(f"{group!r} is not a group id (12 hex characters)")
        top = index_member(check_entry_id(cursor)) if cursor is not None else ""
        pipe = self.client.pipeline(transaction=False)
        self._trim_in(pipe, queue)
        keys = [self.key(queue), self.groups_key(queue), self.group_key(queue, group)]
        queue_script(pipe, self._group_page, keys, [group, top, limit])
        (_, more), reply = pipe.execute()
        if int(more):
            self._finish_retention(queue)
            reply = self._group_page(keys=keys, args=[group, top, limit])
        count, members, rows = reply
        items = [_with_group(self._entry(_script_row(row)), group) for row in rows if row]
        next_cursor = index_member_id(_text(members[-1])) if len(members) == limit else None
        return Page(queue=queue, total=int(count), items=items, next=next_cursor)

    # -- under a filter (core.matching) -----------------------------------------------------

    def matching_page(
        self,
        queue: str,
        flt: EntryFilter,
        cursor: str | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        up_to: str | None = None,
        *,
        counted: bool = True,
    ) -> Page:
        """Up to ``limit`` matching entries older than ``cursor`` (and not newer than
        ``up_to``), newest first; ``total`` is the matching count (-1 when not ``counted``:
        with ``--grep`` counting is a scan of the queue). ``next`` may come with fewer than
        ``limit`` items, after a bounded scan: keep paging until it is None."""
        from celery_morgue.core import matching

        return matching.matching_page(self, queue, flt, cursor, limit, up_to, counted)

    def count_matching(self, queue: str, flt: EntryFilter, up_to: str | None = None) -> int:
        from celery_morgue.core import matching

        return matching.count_matching(self, queue, flt, up_to)

    def iter_matching(
        self, queue: str, flt: EntryFilter, up_to: str | None = None, chunk: int = 500
    ) -> Iterator[list[StoredEntry]]:
        """The matching entries up to ``up_to`` (default: the newest now), oldest first, in
        lists of at most ``chunk``."""
        from celery_morgue.core import matching

        return matching.iter_matching(self, queue, flt, up_to, chunk)

    def delete_matching(self, queue: str, flt: EntryFilter, up_to: str | None = None) -> int:
        """Delete the matching entries up to ``up_to`` (default: the newest now), by id, a
        chunk a call; returns how many were deleted."""
        from celery_morgue.core import matching

        return matching.delete_matching(self, queue, flt, up_to)

    # -- changing ------------------------------------------------------------------------

    def delete(self, queue: str, *entry_ids: str) -> int:
        """Delete entries by id; returns how many existed. A chunk of ids a call."""
        for entry_id in entry_ids:
            check_entry_id(entry_id)
        removed = 0
        for start in range(0, len(entry_ids), IDS_PER_DELETE):
            ids = entry_ids[start : start + IDS_PER_DELETE]
            args = [queue, self.group_key_prefix(queue), *ids]
            removed += int(self._delete(keys=self._queue_keys(queue), args=args))
        return removed

    def clear(self, queue: str, up_to: str | None = None, flt: EntryFilter | None = None) -> int:
        """Remove entries up to and including ``up_to`` (default: the newest one now); with
        ``flt``, only the matching ones.

        Entries stored after ``up_to`` are kept: pass the newest id the user has seen. Works a
        chunk at a time, so a large clear never holds Redis for long.
        """
        if flt is not None and not flt.is_empty:
            from celery_morgue.core import matching

            return matching.clear_matching(self, queue, flt, up_to)
        if up_to is None:
            up_to = self.newest_id(queue)
            if up_to is None:
                return 0
        args: list[str | int] = [
            queue,
            self.group_key_prefix(queue),
            check_entry_id(up_to),
            READ_CHUNK,
        ]
        removed = 0
        while True:
            count, more = self._clear_before(keys=self._queue_keys(queue), args=args)
            removed += int(count)
            if not int(more):
                return removed

    def trim(self) -> dict[str, int]:
        """Apply retention to every queue, written to or not; returns what remains per queue."""
        names = sorted(_text(name) for name in self.client.hkeys(self.index_key))
        return {name: self.size(name) for name in names}

    def requeue(self, app: Any, queue: str, entry_id: str, *, allow_lossy: bool = False) -> str:
        """Send the entry's task again under a fresh id; the entry goes once the send succeeded.

        A fresh id because workers silently drop ids they have revoked. The original id travels
        in the ``morgue_requeued_from`` header; link, link_error, the rest of a chain and the
        call's time limits travel too. Returns the new task id. Raises :class:`EntryNotFound`
        (also when it was deleted meanwhile), :class:`EntryBusy` / :class:`AlreadyRequeued`,
        :class:`LossyEntryError`, :class:`UnreadableEntryError` or :class:`UnroutableEntry`;
        in each case nothing was sent and the entry stays.
        """
        entry = self.get(queue, entry_id)
        if isinstance(entry, UnreadableEntry):
            raise UnreadableEntryError(
                f"entry {entry_id} is not a celery-morgue entry ({entry.problem}); "
                "it can be shown and deleted, not requeued"
            )
        if not entry.requeue_exact and not allow_lossy:
            raise LossyEntryError(
                f"entry {entry_id} was stored with changed arguments "
                f"({', '.join(entry.lossy_fields + entry.truncated_fields)}); "
                "requeueing would not send the originals"
            )
        route = resolve_route(app, entry)
        new_id = str(uuid.uuid4())
        marker = self._claim(queue, entry_id, new_id)
        try:
            self._send(app, queue, entry, route, new_id, marker)
        except InvalidEntryError:
            raise
        except _INVALID_ENTRY as exc:
            raise InvalidEntryError(
                f"entry {entry_id} cannot be sent ({type(exc).__name__}: {exc}); it is kept"
            ) from None
        self.size(queue)
        return new_id

    def requeue_noting(
        self,
        app: Any,
        queue: str,
        entry_id: str,
        report: RequeueReport,
        *,
        allow_lossy: bool = False,
    ) -> bool:
        """:meth:`requeue` one entry of many: a refusal (nothing sent, the entry stays) is noted
        in ``report``; False when the entry is gone. What the broker raises propagates."""
        try:
            report.requeued[entry_id] = self.requeue(app, queue, entry_id, allow_lossy=allow_lossy)
            report.sent += 1
        except EntryNotFound:
            return False
        except LossyEntryError:
            report.skipped_lossy.append(entry_id)
        except AlreadyRequeued as exc:
            report.already_requeued[entry_id] = exc.task_id
        except EntryBusy:
            report.skipped_busy.append(entry_id)
        except UnreadableEntryError:
            report.skipped_unreadable.append(entry_id)
        except UnroutableEntry as exc:
            report.unroutable[entry_id] = str(exc)
        except InvalidEntryError as exc:
            report.invalid[entry_id] = str(exc)
        return True

    def requeue_all(
        self,
        app: Any,
        queue: str,
        *,
        allow_lossy: bool = False,
        flt: EntryFilter | None = None,
        up_to: str | None = None,
        **redrive: Any,
    ) -> RequeueReport:
        """Requeue, oldest first, every entry (matching ``flt``) present when this started, or
        up to ``up_to``, and still there when its turn comes (one deleted or cleared meanwhile
        is not sent). ``redrive``: ``rate``, ``batch``, ``stop``, ``on_progress`` of
        :class:`celery_morgue.core.redrive.Redrive`, which does the work.

        If the broker fails part-way, the report says so and what was sent; the rest stays.
        """
        from celery_morgue.core.redrive import Redrive  # it builds on this module

        run = Redrive(self, app, queue, flt, up_to=up_to, allow_lossy=allow_lossy, **redrive)
        return run.run()

    def _marker_key(self, queue: str, entry_id: str) -> str:
        return f"{self.namespace}requeue:{queue}:{entry_id}"

    def _claim(
        self, queue: str, entry_id: str, new_id: str, report: RequeueReport | None = None
    ) -> str:
        """Mark the entry as being sent as ``new_id``; returns the marker (our ownership).

        Taking over a requeue that stopped before confirming its publish is noted in
        ``report.retried`` (entry id -> the task id that requeue may have sent) and logged.
        """
        keys = [self.key(queue), self._marker_key(queue, entry_id), self.index_key]
        token = uuid.uuid4().hex
        window = int(_CLAIM_SECONDS * 1000)
        args: list[str | int] = [entry_id, new_id, token, queue, self.retention * 1000, window]
        reply = self._claim_script(keys=keys, args=args)
        verdict = _text(reply[0])
        if verdict in ("ok", "reclaimed"):
            if verdict == "reclaimed":
                earlier = _marker_task(_text(reply[2]))
                if report is not None:
                    report.retried[entry_id] = earlier
                log.warning(
                    "celery-morgue: entry %s: an earlier requeue stopped before confirming it "
                    "sent task %s; sending it again as %s",
                    entry_id,
                    earlier,
                    new_id,
                )
            return _text(reply[1])
        if verdict == "gone":
            raise EntryNotFound(f"no entry {entry_id} in queue {queue!r}")
        held_task = _marker_task(_text(reply[1]))
        age = int(_text(reply[2])) / 1000
        if age < _CLAIM_SECONDS:
            raise EntryBusy(f"entry {entry_id} is being requeued by someone else right now")
        raise AlreadyRequeued(
            f"entry {entry_id} was already sent again as task {held_task} "
            f"{_ago(age)} ago by a requeue that stopped before removing it; "
            f"check that task, then delete the entry",
            held_task,
        )

    def _send(
        self, app: Any, queue: str, entry: Entry, route: Route, new_id: str, marker: str
    ) -> None:
        try:
            publish(app, entry, route, new_id)
        except BaseException:
            with contextlib.suppress(redis.RedisError):  # else it is reported as busy a minute
                self._release_script(keys=[self._marker_key(queue, entry.id)], args=[marker])
            raise
        published = marker.replace('"phase":"claimed"', '"phase":"published"')
        marker_key = self._marker_key(queue, entry.id)
        if self._confirm_script(keys=[marker_key], args=[marker, published]):
            marker = published
        keys = [
            self.key(queue),
            marker_key,
            self.index_key,
            self.groups_key(queue),
            self.grouped_key(queue),
        ]
        self._finish_script(keys=keys, args=[entry.id, marker, queue, self.group_key_prefix(queue)])


def _marker_task(marker: str) -> str:
    try:
        return str(json.loads(marker)["task_id"])
    except (ValueError, KeyError, TypeError):
        return "?"


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _script_row(row: list[Any]) -> tuple[Any, dict[Any, Any]]:
    """A stream row as a script returns it (``[id, [field, value, ...]]``), as redis-py's."""
    entry_id, flat = row
    return entry_id, dict(zip(flat[::2], flat[1::2], strict=True))


def _row_group(fields: dict[Any, Any]) -> str:
    """The group a stream row was indexed under, or "" (none, or not a group id)."""
    group = _text_lossy(fields.get(b"group", fields.get("group", "")))
    return group if is_group_id(group) else ""


def _first_group(entry: StoredEntry) -> str:
    """The group of an entry stored before groups existed (or with its group lost)."""
    if isinstance(entry, UnreadableEntry):
        return UNREADABLE_GROUP
    return group_of(entry)


def _with_group(entry: StoredEntry, group: str) -> StoredEntry:
    if isinstance(entry, UnreadableEntry):
        return dataclasses.replace(entry, group=group)
    entry.group = group
    return entry


def _raw_text(value: Any) -> str:
    """What an unreadable stream entry holds, as text for `dlq show` (capped)."""
    if isinstance(value, dict):
        text = json.dumps(
            {_text_lossy(k): _text_lossy(v) for k, v in value.items()}, ensure_ascii=False
        )
    else:
        text = _text_lossy(value)
    if len(text) > RAW_SHOWN_LIMIT:
        return text[:RAW_SHOWN_LIMIT] + f"…[{len(text) - RAW_SHOWN_LIMIT:,} more characters]"
    return text


def _text_lossy(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return str(value)
