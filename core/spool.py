"""A local, bounded, append-only spool for entries that could not reach Redis.

Every process of a worker host (the main process and each pool child) appends to the same spool
under an exclusive ``flock``; the worker's main process drains it into Redis a bounded batch at a
time (``core.spool_drain``), and any process whose write succeeded may drain a batch too. One
spool per destination (Redis URL and prefix), so two apps on one host never replay into each
other's Redis. Replays go through the same de-duplicating write as live failures, so an entry
that did reach Redis before a timeout is not stored twice.

On disk, in the spool directory (all files mode 0600, named by a hash: no password):

- ``spool-{tag}.jsonl``: the active segment; appends go here, one JSON entry a line.
- ``spool-{tag}.{n:08d}.jsonl``: sealed segments, oldest first by number. The active segment is
  sealed (renamed) once it would pass ``max_bytes / SEGMENTS``; when the spool would pass
  ``max_bytes``, the oldest sealed segments are deleted (oldest entries first, no copying) and
  counted as dropped.
- ``spool-{tag}.state``: the lock every process takes, and the spool's header: a small JSON
  object with the replay position (segment number and byte offset in the oldest segment), the
  line counts, and the dropped and replayed counters. It is rewritten in place (one ``pwrite``)
  under the lock, and checked against the directory each time the lock is taken, so a process
  killed between two steps costs at most a batch replayed twice (which the DLQ de-duplicates).
  Threads (and gevent or eventlet greenlets) of one process also take a per-process lock
  before the ``flock``, so one of them waiting for another never blocks in ``flock``.
- ``spool-{tag}.rejected.jsonl``: lines that are not entries (torn writes), and entries Redis
  refused for good (``{"error": ..., "entry": ...}``), kept, not dropped.

The replay position only moves past lines Redis has accepted (or refused for good: the
caller's ``store`` sets those aside, ``Spool.set_aside_refused``), and moves before the lock is
released; appends only ever add after the end: entries appended between two replay ticks are
neither lost nor replayed twice. A fully replayed sealed segment is deleted, a fully replayed
active segment truncated (after the header says offset 0, so a kill in between replays a batch
twice rather than hide what is appended next; a header left past the end is reset).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import platformdirs

from celery_morgue.core.entry import ENTRY_LIMIT, Entry

log = logging.getLogger(__name__)

REJECTED_SUFFIX = ".rejected"
STATE_SUFFIX = ".state"
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
# The active segment is sealed past max_bytes / SEGMENTS: dropping for space removes about an
# eighth of the spool at a time, never by copying what is kept.
SEGMENTS = 8
# One replay batch (one Redis round trip): at most this many entries and about this many bytes.
REPLAY_BATCH = 200
REPLAY_BATCH_BYTES = 1024 * 1024
# One replay call (a tick of the worker's event loop) lasts about this long: each batch is sized
# from the time entries took so far (the first of a process holds REPLAY_FIRST_BATCH).
REPLAY_TICK_SECONDS = 0.015
REPLAY_TICK_ENTRIES = 20_000
REPLAY_FIRST_BATCH = 20
_STATE_BLOCK = 4096
_STATE_VERSION = 1
_READ_CHUNK = 1024 * 1024


# Per process, one lock per spool, taken before its flock: a thread (or a greenlet, once gevent
# or eventlet patched threading) waits here, not in flock(), while another of the same process
# holds the spool; a greenlet blocked in flock() would block the one holding it too. Created on
# first use (after any monkey-patching) and forgotten in a forked child (its holder is gone).
_process_locks: dict[str, threading.Lock] = {}
os.register_at_fork(after_in_child=_process_locks.clear)


def _process_lock(path: Path) -> threading.Lock:
    key = str(path)
    lock = _process_locks.get(key)
    if lock is None:
        lock = _process_locks.setdefault(key, threading.Lock())
    return lock


def default_spool_dir() -> Path:
    return platformdirs.user_state_path("celery-morgue")


class SpoolBusy(Exception):
    """Another process is replaying this spool right now."""


@dataclass(frozen=True)
class SpoolStatus:
    """What a spool holds, from its header (counts are kept as it goes, not recounted)."""

    pending: int  # entries (lines) not replayed yet
    pending_bytes: int
    dropped: int  # entries deleted to keep the spool under max_bytes, ever
    dropped_at: float | None  # epoch seconds of the last drop
    unreported_dropped: int  # dropped since the count was last reported to Redis
    replayed: int  # lines replayed (stored, expired or set aside), ever
    replayed_at: float | None  # epoch seconds of the last replay that moved anything


@dataclass
class _State:
    active_no: int = 1  # the number the active segment gets when it is sealed
    sealed: list[list[int]] = field(default_factory=list)  # [number, lines], oldest first
    active_lines: int = 0
    read_no: int = 1  # the segment the read offset is in: always the oldest
    read_offset: int = 0
    read_lines: int = 0
    dropped: int = 0
    dropped_at: float | None = None
    unreported_dropped: int = 0
    replayed: int = 0
    replayed_at: float | None = None

    def to_bytes(self) -> bytes:
        data = {"v": _STATE_VERSION, **asdict(self)}
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> _State | None:
        """None for anything that is not a state this version wrote (then it is rebuilt)."""
        try:
            data = json.loads(raw)
            if not isinstance(data, dict) or data.pop("v", None) != _STATE_VERSION:
                return None
            state = cls(**data)
            sealed = [[int(number), int(lines)] for number, lines in state.sealed]
            ints = (state.active_no, state.active_lines, state.read_no, state.read_offset)
            if not all(isinstance(value, int) and value >= 0 for value in ints):
                return None
        except (ValueError, TypeError):
            return None
        state.sealed = sealed
        return state

    def pending(self) -> int:
        return max(0, sum(lines for _, lines in self.sealed) + self.active_lines - self.read_lines)


class SpooledEntry(Entry):
    """An entry read back from the spool: it serialises as the line it was spooled as.

    The line is ``Entry.to_json()`` of the entry, written by this or an earlier version, and
    checked by ``Entry.from_json``; handing it to Redis as it is saves serialising every entry
    again during a replay (about a fifth of its cost).
    """

    __slots__ = ("_line",)
    _line: str

    @classmethod
    def parse(cls, line: bytes) -> SpooledEntry:
        entry = cls.from_json("", line)
        assert isinstance(entry, SpooledEntry)
        entry._line = line.decode()
        return entry

    def to_json(self) -> str:
        return self._line


class Spool:
    def __init__(
        self,
        directory: Path | str | None = None,
        destination: str = "",
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.directory = Path(directory) if directory is not None else default_spool_dir()
        # The destination may hold a password: the files are named by a hash of it, never by it.
        tag = hashlib.sha256(destination.encode()).hexdigest()[:16] if destination else "default"
        self.tag = tag
        self.path = self.directory / f"spool-{tag}.jsonl"
        self.rejected_path = self.path.with_suffix(REJECTED_SUFFIX + ".jsonl")
        self.state_path = self.path.with_suffix(STATE_SUFFIX)
        self.max_bytes = max_bytes
        self._segment_name = re.compile(rf"spool-{re.escape(tag)}\.(\d{{8,}})\.jsonl")
        self._seconds_per_entry: float | None = None  # measured by replays in this process

    def __repr__(self) -> str:
        return f"<Spool {self.path}>"

    @property
    def segment_bytes(self) -> int:
        return max(1, self.max_bytes // SEGMENTS)

    def segment_path(self, number: int) -> Path:
        return self.directory / f"spool-{self.tag}.{number:08d}.jsonl"

    # -- the lock and the header ---------------------------------------------------------

    @contextmanager
    def _locked(self, *, wait: bool = True) -> Iterator[_Locked]:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        guard = _process_lock(self.state_path)
        if not guard.acquire(blocking=wait):
            raise SpoolBusy(str(self.path))
        try:
            fd = os.open(self.state_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise SpoolBusy(str(self.path)) from None
                locked = _Locked(self, fd)
                try:
                    yield locked
                finally:
                    locked.save()
            finally:
                os.close(fd)  # closing releases the flock
        finally:
            guard.release()

    def _sealed_on_disk(self) -> list[int]:
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        numbers = []
        for name in names:
            match = self._segment_name.fullmatch(name)
            if match:
                numbers.append(int(match.group(1)))
        return sorted(numbers)

    # -- appending -----------------------------------------------------------------------

    def append(self, entry: Entry) -> None:
        self.append_many([entry])

    def append_many(self, entries: Iterable[Entry]) -> None:
        """Append entries (one lock, one fsync); the oldest go if the spool would pass its cap."""
        lines = [(entry.to_json() + "\n").encode() for entry in entries]
        if not lines:
            return
        with self._locked() as locked:
            locked.append(lines)

    # -- reading -------------------------------------------------------------------------

    def pending(self) -> bool:
        """Cheap check (one stat) for the hot path: is anything waiting?

        Sealed segments exist only while the active one holds entries too (a segment is sealed
        right before an entry is appended to the next), so the active segment's size says it.
        """
        try:
            return self.path.stat().st_size > 0
        except FileNotFoundError:
            return False

    def status(self) -> SpoolStatus:
        """The header's counts, read without the lock (a torn read is retried once)."""
        state = None
        for _ in range(2):
            try:
                with open(self.state_path, "rb") as handle:
                    state = _State.from_bytes(handle.read())
            except FileNotFoundError:
                break
            if state is not None:
                break
        active = _size(self.path)
        if state is None:
            return SpoolStatus(
                pending=1 if active else 0,
                pending_bytes=active,
                dropped=0,
                dropped_at=None,
                unreported_dropped=0,
                replayed=0,
                replayed_at=None,
            )
        stored_bytes = sum(_size(self.segment_path(number)) for number, _ in state.sealed)
        return SpoolStatus(
            pending=state.pending(),
            pending_bytes=max(0, stored_bytes + active - state.read_offset),
            dropped=state.dropped,
            dropped_at=state.dropped_at,
            unreported_dropped=state.unreported_dropped,
            replayed=state.replayed,
            replayed_at=state.replayed_at,
        )

    def disk_bytes(self) -> int:
        """Bytes the spool's segments take on disk (what ``max_bytes`` bounds)."""
        return _size(self.path) + sum(
            _size(self.segment_path(number)) for number in self._sealed_on_disk()
        )

    def acknowledge_dropped(self, count: int) -> bool:
        """``count`` dropped entries were reported: forget them (not the total). False if the
        spool was busy (then they are reported again later)."""
        try:
            with self._locked(wait=False) as locked:
                state = locked.state
                state.unreported_dropped = max(0, state.unreported_dropped - count)
                locked.dirty = True
        except SpoolBusy:
            return False
        return True

    # -- replaying -----------------------------------------------------------------------

    def replay(
        self,
        store: Callable[[list[Entry]], int],
        *,
        max_seconds: float = REPLAY_TICK_SECONDS,
        max_entries: int = REPLAY_TICK_ENTRIES,
    ) -> int:
        """Hand the oldest spooled entries to ``store``, a batch at a time, for about
        ``max_seconds`` or ``max_entries``; returns how many ``store`` said it stored.

        Streams: memory and time are bounded by a batch, whatever the spool's size; call again
        (``pending()``) for the rest. The position moves past a batch only once ``store``
        returned; if it raises (Redis still away), the exception propagates and that batch stays
        for the next call (batches already stored are not replayed again). A line that is not
        an entry (a torn write) goes to a side file rather than being dropped or retried
        forever. Returns 0 at once if another process is replaying right now.
        """
        try:
            with self._locked(wait=False) as locked:
                return locked.replay(store, time.monotonic() + max_seconds, max_entries)
        except SpoolBusy:
            return 0

    def replay_all(self, store: Callable[[list[Entry]], int]) -> int:
        """Replay until the spool is empty (tests, tools; a worker uses bounded ticks)."""
        total = 0
        while True:
            with self._locked() as locked:
                total += locked.replay(store, time.monotonic() + 3600.0, 10**12)
                if not locked.has_pending():
                    return total

    def set_aside_refused(self, refused: list[tuple[Entry, BaseException]]) -> None:
        """Keep entries Redis refused for good (a ``WRONGTYPE``...) in the side file, each with
        its error, instead of retrying them forever (which would block what follows them).
        Logged once, here. Needs no lock: the side file is only ever appended to."""
        if not refused:
            return
        entry, error = refused[0]
        log.error(
            "celery-morgue: Redis refused %d failed tasks for good (task %s, queue %r: %s); "
            "kept in %s",
            len(refused),
            entry.task_id,
            entry.queue,
            error,
            self.rejected_path,
        )
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self._write_aside(
            [
                b'{"error":%s,"rejected_at":"%s","entry":%s}'
                % (json.dumps(str(error)).encode(), at.encode(), entry.to_json().encode())
                for entry, error in refused
            ]
        )

    def _set_aside(self, lines: list[bytes]) -> None:
        log.error(
            "celery-morgue: %d unreadable spool lines kept in %s", len(lines), self.rejected_path
        )
        self._write_aside(lines)

    def _write_aside(self, lines: list[bytes]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.rejected_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            _write_all(fd, b"".join(line + b"\n" for line in lines))
            with contextlib.suppress(OSError):
                os.fsync(fd)
        finally:
            os.close(fd)


class _Locked:
    """The spool while this process holds its lock: the header, checked against the disk."""

    def __init__(self, spool: Spool, fd: int) -> None:
        self.spool = spool
        self.fd = fd
        self.dirty = False
        self._sizes: dict[int, int] = {}  # sealed segment sizes, while appending
        raw = os.pread(fd, os.fstat(fd).st_size, 0)
        self._written = len(raw)
        loaded = _State.from_bytes(raw) if raw.strip() else None
        self.state = self._reconcile(loaded)

    def _reconcile(self, loaded: _State | None) -> _State:
        """The header, made to agree with the segments on disk.

        A process killed between renaming or deleting a segment and rewriting the header leaves
        them apart; the rules below then err towards replaying a batch twice, never skipping.
        """
        spool = self.spool
        on_disk = spool._sealed_on_disk()
        state = loaded or _State()
        known = dict((number, lines) for number, lines in state.sealed)
        recount_active = loaded is None and _size(spool.path) > 0
        sealed = []
        for number in on_disk:
            if number >= state.active_no:
                if loaded is not None:
                    # The active segment was sealed but the header not rewritten: what the
                    # header said of the active segment is this one's; the active one is new.
                    known.setdefault(number, state.active_lines)
                    recount_active = True
                state.active_no = number + 1
            lines = known.get(number)
            if lines is None:
                lines = _count_lines(spool.segment_path(number))
            sealed.append([number, lines])
        if recount_active:
            state.active_lines = _count_lines(spool.path)
        if sealed != state.sealed:
            self.dirty = True
        state.sealed = sealed
        oldest = sealed[0][0] if sealed else state.active_no
        if state.read_no != oldest:
            # The segment being read is gone (replayed or dropped): the next one starts at 0.
            state.read_no, state.read_offset, state.read_lines = oldest, 0, 0
            self.dirty = True
        if state.read_offset:
            reading = spool.segment_path(oldest) if sealed else spool.path
            if _size(reading) < state.read_offset:
                # Emptied after the offset was saved (a replayer killed between the truncate
                # and the header, by an earlier version): all it holds now came after, unread.
                state.read_offset = state.read_lines = 0
                if not sealed:
                    state.active_lines = _count_lines(spool.path)
                self.dirty = True
        if loaded is None:
            self.dirty = True
        return state

    def save(self) -> None:
        if not self.dirty:
            return
        payload = self.state.to_bytes()
        size = -(-len(payload) // _STATE_BLOCK) * _STATE_BLOCK
        # One pwrite, padded with spaces (JSON ignores them): a killed process cannot tear it.
        os.pwrite(self.fd, payload.ljust(size), 0)
        if self._written > size:
            os.ftruncate(self.fd, size)
        self._written = size
        self.dirty = False

    def has_pending(self) -> bool:
        return bool(self.state.sealed) or _size(self.spool.path) > 0

    def _segment(self, number: int) -> Path:
        if number == self.state.active_no:
            return self.spool.path
        return self.spool.segment_path(number)

    # -- appending -----------------------------------------------------------------------

    def append(self, lines: list[bytes]) -> None:
        spool, state = self.spool, self.state
        self._sizes = {number: _size(spool.segment_path(number)) for number, _ in state.sealed}
        fd = os.open(spool.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            size = os.fstat(fd).st_size
            pending = bytearray()
            if size and os.pread(fd, 1, size - 1) != b"\n":
                # A process killed mid-append left a torn line: end it, so it costs only itself.
                pending += b"\n"
                state.active_lines += 1
            for line in lines:
                active = size + len(pending)
                if active > 0 and active + len(line) > spool.segment_bytes:
                    _write_all(fd, pending)
                    pending.clear()
                    os.fsync(fd)
                    os.close(fd)
                    fd = -1
                    self._seal(active)
                    fd = os.open(spool.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
                    size = 0
                self._make_room(size + len(pending), len(line))
                pending += line
                state.active_lines += 1
            _write_all(fd, pending)
            os.fsync(fd)
        finally:
            if fd >= 0:
                os.close(fd)
            self.dirty = True

    def _seal(self, size: int) -> None:
        """The active segment (of ``size`` bytes) becomes the newest sealed one."""
        state = self.state
        number = state.active_no
        os.rename(self.spool.path, self.spool.segment_path(number))
        state.sealed.append([number, state.active_lines])
        self._sizes[number] = size
        state.active_no = number + 1
        state.active_lines = 0
        self.dirty = True

    def _make_room(self, active_size: int, needed: int) -> None:
        """Delete the oldest sealed segments until ``needed`` more bytes fit under the cap."""
        spool, state, sizes = self.spool, self.state, self._sizes
        total = active_size + sum(sizes.values())
        dropped = 0
        while state.sealed and total + needed > spool.max_bytes:
            number, lines = state.sealed.pop(0)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(spool.segment_path(number))
            gone = lines - (state.read_lines if state.read_no == number else 0)
            dropped += max(0, gone)
            total -= sizes.pop(number, 0)
            state.read_no = state.sealed[0][0] if state.sealed else state.active_no
            state.read_offset = state.read_lines = 0
        if dropped:
            state.dropped += dropped
            state.unreported_dropped += dropped
            state.dropped_at = time.time()
            self.dirty = True
            log.error(
                "celery-morgue: spool %s reached spool_max_bytes (%d bytes): dropped its %d "
                "oldest entries (%d dropped in all)",
                spool.path,
                spool.max_bytes,
                dropped,
                state.dropped,
            )

    # -- replaying -----------------------------------------------------------------------

    def replay(self, store: Callable[[list[Entry]], int], deadline: float, max_entries: int) -> int:
        state = self.state
        stored = consumed = 0
        spool = self.spool
        while consumed < max_entries:
            path = self._segment(state.read_no)
            started = time.monotonic()
            want = min(REPLAY_BATCH, max_entries - consumed)
            if spool._seconds_per_entry is None:
                want = min(want, REPLAY_FIRST_BATCH)
            else:
                fits = int((deadline - started) / spool._seconds_per_entry)
                if fits < 1 and consumed:
                    break  # not even one more entry fits in this tick
                want = max(1, min(want, fits))
            batch = _read_batch(path, state.read_offset, want, spool)
            if batch.count:
                entries: list[Entry] = []
                rejected = list(batch.rejected)
                for line in batch.lines:
                    if not line.strip():
                        continue
                    try:
                        entries.append(SpooledEntry.parse(line))
                    except Exception:
                        rejected.append(line)
                if entries:
                    stored += store(entries)
                if rejected:
                    spool._set_aside(rejected)
                state.read_offset = batch.end
                state.read_lines += batch.count
                state.replayed += batch.count
                state.replayed_at = time.time()
                consumed += batch.count
                self.dirty = True
                # Leaning to the slower of the last batch and the history: ticks overrun less.
                last = (time.monotonic() - started) / batch.count
                known = spool._seconds_per_entry
                spool._seconds_per_entry = last if known is None else max(last, (known + last) / 2)
            if batch.end >= batch.size and not self._finish_segment():
                break  # all replayed (the header is written on the way out)
            self.save()  # the position moves before anything else can happen
            if time.monotonic() >= deadline:
                break
        return stored

    def _finish_segment(self) -> bool:
        """The segment being read is fully replayed: delete (or empty) it. False: all done."""
        state = self.state
        if state.sealed:
            number = state.sealed[0][0]
            # Deleted before the header moves on: a kill in between reads the next one from 0.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.spool.segment_path(number))
            state.sealed.pop(0)
            state.read_no = state.sealed[0][0] if state.sealed else state.active_no
            state.read_offset = state.read_lines = 0
            self.dirty = True
            return True
        if _size(self.spool.path) or state.read_offset or state.active_lines:
            state.read_offset = state.read_lines = state.active_lines = 0
            self.dirty = True
            # The header first: killed before the truncate, the last batch replays twice (the DLQ
            # de-duplicates it); after it, an old offset would hide the next appends.
            self.save()
            with contextlib.suppress(FileNotFoundError):
                os.truncate(self.spool.path, 0)
        return False


@dataclass
class _Batch:
    lines: list[bytes]  # complete lines, newline removed (possibly empty)
    rejected: list[bytes]  # a torn tail, or the start of an over-long line
    end: int  # the offset after the batch
    count: int  # lines consumed, lines and rejected together
    size: int  # the segment's size when read


def _read_batch(path: Path, offset: int, max_lines: int, spool: Spool) -> _Batch:
    """Up to ``max_lines`` lines (about ``REPLAY_BATCH_BYTES``) of ``path`` from ``offset``.

    The caller holds the lock, so no append is half-done: an unterminated last line is torn
    (its writer died) and comes back in ``rejected``. A line longer than any entry can be is
    copied to the side file in pieces, never read whole.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return _Batch([], [], offset, 0, offset)
    try:
        size = os.fstat(fd).st_size
        if offset >= size:
            return _Batch([], [], offset, 0, size)
        data = os.pread(fd, min(REPLAY_BATCH_BYTES, size - offset), offset)
        newline = data.rfind(b"\n")
        if newline < 0:
            return _long_line(fd, offset, size, data, spool)
        lines = data[: newline + 1].split(b"\n", max_lines)
        if len(lines) > max_lines:
            lines.pop()  # the unsplit rest
            used = sum(len(line) + 1 for line in lines)
        else:
            lines.pop()  # the empty string after the last newline
            used = newline + 1
        return _Batch(lines, [], offset + used, len(lines), size)
    finally:
        os.close(fd)


def _long_line(fd: int, offset: int, size: int, head: bytes, spool: Spool) -> _Batch:
    """The line at ``offset`` has no newline within ``head``: read on, a chunk at a time."""
    parts = [head]
    position = offset + len(head)
    while position < size and sum(map(len, parts)) <= ENTRY_LIMIT:
        chunk = os.pread(fd, min(_READ_CHUNK, size - position), position)
        newline = chunk.find(b"\n")
        if newline >= 0:
            parts.append(chunk[:newline])
            return _Batch([b"".join(parts)], [], position + newline + 1, 1, size)
        parts.append(chunk)
        position += len(chunk)
    if position >= size:
        return _Batch([], [b"".join(parts)], size, 1, size)  # torn: its writer died
    # Longer than any entry: into the side file in pieces, up to its newline.
    log.error("celery-morgue: a spool line of more than %d bytes set aside", ENTRY_LIMIT)
    out = os.open(spool.rejected_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for part in parts:
            _write_all(out, part)
        while position < size:
            chunk = os.pread(fd, min(_READ_CHUNK, size - position), position)
            newline = chunk.find(b"\n")
            if newline >= 0:
                _write_all(out, chunk[: newline + 1])
                return _Batch([], [], position + newline + 1, 1, size)
            _write_all(out, chunk)
            position += len(chunk)
        _write_all(out, b"\n")
        return _Batch([], [], size, 1, size)
    finally:
        os.close(out)


def spool_for(
    directory: Path | str | None, redis_url: str, prefix: str, max_bytes: int = DEFAULT_MAX_BYTES
) -> Spool:
    """The spool of the DLQ at ``redis_url`` under ``prefix``."""
    return Spool(directory, destination=f"{redis_url} {prefix}", max_bytes=max_bytes)


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def _count_lines(path: Path) -> int:
    """Lines in ``path``, an unterminated last one included (read in chunks, once)."""
    count = 0
    last = b"\n"
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(_READ_CHUNK):
                count += chunk.count(b"\n")
                last = chunk[-1:]
    except FileNotFoundError:
        return 0
    return count + (last != b"\n")


def _write_all(fd: int, data: bytes | bytearray) -> None:
    """``os.write`` may write less than asked (a full disk); a short line would tear the file."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError("spool write made no progress")
        view = view[written:]
