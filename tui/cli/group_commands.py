"""`morgue dlq groups` and `morgue dlq regroup`: what is failing, one row per bug."""

from __future__ import annotations

import click

from celery_morgue.core.groups import GroupReport
from celery_morgue.core.wording import plural
from celery_morgue.tui.cli.dlq_commands import json_option, require_queue
from celery_morgue.tui.cli.output import Column, emit_json, format_time, render_table
from celery_morgue.tui.cli.session import Session, pass_session

# Entries a regroup reads a call: a few milliseconds of Redis each.
REGROUP_CHUNK = 500


@click.command("groups", short_help="Failure groups of a queue, largest first.")
@click.argument("queue")
@json_option
@pass_session
def failure_groups(session: Session, queue: str, as_json: bool) -> None:
    """The failure groups of QUEUE, largest first: entries of one task that raised one
    exception type at one place (file and function), whatever their message."""
    dlq_ = session.connection().dlq
    require_queue(dlq_, queue)
    report = dlq_.groups(queue)
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
    if report.ungrouped:
        line += (
            f"; {plural(report.ungrouped, 'entry')} stored before groups existed, not grouped "
            f"yet: morgue dlq regroup {report.queue}"
        )
    return line


@click.command("regroup", short_help="Group entries stored before groups existed.")
@click.argument("queue")
@json_option
@pass_session
def regroup(session: Session, queue: str, as_json: bool) -> None:
    """Group the entries of QUEUE stored before failure groups existed (once is enough: new
    entries are grouped as they are stored). Reads the queue a chunk at a time, so Redis is
    never held for long."""
    dlq_ = session.connection().dlq
    require_queue(dlq_, queue)
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
