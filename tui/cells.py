"""How DLQ entries and running tasks become table cells and short texts.

Everything that came from a task (names, arguments, exception messages) is wrapped in
``rich.text.Text``: DataTable, Static and notifications parse a plain ``str`` as markup, and an
exception message such as ``[red]boom[/red]`` must show as those characters. It also goes through
:func:`printable`, as in the CLI: a bidi override (U+202E) or an escape character from a task is
shown as ``\\u202e``, never allowed to reorder or recolour what is around it.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass

from rich.bar import Bar
from rich.color import Color as RichColor
from rich.text import Text

from celery_morgue.core.dlq import StoredEntry
from celery_morgue.core.entry import UnreadableEntry
from celery_morgue.core.zombies import ActiveTask

# The CLI's escaping, so the UI and `morgue dlq show` show the same text for the same entry.
from celery_morgue.tui.literal import printable as printable

Clock = Callable[[], float]
"""Seconds since the epoch; injected so that ages and times can be frozen in tests."""

SYSTEM_CLOCK: Clock = time.time

# Cells are one line: long names and messages are cut so a column cannot grow without bound.
# Column widths: fixed ones small enough for 80 columns; the error (DLQ) and the task name
# (active tasks) take whatever width is left, and are cut to it.
TASK_NAME_WIDTH = 20
WORKER_WIDTH = 16
SHORT_ID = 8
AGE_WIDTH = 5  # format_age never needs more
STATE_WIDTH = 7  # "ZOMBIE", "redeliv", "waiting"
BAR_WIDTH = 8
# The bar moves in quarter cells (rich could draw eighths): against a 300 s limit, a step every
# 9 s. Each step repaints the task's whole line, so finer steps would cost more than they show.
BAR_STEPS = BAR_WIDTH * 4
# The bar turns from calm to warning when a task has used this share of its hard limit.
WARNING_SHARE = 0.8


@dataclass(frozen=True)
class Keyed:
    """A cell that knows its row's key.

    ``DataTable.sort`` hands the key function cell values only, never row keys; a cell that
    carries its row key lets a table put rows in any order we computed elsewhere.
    """

    key: str
    text: Text

    def __rich__(self) -> Text:
        return self.text


def stream_order(entry_id: str) -> tuple[int, int]:
    """Stream ids compare as (milliseconds, sequence), not as strings."""
    millis, _, sequence = entry_id.partition("-")
    try:
        return int(millis), int(sequence or 0)
    except ValueError:
        return 0, 0


def format_age(seconds: float | None) -> str:
    """A compact age in at most five characters: 42s, 4m03s, 23m, 2h05m, 14h, 3d04h, 12d."""
    if seconds is None:
        return "—"
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s" if minutes < 10 else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m" if hours < 10 else f"{hours}h"
    days, hours = divmod(hours, 24)
    if days < 10:
        return f"{days}d{hours:02d}h"
    return f"{days}d" if days < 10_000 else f"{days // 365}y"  # a skewed clock, most likely


def coarse_age(seconds: float | None) -> str:
    """An age for a table cell, in its largest unit only: 43s, 12m, 3h, 5d (a skewed clock: 27y).

    A cell is repainted, and sent over the terminal's link, whenever its text changes. Seconds
    are worth that in an age's first minute, minutes in its first hour; an older row changes
    once an hour, then once a day. The exact age is in the detail (:func:`format_age`).
    """
    if seconds is None:
        return "—"
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86_400:
        return f"{seconds // 3600}h"
    days = seconds // 86_400
    return f"{days}d" if days < 10_000 else f"{days // 365}y"  # a skewed clock, most likely


def format_clock_time(epoch: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch))


def clipped_line(text: str, width: int) -> str:
    """The first ``width`` characters of ``text`` on one line, control characters escaped."""
    flat = " ".join(printable(text, keep_newlines=True).split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def head(text: str, width: int) -> str:
    """The first ``width`` characters: a worker's name starts with what tells it apart."""
    text = printable(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def tail(text: str, width: int) -> str:
    """The last ``width`` characters: the end of a dotted task name says the most."""
    text = printable(text)
    return text if len(text) <= width else "…" + text[-(width - 1) :]


# Why a task was dropped, when it did not simply fail: a word on its row (any colour scheme),
# and a sentence in its detail.
REASON_MARKERS = {
    "terminated": "TERMINATED",
    "unregistered": "UNREGISTERED",
    "rejected": "REJECTED",
    "expired": "EXPIRED",
}
REASON_TEXT = {
    "failed": "failed: it raised, hit a time limit or lost its worker",
    "terminated": "terminated: revoked with terminate while it ran",
    "unregistered": "unregistered: the worker did not know the task name",
    "rejected": "rejected: the worker refused the message or could not decode it",
    "expired": "expired: its expires passed before it ran",
}
# Exception names that only restate the reason: after its marker they would say it twice.
_RESTATED = frozenset({"Terminated", "Expired", "NotRegistered"})
UNREADABLE = "UNREADABLE"


def stored_epoch(entry_id: str) -> float:
    """When the stream stored the entry, from its id."""
    return stream_order(entry_id)[0] / 1000


def failed_epoch(entry: StoredEntry) -> float:
    if isinstance(entry, UnreadableEntry):
        return stored_epoch(entry.id)
    try:
        return entry.failed_at_datetime.timestamp()
    except ValueError:
        # A foreign or damaged entry: its stream id still says when it was stored.
        return stored_epoch(entry.id)


def entry_age(entry: StoredEntry, now: float) -> str:
    return coarse_age(now - failed_epoch(entry))


def error_text(entry: StoredEntry, width: int) -> Text:
    if isinstance(entry, UnreadableEntry):
        return Text(clipped_line(entry.problem, width))
    marker = REASON_MARKERS.get(entry.reason)
    if marker is None:
        exception = entry.exception or "?"
        if not entry.message:
            return Text(clipped_line(exception, width))
        return Text(clipped_line(f"{exception}: {entry.message}", width))
    exception = "" if entry.exception in _RESTATED else entry.exception
    rest = ": ".join(part for part in (exception, entry.message) if part)
    room = width - len(marker) - 1
    if not rest or room < 2:
        return Text(marker[:width], style="bold")
    return Text.assemble((marker, "bold"), " ", clipped_line(rest, room))


def entry_cells(entry: StoredEntry, now: float, error_width: int) -> dict[str, object]:
    """The DLQ table's cells for ``entry``, by column key."""
    if isinstance(entry, UnreadableEntry):
        return {
            "age": Keyed(entry.id, Text(entry_age(entry, now))),
            "task": Text(UNREADABLE, style="bold"),
            "error": error_text(entry, error_width),
            "task_id": Text("—"),
        }
    return {
        "age": Keyed(entry.id, Text(entry_age(entry, now))),
        "task": Text(tail(entry.task, TASK_NAME_WIDTH)),
        "error": error_text(entry, error_width),
        "task_id": Text(printable(entry.task_id)[:SHORT_ID]),
    }


def not_requeueable(entry: UnreadableEntry) -> str:
    """Why ``e`` does nothing to an unreadable entry."""
    return (
        f"Entry {entry.id} cannot be requeued, only shown and deleted. "
        f"It is unreadable: {clipped_line(entry.problem, 120)}."
    )


def task_matches(task: ActiveTask, needle: str) -> bool:
    needle = needle.casefold()
    return any(needle in field.casefold() for field in (task.name, task.id, task.worker))


@dataclass(frozen=True)
class BarColours:
    """Theme colours for the age bar, read from the running app's theme."""

    calm: RichColor | str
    warning: RichColor | str
    past: RichColor | str
    background: RichColor | str


@dataclass(frozen=True)
class AgeBar:
    """A task's age against its hard limit, as a bar, kept in the steps a bar can draw.

    Two bars that would draw the same compare equal (rich's ``Bar`` compares by identity), so
    a table repaints a task's row only when its bar visibly moves or changes colour.
    """

    filled: int  # in BAR_STEPS of the limit
    colour: RichColor | str
    background: RichColor | str

    def __rich__(self) -> Bar:
        return Bar(
            size=BAR_STEPS,
            begin=0,
            end=self.filled,
            width=BAR_WIDTH,
            color=self.colour,
            bgcolor=self.background,
        )


def age_bar(task: ActiveTask, colours: BarColours) -> AgeBar:
    limit = task.hard_limit if task.hard_limit > 0 else 1.0
    age = task.age or 0.0
    if task.zombie or age >= limit:
        colour = colours.past
    elif age >= WARNING_SHARE * limit:
        colour = colours.warning
    else:
        colour = colours.calm
    # Rounded down, as rich rounds a bar's end.
    filled = int(BAR_STEPS * min(max(age, 0.0), limit) / limit)
    return AgeBar(filled=filled, colour=colour, background=colours.background)


def task_state(task: ActiveTask) -> Text:
    # A word, not a colour alone: NO_COLOR and monochrome terminals must still read it.
    if task.zombie:
        return Text("ZOMBIE", style="bold reverse")
    if task.redelivered:
        return Text("redeliv")
    if task.started_at is None:
        return Text("waiting")
    return Text("")


def task_cells(task: ActiveTask, colours: BarColours, name_width: int) -> dict[str, object]:
    return {
        "worker": Keyed(task.id, Text(head(task.worker, WORKER_WIDTH))),
        "task": Text(tail(task.name, name_width)),
        "task_id": Text(printable(task.id)[:SHORT_ID]),
        "age": Text(coarse_age(task.age), justify="right"),
        "state": task_state(task),
        "bar": age_bar(task, colours),
    }


def unreachable_cells(worker: str) -> dict[str, object]:
    return {
        "worker": Keyed(f"unreachable:{worker}", Text(head(worker, WORKER_WIDTH))),
        "task": Text("UNREACHABLE", style="bold"),
        "task_id": Text(""),
        "age": Text(""),
        "state": Text(""),
        "bar": Text(""),
    }


def iso_with_age(value: str, now: float) -> str:
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        return value
    return f"{value} ({format_age(now - when.timestamp())} ago)"
