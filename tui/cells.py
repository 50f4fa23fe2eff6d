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

from core.entry import Entry
from core.zombies import ActiveTask

# The CLI's escaping, so the UI and `morgue dlq show` show the same text for the same entry.
from tui.literal import printable as printable

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


def format_clock_time(epoch: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch))


def one_line(text: str, width: int) -> str:
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


def failed_epoch(entry: Entry) -> float:
    try:
        return entry.failed_at_datetime.timestamp()
    except ValueError:
        # A foreign or damaged entry: its stream id still says when it was stored.
        return stream_order(entry.id)[0] / 1000


def entry_age(entry: Entry, now: float) -> str:
    return format_age(now - failed_epoch(entry))


def error_text(entry: Entry, width: int) -> Text:
    exception = entry.exception or "?"
    if not entry.message:
        return Text(one_line(exception, width))
    return Text(one_line(f"{exception}: {entry.message}", width))


def entry_cells(entry: Entry, now: float, error_width: int) -> dict[str, object]:
    """The DLQ table's cells for ``entry``, by column key."""
    return {
        "age": Keyed(entry.id, Text(entry_age(entry, now))),
        "task": Text(tail(entry.task, TASK_NAME_WIDTH)),
        "error": error_text(entry, error_width),
        "task_id": Text(printable(entry.task_id)[:SHORT_ID]),
    }


def entry_matches(entry: Entry, needle: str) -> bool:
    """The ``/`` filter: task name, exception type and message, task id and entry id."""
    needle = needle.casefold()
    return any(
        needle in field.casefold()
        for field in (entry.task, entry.exception, entry.message, entry.task_id, entry.id)
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


def age_bar(task: ActiveTask, colours: BarColours) -> Bar:
    limit = task.hard_limit if task.hard_limit > 0 else 1.0
    age = task.age or 0.0
    if task.zombie or age >= limit:
        colour = colours.past
    elif age >= WARNING_SHARE * limit:
        colour = colours.warning
    else:
        colour = colours.calm
    return Bar(
        size=limit,
        begin=0,
        end=min(age, limit),
        width=BAR_WIDTH,
        color=colour,
        bgcolor=colours.background,
    )


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
        "age": Text(format_age(task.age), justify="right"),
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
