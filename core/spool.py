"""A local, append-only file for entries that could not reach Redis.

Every process of a worker host (the main process and each pool child) appends to the same file
under an exclusive ``flock``; whoever next writes to Redis successfully replays the file and
empties it. Replays go through the same de-duplicating write as live failures, so an entry that
did reach Redis before a timeout is not stored twice.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import platformdirs

from core.entry import Entry

log = logging.getLogger(__name__)

SPOOL_FILE = "spool.jsonl"
REJECTED_FILE = "spool.rejected.jsonl"


def default_spool_dir() -> Path:
    return platformdirs.user_state_path("celery-morgue")


class Spool:
    def __init__(self, directory: Path | str | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_spool_dir()
        self.path = self.directory / SPOOL_FILE

    @contextmanager
    def _locked(self) -> Iterator[int]:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)  # closing releases the lock

    def append(self, entry: Entry) -> None:
        line = (entry.to_json() + "\n").encode()
        with self._locked() as fd:
            os.write(fd, line)
            os.fsync(fd)

    def pending(self) -> bool:
        """Cheap check (one stat) for the hot path."""
        try:
            return self.path.stat().st_size > 0
        except FileNotFoundError:
            return False

    def replay(self, store: Callable[[list[Entry]], object]) -> int:
        """Hand every spooled entry to ``store``; empty the file only if ``store`` returned.

        A line that is not an entry (a torn write after a crash) is moved to a side file rather
        than dropped or retried forever. Returns how many entries were replayed.
        """
        with self._locked() as fd:
            with open(fd, "rb", closefd=False) as handle:
                handle.seek(0)
                lines = handle.read().splitlines()
            if not lines:
                return 0
            entries: list[Entry] = []
            rejected: list[bytes] = []
            for line in lines:
                try:
                    entries.append(Entry.from_json("", line))
                except (ValueError, TypeError):
                    rejected.append(line)
            if entries:
                store(entries)  # raises if Redis is still away: the file stays as it is
            if rejected:
                log.error(
                    "celery-morgue: %d unreadable spool lines kept in %s",
                    len(rejected),
                    self.directory / REJECTED_FILE,
                )
                with open(self.directory / REJECTED_FILE, "ab") as side:
                    side.write(b"\n".join(rejected) + b"\n")
            os.ftruncate(fd, 0)
            return len(entries)
