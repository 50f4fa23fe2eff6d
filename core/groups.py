"""Failure groups: which entries are the same bug, by a fingerprint computed once, at capture.

A group is the task name, the exception type and the innermost frame of the traceback (its file
and function: no line numbers, no message text), so "user 17 not found" and "user 42 not found"
raised at one place are one group, and the same exception raised from two functions are two. An
entry without a traceback (terminated, rejected, unregistered, expired, lost) has its reason,
task and exception. The group id is 12 hex characters of a BLAKE2b of those parts: short enough
to type, and 48 bits leave a collision among a queue's groups vanishingly unlikely.

The file is its last two path parts (``proj/billing.py``), so workers deployed at different paths
(a virtualenv per release, another container) put one bug in one group.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import re
from dataclasses import dataclass
from typing import Any, NamedTuple

GROUP_ID = re.compile(r"[0-9a-f]{12}")
# Python's traceback lines for a frame: '  File "path", line 12, in function'.
_FRAME_START = '\n  File "'
_LINE = '", line '
_IN = ", in "
# A traceback's frames are near its end; a message quoting frame-like lines is passed over.
_MAX_FRAMES_TRIED = 50


class Frame(NamedTuple):  # a tuple: built on every captured failure
    file: str
    function: str

    def __str__(self) -> str:
        return f"{self.file}:{self.function}"


def innermost_frame(traceback: str) -> Frame | None:
    """The last ``File "...", line N, in f`` line of a Python traceback, or None.

    Plain string searches from the end, not a regular expression over the whole text: it runs
    on every captured failure, and a traceback can be 32 KiB.
    """
    if traceback.startswith(_FRAME_START[1:]):  # frames alone, as traceback.format_tb gives
        traceback = "\n" + traceback
    end = len(traceback)
    for _ in range(_MAX_FRAMES_TRIED):
        start = traceback.rfind(_FRAME_START, 0, end)
        if start < 0:
            return None
        line_end = traceback.find("\n", start + 1)
        line = traceback[start + len(_FRAME_START) : line_end if line_end >= 0 else None]
        path, found, rest = line.partition(_LINE)
        number, found_in, function = rest.partition(_IN)
        if found and found_in and number.isdigit():
            return Frame(_short_path(path), function.strip())
        end = start
    return None


@functools.lru_cache(maxsize=1024)  # a worker's failures come from a few files: each capture
def _short_path(path: str) -> str:
    parts = path.replace("\\", "/").rsplit("/", 2)[-2:]
    return "/".join(part for part in parts if part) or path


def raised_at(exception: BaseException | None) -> Frame | None:
    """Where ``exception`` was raised, from its traceback object; None when it has none.

    Preferred to the text: a message can quote a whole traceback (a subprocess's stderr, a
    remote error), whose frames the text parser would take for the innermost one, and an
    exception group's frames are indented past what the parser reads.
    """
    tb = exception.__traceback__ if exception is not None else None
    if tb is None:
        return None
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    return Frame(_short_path(code.co_filename), code.co_name)


def fingerprint(
    *,
    task: str,
    exception: str,
    traceback: str,
    reason: str = "failed",
    raised: BaseException | None = None,
) -> str:
    """The group id of a failure of ``task`` with ``exception`` (a type name).

    ``raised`` is the exception itself when the caller has it: its frames decide, and the
    text is read only without them (a lost worker's error, an entry stored before groups).
    """
    frame = raised_at(raised) or innermost_frame(traceback)
    where = (frame.file, frame.function) if frame else ("", "")
    return group_id(reason, task, exception, *where)


UNREADABLE_GROUP_PARTS = ("unreadable",)


def group_id(*parts: str) -> str:
    digest = hashlib.blake2b("\x00".join(parts).encode("utf-8", "surrogatepass"), digest_size=6)
    return digest.hexdigest()


UNREADABLE_GROUP = group_id(*UNREADABLE_GROUP_PARTS)
"""Every stream entry that is not a celery-morgue entry: one group, so each entry has one."""


def is_group_id(value: object) -> bool:
    return isinstance(value, str) and GROUP_ID.fullmatch(value) is not None


# -- the index ---------------------------------------------------------------------------------


def index_member(entry_id: str) -> str:
    """A stream id as a member of a group's index: members sort bytewise as the ids do (a
    letter for the number of digits, then the digits), so all scores are 0 and a page is one
    ``ZREVRANGEBYLEX`` from an exclusive cursor. The Lua scripts in core.dlq do the same."""
    millis, sequence = (str(int(part)) for part in entry_id.split("-", 1))
    return f"{chr(96 + len(millis))}{millis}{chr(96 + len(sequence))}{sequence}"


def index_member_id(member: str) -> str:
    digits = ord(member[0]) - 96
    return f"{member[1 : 1 + digits]}-{member[2 + digits :]}"


# -- what a listing shows ----------------------------------------------------------------------


@dataclass(frozen=True)
class GroupSummary:
    """One group of a queue: its count, first and last failure, and its newest entry's
    task, exception, innermost frame and message (the sample)."""

    group: str
    task: str
    exception: str
    where: str  # "file:function" of the innermost frame, or ""
    sample: str
    count: int
    first: dt.datetime
    last: dt.datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "task": self.task,
            "exception": self.exception,
            "where": self.where,
            "sample": self.sample,
            "count": self.count,
            "first": self.first.isoformat(),
            "last": self.last.isoformat(),
        }


def summarise(
    group: str,
    count: int,
    first: dt.datetime,
    last: dt.datetime,
    *,
    task: str = "",
    exception: str = "",
    traceback: str = "",
    sample: str = "",
) -> GroupSummary:
    """A group's summary from its newest stored entry's fields."""
    frame = innermost_frame(traceback)
    where = str(frame) if frame else ""
    return GroupSummary(group, task, exception, where, sample, count, first, last)


@dataclass(frozen=True)
class GroupReport:
    queue: str
    total: int  # entries in the queue
    groups: list[GroupSummary]
    # Entries stored before groups existed and not grouped yet (`morgue dlq regroup`).
    ungrouped: int = 0
    distinct: int = 0  # groups in all (``groups`` may be cut to a limit)

    def as_dict(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "total": self.total,
            "ungrouped": self.ungrouped,
            "total_groups": self.distinct,
            "groups": [group.as_dict() for group in self.groups],
        }


@dataclass(frozen=True)
class RegroupStep:
    scanned: int
    grouped: int
    next: str | None  # the cursor of the next chunk; None at the end
    groups: tuple[str, ...] = ()  # the groups of the rows read


@dataclass(frozen=True)
class RebuildReport:
    scanned: int  # rows read
    indexed: int  # rows that were not in their group's index
    stale: int  # index and ``grouped`` entries whose row was gone

    def as_dict(self) -> dict[str, Any]:
        return {"scanned": self.scanned, "indexed": self.indexed, "stale": self.stale}
