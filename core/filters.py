"""Which entries a listing or a bulk action is about: one filter that every command understands.

A filter is what an operator typed (``--task``, ``--exception``, ``--group``, ``--since``,
``--until``, ``--grep``); every field left out matches everything, and the fields combine with
"and". Time bounds are stream ids in disguise (a stream id starts with the ms it was stored),
so they narrow a range read instead of testing rows. The group, task and exception narrow to
groups first (core.groups indexes entries by group), so those filters read the index, not the
queue; only ``--grep`` tests rows, and it does so a bounded chunk at a time.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from celery_morgue.core.entry import Entry, UnreadableEntry
from celery_morgue.core.groups import GROUP_ID

_AGO = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)\s*", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


class FilterError(ValueError):
    """A filter the user typed that cannot mean anything (a bad time, an invalid group id)."""


def parse_when(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """``2h``, ``30m``, ``45s``, ``1d``, ``1w`` ago, or an ISO 8601 time (naive means UTC)."""
    now = now or dt.datetime.now(dt.UTC)
    match = _AGO.fullmatch(text)
    if match:
        amount, unit = float(match[1]), match[2].lower()
        try:
            return now - dt.timedelta(seconds=amount * _UNIT_SECONDS[unit])
        except OverflowError:
            raise FilterError(f"{text!r} is too long ago to be a time") from None
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise FilterError(
            f"{text!r} is not a time: give ISO 8601 (2026-12-01T09:30) or an age (2h, 30m, 1d)"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def to_ms(when: dt.datetime) -> int:
    """Milliseconds since the epoch, exactly (a float timestamp times 1000 can land a
    millisecond low, and a bound a millisecond off drops or takes an entry)."""
    return (when - _EPOCH) // dt.timedelta(milliseconds=1)


@dataclass(frozen=True)
class EntryFilter:
    """The entries of one queue a command is about. The empty filter matches every entry."""

    task: str | None = None
    exception: str | None = None
    group: str | None = None
    since: dt.datetime | None = None  # stored at or after
    until: dt.datetime | None = None  # stored at or before
    grep: str | None = None  # in the message, ignoring case

    def __post_init__(self) -> None:
        if self.group is not None and not GROUP_ID.fullmatch(self.group):
            raise FilterError(f"{self.group!r} is not a group id (12 hex digits, see dlq groups)")
        # Stream ids start at the epoch: a --since before it is no bound at all, and an --until
        # before it selects nothing anyone could mean.
        if self.since is not None and self.since < _EPOCH:
            object.__setattr__(self, "since", None)
        if self.until is not None and self.until < _EPOCH:
            raise FilterError("--until is before 1970: no entry is that old")
        if self.since and self.until and self.since > self.until:
            raise FilterError("--since is after --until: nothing can match")

    @property
    def is_empty(self) -> bool:
        return not (
            self.task or self.exception or self.group or self.since or self.until or self.grep
        )

    @property
    def by_group(self) -> bool:
        """Whether the group index narrows this filter (group, task or exception)."""
        return bool(self.group or self.task or self.exception)

    def id_range(self) -> tuple[str, str]:
        """The stream id range (inclusive, XRANGE's spelling) the time bounds allow."""
        low = f"{to_ms(self.since)}-0" if self.since else "-"
        high = f"{to_ms(self.until)}-18446744073709551615" if self.until else "+"
        return low, high

    def matches_group(self, task: str, exception: str, group: str) -> bool:
        """Whether a group of this task and exception can hold matching entries."""
        if self.group is not None and group != self.group:
            return False
        if self.task is not None and task != self.task:
            return False
        return self.exception is None or _same_exception(exception, self.exception)

    def matches(self, entry: Entry | UnreadableEntry) -> bool:
        """The whole test for one entry, as the index-backed reads apply it."""
        if self.since or self.until:
            low, high = self.id_range()
            stored = _id_key(entry.id)
            if (low != "-" and stored < _id_key(low)) or (high != "+" and stored > _id_key(high)):
                return False
        if isinstance(entry, UnreadableEntry):
            # Only the empty-but-for-time filter or the unreadable group itself selects these.
            return not (self.task or self.exception or self.grep) and (
                self.group is None or self.group == entry.group
            )
        if not self.matches_group(entry.task, entry.exception, entry.group or self.group or ""):
            return False
        return self.grep is None or self.grep.casefold() in entry.message.casefold()

    def describe(self) -> str:
        """The filter in words, for a confirmation: "group 3f9a… , message containing 'x'"."""
        parts: list[str] = []
        if self.group:
            parts.append(f"group {self.group}")
        if self.task:
            parts.append(f"task {self.task}")
        if self.exception:
            parts.append(f"exception {self.exception}")
        if self.since:
            parts.append(f"since {self.since.isoformat(timespec='seconds')}")
        if self.until:
            parts.append(f"until {self.until.isoformat(timespec='seconds')}")
        if self.grep:
            parts.append(f"message containing {self.grep!r}")
        return ", ".join(parts) if parts else "all entries"

    def as_dict(self) -> dict[str, Any]:
        """What --json reports as the filter applied (only the fields given)."""
        out: dict[str, Any] = {}
        for name in ("task", "exception", "group", "grep"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        for name in ("since", "until"):
            when = getattr(self, name)
            if when is not None:
                out[name] = when.isoformat()
        return out


def _same_exception(stored: str, wanted: str) -> bool:
    """``ValueError`` matches ``ValueError`` and ``builtins.ValueError``; dotted names match
    themselves and their own last part."""
    return stored == wanted or stored.rsplit(".", 1)[-1] == wanted or wanted.endswith("." + stored)


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
