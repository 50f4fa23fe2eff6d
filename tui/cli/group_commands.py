"""`morgue dlq groups` and `morgue dlq regroup`: what is failing, one row per bug."""

from __future__ import annotations

import click

from celery_morgue.core.dlq import READ_CHUNK
from celery_morgue.core.groups import GroupReport
from celery_morgue.core.wording import plural
from celery_morgue.tui.cli.dlq_commands import json_option, require_queue
from celery_morgue.tui.cli.output import Column, emit_json, format_time, render_table
from celery_morgue.tui.cli.session import Session, pass_session

# Entries a regroup reads a call: a few milliseconds of Redis each.
REGROUP_CHUNK = READ_CHUNK
# Groups listed by default: a queue can have 100,000 (a message formatted into a frame's name).
DEFAULT_GROUP_LIMIT = 50


@click.command("groups", short_help="Failure groups of a queue, largest first.")
@click.argument("queue")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=DEFAULT_GROUP_LIMIT,
    show_default=True,
    help="List at most this many groups, the largest.",
)
@json_option
@pass_session
def failure_groups(session: Session, queue: str, limit: int, as_json: bool) -> None:
    """The failure groups of QUEUE, largest first: entries of one task that raised one
    exception type at one place (file and function), whatever their message. JSON's
    ``total_groups`` counts them all, listed or not."""
    dlq_ = session.connection().dlq
    require_queue(dlq_, queue)
    report = dlq_.groups(queue, limit=limit)
    if as_json:
        emit_json(report.as_dict())
        return
    columns = [
        Column("group"),
        Column("count", right=True),
        Column("last (UTC)"),
        Column("task", flexible=True, minimum=8),
        Column("exception", flexible=True, minimum=9),
        Column("sample", flexible=True, minimum=8),
    ]
    rows = [
        [
            summary.group,
            f"{summary.count:,}",
            format_time(summary.last),
            summary.task,
            summary.exception,
            summary.sample,
        ]
        for summary in report.groups
    ]
    click.echo(render_table(columns, rows))
    click.echo(_footer(report))


def _footer(report: GroupReport) -> str:
    counts = f"{plural(report.distinct, 'group')}, {plural(report.total, 'entry')}"
    line = f"{counts} in {report.queue!r}"
    if len(report.groups) < report.distinct:
        line += f"; the largest {len(report.groups):,} shown (--limit)"
    if report.ungrouped:
        line += (
            f"; {plural(report.ungrouped, 'entry')} stored before groups existed, not grouped "
            f"yet: morgue dlq regroup {report.queue}"
        )
    return line


@click.command("regroup", short_help="Group entries stored before groups existed.")
@click.argument("queue")
@click.option(
    "--rebuild",
    is_flag=True,
    help="Recount every group from the entries themselves (counts that drifted: entries "
    "removed by hand, old and new workers writing side by side).",
)
@json_option
@pass_session
def regroup(session: Session, queue: str, rebuild: bool, as_json: bool) -> None:
    """Group the entries of QUEUE stored before failure groups existed (once is enough: new
    entries are grouped as they are stored). Reads the queue a chunk at a time, so Redis is
    never held for long, and workers may go on writing meanwhile."""
    dlq_ = session.connection().dlq
    require_queue(dlq_, queue)
    if rebuild:
        report = dlq_.rebuild_groups(queue, REGROUP_CHUNK)
        if as_json:
            emit_json({"queue": queue, **report.as_dict()})
        else:
            indexed = plural(report.indexed, "entry")
            stale = plural(report.stale, "stale record")
            click.echo(
                f"recounted the groups of the {report.scanned:,} entries in {queue!r}: "
                f"{indexed} indexed, {stale} removed"
            )
        return
    scanned = grouped = 0
    cursor: str | None = None
    while True:
        step = dlq_.regroup(queue, cursor, REGROUP_CHUNK)
        scanned += step.scanned
        grouped += step.grouped
        if step.next is None:
            break
        cursor = step.next
    if as_json:
        emit_json({"queue": queue, "scanned": scanned, "grouped": grouped})
    else:
        click.echo(f"grouped {plural(grouped, 'entry')} of the {scanned:,} read in {queue!r}")
