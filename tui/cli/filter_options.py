"""The filter options every listing and bulk command takes, and the words a confirmation uses.

``@filter_options`` adds ``--task --exception --group --since --until --grep`` and passes the
command one ``flt: EntryFilter``. Input that cannot mean anything (``--since yesterday``,
``--group zz``) is a usage error: one line, exit 2.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

from celery_morgue.core.dlq import DeadLetterQueue
from celery_morgue.core.filters import EntryFilter, FilterError, parse_when
from celery_morgue.core.matching import group_kind
from celery_morgue.core.wording import plural

Result = TypeVar("Result")


def _when(ctx: click.Context, param: click.Parameter, value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        return parse_when(value)
    except FilterError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def _text(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise click.BadParameter("must not be empty", ctx, param)
    return value


_OPTIONS = [
    click.option("--task", metavar="NAME", callback=_text, help="Only entries of this task."),
    click.option(
        "--exception",
        metavar="TYPE",
        callback=_text,
        help="Only entries that raised this exception type (ValueError or a dotted name).",
    ),
    click.option(
        "--group", metavar="ID", callback=_text, help="Only entries of this failure group."
    ),
    click.option(
        "--since",
        metavar="TIME",
        callback=_when,
        help="Only entries stored at or after TIME (ISO 8601, or an age: 2h, 30m, 1d).",
    ),
    click.option(
        "--until",
        metavar="TIME",
        callback=_when,
        help="Only entries stored at or before TIME (ISO 8601, or an age: 2h, 30m, 1d).",
    ),
    click.option(
        "--grep",
        metavar="TEXT",
        callback=_text,
        help="Only entries whose message contains TEXT (ignoring case; scans the queue).",
    ),
]


def filter_options(command: Callable[..., Result]) -> Callable[..., Result]:
    """Add the filter options to a click command, which receives them as ``flt``."""

    @functools.wraps(command)
    def with_filter(
        *args: Any,
        task: str | None,
        exception: str | None,
        group: str | None,
        since: dt.datetime | None,
        until: dt.datetime | None,
        grep: str | None,
        **kwargs: Any,
    ) -> Result:
        try:
            flt = EntryFilter(task, exception, group, since, until, grep)
        except FilterError as exc:
            raise click.UsageError(str(exc)) from None
        return command(*args, flt=flt, **kwargs)

    decorated: Callable[..., Result] = with_filter
    for option in reversed(_OPTIONS):
        decorated = option(decorated)
    return decorated


def filter_phrase(dlq: DeadLetterQueue, queue: str, flt: EntryFilter) -> str:
    """The filter in words, a group named by what it is: ``group 3f9a0c1d2e4b (ValueError in
    parse_invoice)``."""
    text = flt.describe()
    if flt.group is None:
        return text
    task, exception = group_kind(dlq, queue, flt.group)
    if not task:
        return text
    named = f"group {flt.group} ({exception} in {task.rsplit('.', 1)[-1]})"
    return text.replace(f"group {flt.group}", named, 1)


def entries_phrase(count: int, phrase: str) -> str:
    """``1,204 entries of group …``, ``3 entries since …``, ``2 entries with exception …``."""
    counted = plural(count, "entry")
    if phrase.startswith(("group ", "task ")):
        return f"{counted} of {phrase}"
    if phrase.startswith(("exception ", "message ")):
        return f"{counted} with {phrase}"
    return f"{counted} {phrase}"
