"""What the CLI prints: stable JSON, and compact tables that fit the terminal (80 columns if
there is none).

Text that came from tasks (arguments, messages, tracebacks) is printed literally: control and
format characters are shown escaped, so an exception message cannot recolour the terminal,
move the cursor or reorder a line with bidi overrides.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import click

from celery_morgue.tui.literal import printable

ELLIPSIS = "…"
DEFAULT_WIDTH = 80


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))


def cell_width(text: str) -> int:
    """Terminal columns ``text`` takes: wide East Asian characters two, combining marks none."""
    width = 0
    for char in text:
        if unicodedata.combining(char):
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width


def fit(text: str, width: int) -> str:
    """``text`` cut to ``width`` columns, ending in an ellipsis when something was cut."""
    if cell_width(text) <= width:
        return text
    if width <= 0:
        return ""
    out = []
    used = 0
    for char in text:
        step = cell_width(char)
        if used + step > width - 1:
            break
        out.append(char)
        used += step
    return "".join(out) + ELLIPSIS


def terminal_width() -> int:
    return max(40, shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns)


@dataclass(frozen=True)
class Column:
    header: str
    # Columns that may shrink when the table is too wide; the others keep their full width.
    flexible: bool = False
    minimum: int = 6
    right: bool = False


def render_table(
    columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int | None = None
) -> str:
    """A plain table, two spaces between columns, shrinking flexible columns to fit ``width``."""
    width = width or terminal_width()
    cells = [[printable(str(value)) for value in row] for row in rows]
    widths = [
        max([cell_width(column.header)] + [cell_width(row[index]) for row in cells])
        for index, column in enumerate(columns)
    ]
    gaps = 2 * (len(columns) - 1)
    # Take one column from the widest flexible column until the table fits or none can give.
    while sum(widths) + gaps > width:
        candidates = [
            index
            for index, column in enumerate(columns)
            if column.flexible and widths[index] > column.minimum
        ]
        if not candidates:
            break
        widest = max(candidates, key=lambda index: widths[index])
        widths[widest] -= 1
    lines = []
    for row in [[column.header for column in columns], *cells]:
        parts = []
        for index, column in enumerate(columns):
            text = fit(row[index], widths[index])
            pad = " " * (widths[index] - cell_width(text))
            parts.append(pad + text if column.right else text + pad)
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def format_time(value: dt.datetime | str | None) -> str:
    """``2024-11-24 10:00:05`` in UTC; the tables say UTC in their headers."""
    if value is None:
        return "-"
    when = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    if when.tzinfo is not None:
        when = when.astimezone(dt.UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S")


def format_seconds(seconds: float | None) -> str:
    """A duration in its largest sensible unit: ``42s``, ``5m03s``, ``2h10m``, ``3d04h``."""
    if seconds is None:
        return "-"
    whole = int(seconds)
    if whole < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def key_values(pairs: Sequence[tuple[str, str]]) -> str:
    """``key:  value`` lines, values aligned; multi-line values indented under their key."""
    label = max(len(key) for key, _ in pairs) + 2
    lines = []
    for key, value in pairs:
        first, *rest = value.split("\n") if value else [""]
        lines.append(f"{key + ':':<{label}}{first}".rstrip())
        lines.extend((" " * label + line).rstrip() for line in rest)
    return "\n".join(lines)
