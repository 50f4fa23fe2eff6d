"""A local, append-only file for entries that could not reach Redis.

Every process of a worker host (the main process and each pool child) appends to the same file
under an exclusive ``flock``; whoever next writes to Redis successfully replays the file and
empties it. One file per destination (Redis URL and prefix), so two apps on one host never
replay into each other's Redis. Replays go through the same de-duplicating write as live
failures, so an entry that did reach Redis before a timeout is not stored twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import platformdirs

from core.entry import Entry

log = logging.getLogger(__name__)

REJECTED_SUFFIX = ".rejected"
# Entries sent to Redis per round trip during a replay.
REPLAY_BATCH = 500


def default_spool_dir() -> Path:
    return platformdirs.user_state_path("celery-morgue")


class SpoolBusy(Exception):
    """Another process is replaying this spool right now."""


class Spool:
    def __init__(self, directory: Path | str | None = None, destination: str = "") -> None:
        self.directory = Path(directory) if directory is not None else default_spool_dir()
        # The destination may hold a password: the file is named by a hash of it, never by it.
        tag = hashlib.sha256(destination.encode()).hexdigest()[:16] if destination else "default"
        self.path = self.directory / f"spool-{tag}.jsonl"
        self.rejected_path = self.path.with_suffix(REJECTED_SUFFIX + ".jsonl")

    @contextmanager
    def _locked(self, *, wait: bool = True) -> Iterator[int]:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise SpoolBusy(str(self.path)) from None
            yield fd
        finally:
            os.close(fd)  # closing releases the lock

    def append(self, entry: Entry) -> None:
        line = (entry.to_json() + "\n").encode()
        with self._locked() as fd:
            _write_all(fd, line)
            os.fsync(fd)

    def pending(self) -> bool:
        """Cheap check (one stat) for the hot path."""
        try:
            return self.path.stat().st_size > 0
        except FileNotFoundError:
            return False

    def replay(self, store: Callable[[list[Entry]], int]) -> int:
        """Hand spooled entries to ``store`` in batches; empty the file once all went.

        ``store`` returns how many it stored. If it raises (Redis still away), the file is kept
        whole: batches already stored are de-duplicated when it is replayed again. A line that
        is not an entry (a torn write after a crash) goes to a side file rather than being
        dropped or retried forever. Returns how many entries were stored; 0 if another process
        is replaying right now (its replay covers these lines).
        """
        try:
            with self._locked(wait=False) as fd:
                return self._replay_locked(fd, store)
        except SpoolBusy:
            return 0

    def _replay_locked(self, fd: int, store: Callable[[list[Entry]], int]) -> int:
        with open(fd, "rb", closefd=False) as handle:
            handle.seek(0)
            lines = handle.read().splitlines()
        entries: list[Entry] = []
        rejected: list[bytes] = []
        for line in lines:
            if not line.strip():
                continue
            try:
                entries.append(Entry.from_json("", line))
            except Exception:
                rejected.append(line)
        stored = 0
        for start in range(0, len(entries), REPLAY_BATCH):
            stored += store(entries[start : start + REPLAY_BATCH])
        if rejected:
            self._set_aside(rejected)
        os.ftruncate(fd, 0)
        return stored

    def _set_aside(self, lines: list[bytes]) -> None:
        log.error(
            "celery-morgue: %d unreadable spool lines kept in %s", len(lines), self.rejected_path
        )
        fd = os.open(self.rejected_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            _write_all(fd, b"\n".join(lines) + b"\n")
            with contextlib.suppress(OSError):
                os.fsync(fd)
        finally:
            os.close(fd)


def spool_for(directory: Path | str | None, redis_url: str, prefix: str) -> Spool:
    """The spool of the DLQ at ``redis_url`` under ``prefix``."""
    return Spool(directory, destination=f"{redis_url} {prefix}")


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` may write less than asked (a full disk); a short line would tear the file."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError("spool write made no progress")
        view = view[written:]
