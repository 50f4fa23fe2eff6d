"""`morgue queues` and `morgue dlq ...`: read and change the dead-letter queue."""

from __future__ import annotations

import json
import math
from typing import Any

import click

from celery_morgue.core.dlq import DeadLetterQueue, RequeueReport, StoredEntry, check_entry_id
from celery_morgue.core.entry import Entry, UnreadableEntry
from celery_morgue.core.errors import (
    DLQError,
    EntryNotFound,
)
from celery_morgue.core.eviction import eviction_policy
from celery_morgue.core.filters import EntryFilter
from celery_morgue.core.redrive import DEFAULT_BATCH, MAX_BATCH, Redrive
from celery_morgue.core.spool_state import spool_backlogs
from celery_morgue.core.wording import plural
from celery_morgue.tui.cli.filter_options import entries_phrase, filter_options, filter_phrase
from celery_morgue.tui.cli.output import (
    Column,
    emit_json,
    format_time,
    key_values,
    render_table,
)
from celery_morgue.tui.cli.redrive_progress import exit_status, progress_bar, stopping_on_signals
from celery_morgue.tui.cli.session import Failure, Session, confirm, pass_session
from celery_morgue.tui.connection import Connection
from celery_morgue.tui.literal import printable

MAX_LIMIT = 10_000
# Ids a --dry-run shows of what it would touch.
SAMPLE_SIZE = 5

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
raw_option = click.option(
    "--raw",
    is_flag=True,
    help="Show arguments the caller hid behind argsrepr/kwargsrepr (they may be secrets).",
)
dry_run_option = click.option(
    "--dry-run",
    is_flag=True,
    help=(
        "Touch no entry: say what would be touched, and how many (like any read, it applies "
        "retention and groups entries stored before groups existed)."
    ),
)
yes_option = click.option(
    "--yes", "-y", is_flag=True, help="Do not ask; required when stdin is not a terminal."
)


class EntryIdType(click.ParamType[str]):
    name = "ID"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        try:
            return check_entry_id(text)
        except DLQError as exc:
            self.fail(str(exc), param, ctx)


ENTRY_ID = EntryIdType()


def require_queue(dlq: DeadLetterQueue, queue: str) -> int:
    """The queue's size; a queue with no entries is unknown (the DLQ drops emptied queues)."""
    size = dlq.size(queue)
    if size:
        return size
    names = [info.queue for info in dlq.queues()]
    known = f"queues: {', '.join(names)}" if names else "the DLQ is empty"
    raise Failure(f"no queue {queue!r} in the DLQ ({known})")


@click.command(short_help="DLQ queues with counts and ages.")
@json_option
@pass_session
def queues(session: Session, as_json: bool) -> None:
    """The DLQ's queues with their entry counts, oldest and newest failure; then each host
    whose spool holds entries that have not reached Redis yet."""
    store = session.connection().dlq
    infos = store.queues()
    # stderr, so the JSON on stdout keeps its shape.
    evicting = eviction_policy(store.client).warning()
    if evicting is not None:
        click.echo(evicting.removeprefix("celery-morgue: "), err=True)
    if as_json:
        emit_json([info.as_dict() for info in infos])
        return
    if not infos:
        click.echo("the DLQ is empty")
    else:
        columns = [
            Column("queue", flexible=True),
            Column("total", right=True),
            Column("oldest (UTC)"),
            Column("newest (UTC)"),
        ]
        rows = [
            [info.queue, str(info.total), format_time(info.oldest), format_time(info.newest)]
            for info in infos
        ]
        click.echo(render_table(columns, rows))
    for backlog in spool_backlogs(store.client, store.prefix):
        click.echo(printable(f"spool on {backlog.describe()}"))


@click.group(short_help="List, show, delete, clear, requeue entries.")
def dlq() -> None:
    """List, show, delete, clear and requeue dead-lettered tasks."""


@dlq.command("list")
@click.argument("queue")
@filter_options
@click.option(
    "--limit",
    type=click.IntRange(1, MAX_LIMIT),
    default=50,
    show_default=True,
    help="Entries per page.",
)
@click.option("--cursor", type=ENTRY_ID, help="Continue after this entry (the 'next' value).")
@raw_option
@json_option
@pass_session
def list_entries(
    session: Session,
    queue: str,
    flt: EntryFilter,
    limit: int,
    cursor: str | None,
    raw: bool,
    as_json: bool,
) -> None:
    """Entries of QUEUE, newest first, a page at a time; with filters, the matching ones
    (``total`` is then the matching count). Under --grep a page may hold fewer than --limit
    entries and still have a next page: it stops after a bounded scan."""
    dlq_ = session.connection().dlq
    require_queue(dlq_, queue)
    if flt.is_empty:
        page = dlq_.page(queue, cursor=cursor, limit=limit)
    else:
        page = dlq_.matching_page(queue, flt, cursor=cursor, limit=limit)
    if as_json:
        data = page.as_dict(raw=raw)
        if not flt.is_empty:
            data["filter"] = flt.as_dict()
        emit_json(data)
        return
    columns = [
        Column("id", flexible=True, minimum=15),
        Column("failed (UTC)"),
        Column("reason"),
        Column("task", flexible=True, minimum=10),
        Column("exception", flexible=True, minimum=9),
        Column("message", flexible=True, minimum=10),
    ]
    rows = [_list_row(entry) for entry in page.items]
    click.echo(render_table(columns, rows))
    if flt.is_empty:
        summary = f"{len(page.items)} of {page.total} in {queue!r}"
    else:
        matching = entries_phrase(page.total, filter_phrase(dlq_, queue, flt))
        summary = printable(f"{len(page.items)} of {matching} in {queue!r}")
    if page.next:
        summary += f"; next page: --cursor {page.next}"
    click.echo(summary)


def _list_row(entry: StoredEntry) -> list[str]:
    if isinstance(entry, UnreadableEntry):
        return [entry.id, "-", "unreadable", "-", "-", entry.problem]
    failed = format_time(entry.failed_at)
    return [entry.id, failed, entry.reason, entry.task, entry.exception, entry.message]


def _arguments_text(entry: Entry, raw: bool) -> tuple[str, str]:
    if entry.arguments_hidden and not raw:
        return (entry.argsrepr or "", entry.kwargsrepr or "")
    return (
        json.dumps(entry.args, ensure_ascii=False),
        json.dumps(entry.kwargs, ensure_ascii=False),
    )


def _lossy_text(entry: Entry) -> str:
    if not entry.lossy:
        return "no"
    changed = ", ".join(entry.lossy_fields + entry.truncated_fields)
    if entry.requeue_exact:
        return f"shown changed ({changed}); requeue sends the originals"
    return f"yes ({changed}); requeue needs --lossy"


@dlq.command()
@click.argument("queue")
@click.argument("entry_id", metavar="ID", type=ENTRY_ID)
@raw_option
@json_option
@pass_session
def show(session: Session, queue: str, entry_id: str, raw: bool, as_json: bool) -> None:
    """Everything stored about one entry, traceback included."""
    dlq_ = session.connection().dlq
    require_queue(dlq_, queue)
    entry = dlq_.get(queue, entry_id)
    if isinstance(entry, UnreadableEntry):
        if as_json:
            emit_json(entry.as_dict(raw=True))
            return
        click.echo(key_values([("id", entry.id), ("unreadable", printable(entry.problem))]))
        click.echo("stored as:")
        for line in printable(entry.raw, keep_newlines=True).rstrip("\n").split("\n"):
            click.echo(f"  {line}".rstrip())
        click.echo(f"(it can be deleted: morgue dlq delete {queue} {entry.id})")
        return
    if as_json:
        emit_json(entry.as_dict(raw=raw))
        return
    args, kwargs = _arguments_text(entry, raw)
    hidden = " (the caller's repr; --raw shows the values)" if entry.arguments_hidden else ""
    if raw:
        hidden = ""
    pairs = [
        ("id", entry.id),
        ("reason", entry.reason),
        ("group", entry.group),
        ("task", entry.task),
        ("task_id", entry.task_id),
        ("queue", entry.queue),
        ("failed_at", entry.failed_at),
        ("hostname", entry.hostname),
        ("retries", str(entry.retries)),
        ("exception", entry.exception),
        ("message", entry.message),
        ("args", args + hidden),
        ("kwargs", kwargs),
        ("lossy", _lossy_text(entry)),
    ]
    if entry.exchange or entry.routing_key:
        pairs.append(("routing", f"exchange={entry.exchange!r} routing_key={entry.routing_key!r}"))
    if entry.root_id or entry.parent_id:
        pairs.append(("root/parent", f"{entry.root_id or '-'} / {entry.parent_id or '-'}"))
    click.echo(key_values([(key, printable(value, keep_newlines=True)) for key, value in pairs]))
    click.echo("traceback:")
    for line in printable(entry.traceback, keep_newlines=True).rstrip("\n").split("\n"):
        click.echo(f"  {line}".rstrip())


@dlq.command()
@click.argument("queue")
@click.argument("entry_ids", metavar="[ID]...", nargs=-1, type=ENTRY_ID)
@click.option(
    "--all", "every", is_flag=True, help="Delete every entry present now that matches the filter."
)
@filter_options
@dry_run_option
@yes_option
@json_option
@pass_session
def delete(
    session: Session,
    queue: str,
    entry_ids: tuple[str, ...],
    every: bool,
    flt: EntryFilter,
    dry_run: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Delete entries by id, or with --all every entry present now that matches the filter
    options (entries that arrive meanwhile are kept)."""
    if bool(entry_ids) == every:
        raise click.UsageError("give entry ids or --all (not both)")
    if entry_ids and not flt.is_empty:
        raise click.UsageError("the filter options go with --all, not with entry ids")
    if not dry_run:
        session.require_writable("delete entries")
    dlq_ = session.connection().dlq
    require_queue(dlq_, queue)
    if every:
        _remove_matching(dlq_, queue, flt, "deleted", dry_run=dry_run, yes=yes, as_json=as_json)
        return
    unique = list(dict.fromkeys(entry_ids))
    if dry_run:
        present = [entry_id for entry_id in unique if _exists(dlq_, queue, entry_id)]
        _report_dry_run(dlq_, queue, EntryFilter(), present, len(present), None, as_json)
        return
    confirm(yes, f"Delete {plural(len(unique), 'entry')} from queue {queue!r}?")
    deleted: list[str] = []
    missing: list[str] = []
    for entry_id in unique:
        (deleted if dlq_.delete(queue, entry_id) else missing).append(entry_id)
    if as_json:
        emit_json({"queue": queue, "deleted": deleted, "not_found": missing})
    else:
        click.echo(f"deleted {plural(len(deleted), 'entry')} from {queue!r}")
    if missing:
        raise Failure(f"not found in {queue!r}: {', '.join(missing)}")


def _exists(dlq_: DeadLetterQueue, queue: str, entry_id: str) -> bool:
    try:
        dlq_.get(queue, entry_id)
    except EntryNotFound:
        return False
    return True


def _remove_matching(
    dlq_: DeadLetterQueue,
    queue: str,
    flt: EntryFilter,
    done: str,
    *,
    dry_run: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """`delete --all` and a filtered `clear`: the matching entries up to the newest now;
    ``done`` names what happened to them ("deleted", "cleared"), in JSON and in words."""
    up_to = dlq_.newest_id(queue)
    if up_to is None:
        raise Failure(f"queue {queue!r} is already empty")
    count = dlq_.count_matching(queue, flt, up_to=up_to)
    if dry_run:
        sample = dlq_.matching_page(queue, flt, limit=SAMPLE_SIZE, up_to=up_to).items
        ids = [item.id for item in sample]
        _report_dry_run(dlq_, queue, flt, ids, count, up_to, as_json)
        return
    what = _what(dlq_, queue, flt, count)
    if count:
        confirm(yes, f"Delete {what} from {queue!r}?")
        count = dlq_.clear(queue, up_to=up_to, flt=flt)
    if as_json:
        emit_json({"queue": queue, "filter": flt.as_dict(), "up_to": up_to, done: count})
    elif count:
        click.echo(printable(f"{done} {_what(dlq_, queue, flt, count)} from {queue!r}"))
    else:
        none = "no " + _what(dlq_, queue, flt, 0).split(" ", 1)[1]  # "no entries of group …"
        click.echo(printable(f"nothing to delete in {queue!r}: {none}"))


def _what(dlq_: DeadLetterQueue, queue: str, flt: EntryFilter, count: int) -> str:
    if flt.is_empty:
        return plural(count, "entry")
    return entries_phrase(count, filter_phrase(dlq_, queue, flt))


def _report_dry_run(
    dlq_: DeadLetterQueue,
    queue: str,
    flt: EntryFilter,
    ids: list[str],
    count: int,
    up_to: str | None,
    as_json: bool,
    verb: str = "delete",
) -> None:
    """What a bulk action would touch, and how many; nothing is changed."""
    sample = ids[:SAMPLE_SIZE]
    if as_json:
        emit_json(
            {
                "queue": queue,
                "dry_run": True,
                "filter": flt.as_dict(),
                "count": count,
                "up_to": up_to,
                "sample_ids": sample,
            }
        )
        return
    line = f"would {verb} {_what(dlq_, queue, flt, count)} from {queue!r}"
    if up_to is not None:
        line += f" (up to {up_to}; newer ones are kept)"
    if sample:
        line += f", e.g. {', '.join(sample)}{', …' if count > len(sample) else ''}"
    click.echo(printable(line))


@dlq.command(short_help="Delete every entry present now (that matches the filter).")
@click.argument("queue")
@filter_options
@dry_run_option
@yes_option
@json_option
@pass_session
def clear(
    session: Session, queue: str, flt: EntryFilter, dry_run: bool, yes: bool, as_json: bool
) -> None:
    """Delete every entry present now, or with filter options every matching entry present
    now; entries that arrive meanwhile are kept."""
    if not dry_run:
        session.require_writable("clear a queue")
    dlq_ = session.connection().dlq
    count = require_queue(dlq_, queue)
    if dry_run or not flt.is_empty:
        _remove_matching(dlq_, queue, flt, "cleared", dry_run=dry_run, yes=yes, as_json=as_json)
        return
    newest = dlq_.newest_id(queue)
    if newest is None:  # emptied between the two calls
        raise Failure(f"queue {queue!r} is already empty")
    confirm(
        yes,
        f"Clear queue {queue!r}: delete its {plural(count, 'entry')} "
        f"(up to {newest}; newer ones are kept)?",
    )
    removed = dlq_.clear(queue, up_to=newest)
    if as_json:
        emit_json({"queue": queue, "cleared": removed, "up_to": newest})
    else:
        click.echo(f"cleared {plural(removed, 'entry')} from {queue!r}")


def _finite_rate(_ctx: click.Context, param: click.Parameter, rate: float | None) -> float | None:
    """FloatRange lets nan and inf through (nan compares false with every bound)."""
    if rate is not None and not (rate > 0 and math.isfinite(rate)):
        raise click.BadParameter(f"{rate} is not a positive number of messages a second")
    return rate


@dlq.command(short_help="Send entries' tasks again.")
@click.argument("queue")
@click.argument("entry_ids", metavar="[ID]...", nargs=-1, type=ENTRY_ID)
@click.option(
    "--all", "every", is_flag=True, help="Requeue every entry present now (that matches)."
)
@filter_options
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    callback=_finite_rate,
    metavar="N",
    help="With --all: at most N messages a second, spread evenly (default: as fast as it goes).",
)
@click.option(
    "--batch",
    type=click.IntRange(1, MAX_BATCH),
    metavar="N",
    default=DEFAULT_BATCH,
    show_default=True,
    help="With --all: entries read from the DLQ at a time.",
)
@click.option("--lossy", is_flag=True, help="Also requeue entries stored with changed arguments.")
@dry_run_option
@yes_option
@json_option
@pass_session
def requeue(
    session: Session,
    queue: str,
    entry_ids: tuple[str, ...],
    every: bool,
    flt: EntryFilter,
    rate: float | None,
    batch: int,
    lossy: bool,
    dry_run: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Send entries' tasks again (under new task ids); each entry goes once it was sent.

    With --all, oldest first, the entries present when it starts (that match the filter
    options), paced by --rate. Ctrl+C or SIGTERM stops it after the message in flight: what was
    sent left the DLQ, the rest stays, and the same command continues (exit 130 or 143).
    """
    if bool(entry_ids) == every:
        raise click.UsageError("give entry ids or --all (not both)")
    if entry_ids and (not flt.is_empty or rate is not None or batch != DEFAULT_BATCH):
        raise click.UsageError("the filter options, --rate and --batch go with --all")
    if not dry_run:
        session.require_writable("requeue entries")
    connection = session.connection()
    dlq_ = connection.dlq
    require_queue(dlq_, queue)
    if every:
        # The ids sent are only read in the JSON; without it, memory stays flat at any size.
        run = Redrive(
            dlq_,
            connection.app,
            queue,
            flt,
            rate=rate,
            batch=batch,
            allow_lossy=lossy,
            keep_ids=as_json,
        )
        _requeue_all(connection, dlq_, run, dry_run=dry_run, yes=yes, as_json=as_json)
        return
    unique = list(dict.fromkeys(entry_ids))
    if dry_run:
        present = [entry_id for entry_id in unique if _exists(dlq_, queue, entry_id)]
        _report_dry_run(
            dlq_, queue, EntryFilter(), present, len(present), None, as_json, verb="requeue"
        )
        return
    note = _unregistered_note(dlq_, queue, unique)
    confirm(yes, f"Requeue {plural(len(unique), 'entry')} from queue {queue!r}?{note}")
    report = RequeueReport()
    missing: list[str] = []
    for entry_id in unique:
        if not dlq_.requeue_noting(connection.app, queue, entry_id, report, allow_lossy=lossy):
            missing.append(entry_id)
    _report_requeue(connection, queue, report, missing, as_json=as_json)


def _requeue_all(
    connection: Connection,
    dlq_: DeadLetterQueue,
    run: Redrive,
    *,
    dry_run: bool,
    yes: bool,
    as_json: bool,
) -> None:
    queue, flt = run.queue, run.flt
    count = run.plan()
    if dry_run:
        sample = dlq_.matching_page(queue, flt, limit=SAMPLE_SIZE, up_to=run.up_to).items
        ids = [item.id for item in sample]
        _report_dry_run(dlq_, queue, flt, ids, count, run.up_to, as_json, verb="requeue")
        return
    what = f"all {plural(count, 'entry')}" if flt.is_empty else _what(dlq_, queue, flt, count)
    pace = f" at {run.rate:g} a second" if run.rate else ""
    note = _unregistered_note(dlq_, queue, [])
    confirm(yes, printable(f"Requeue {what} from queue {queue!r}{pace}?{note}"))
    bar = progress_bar(as_json)
    run.on_progress = bar
    with stopping_on_signals(run.stop) as signals:
        try:
            report = run.run()
        finally:
            if bar is not None:
                bar.close()
    extra = {
        "filter": flt.as_dict(),
        "up_to": run.up_to,
        "sent": report.sent,
        "remaining": report.remaining,
        "stopped": report.stopped,
    }
    if signals.received is None:
        _report_requeue(connection, queue, report, [], as_json=as_json, extra=extra)
        return
    if as_json:
        emit_json(_requeue_json(connection, queue, report, [], extra))
    else:
        click.echo(
            f"stopped: sent {report.sent:,}, {report.remaining:,} remain in {queue!r}; "
            "run the same command to continue",
            err=True,
        )
    raise click.exceptions.Exit(exit_status(signals.received))


def _requeue_json(
    connection: Connection,
    queue: str,
    report: RequeueReport,
    missing: list[str],
    extra: dict[str, Any],
) -> dict[str, Any]:
    error = report.error
    return {
        "queue": queue,
        **report.as_dict(),
        "unroutable": {k: connection.scrub(v) for k, v in report.unroutable.items()},
        "not_found": missing,
        "error": connection.scrub(error) if error else None,
        **extra,
    }


def _report_requeue(
    connection: Connection,
    queue: str,
    report: RequeueReport,
    missing: list[str],
    *,
    as_json: bool,
    extra: dict[str, Any] | None = None,
) -> None:
    skipped, busy = report.skipped_lossy, report.skipped_busy
    error = report.error
    if as_json:
        emit_json(_requeue_json(connection, queue, report, missing, extra or {}))
    else:
        click.echo(f"requeued {plural(report.sent, 'entry')} from {queue!r}")
    problems = _requeue_problems(report)
    if skipped:
        problems.append(
            f"{plural(len(skipped), 'lossy entry')} left in the queue "
            f"({', '.join(skipped[:5])}{', …' if len(skipped) > 5 else ''}): "
            "stored with changed arguments; pass --lossy to requeue them anyway"
        )
    if missing:
        problems.append(f"not found in {queue!r}: {', '.join(missing)}")
    if busy:
        problems.append(f"being requeued by someone else right now: {', '.join(busy[:5])}")
    if error:
        problems.insert(
            0, f"requeue stopped part-way, the rest stays in {queue!r}: {connection.scrub(error)}"
        )
    if problems:
        raise Failure("; ".join(problems))


def _requeue_problems(report: RequeueReport) -> list[str]:
    """The parts of a requeue that did not happen, beyond lossy, missing and busy entries."""
    problems = []
    if report.skipped_unreadable:
        problems.append(
            f"{plural(len(report.skipped_unreadable), 'unreadable entry')} left in the queue "
            f"({_some(report.skipped_unreadable)}): not celery-morgue entries; "
            "`morgue dlq show` them, then delete them"
        )
    if report.already_requeued:
        pairs = [f"{k} as {v}" for k, v in report.already_requeued.items()]
        problems.append(
            f"already sent again by a requeue that stopped before removing them "
            f"({_some(pairs)}): check those tasks, then delete the entries"
        )
    if report.unroutable:
        first = next(iter(report.unroutable.values()))
        problems.append(f"{plural(len(report.unroutable), 'entry')} kept, unroutable: {first}")
    if report.invalid:
        first = next(iter(report.invalid.values()))
        problems.append(f"{plural(len(report.invalid), 'entry')} kept, not sendable: {first}")
    if report.retried:
        pairs = [f"{k} (earlier {v})" for k, v in report.retried.items()]
        problems.append(
            "sent again after an earlier requeue stopped before confirming its own send "
            f"({_some(pairs)}): if that earlier task ran, these run twice"
        )
    return problems


def _some(items: list[str]) -> str:
    return ", ".join(items[:5]) + (", …" if len(items) > 5 else "")


def _unregistered_note(dlq_: DeadLetterQueue, queue: str, entry_ids: list[str]) -> str:
    """Say, before a requeue, that unregistered task names are sent under the same name."""
    names: list[str] = []
    if entry_ids:
        for entry_id in entry_ids[:1000]:
            try:
                entry = dlq_.get(queue, entry_id)
            except EntryNotFound:
                continue
            if isinstance(entry, Entry) and entry.reason == "unregistered":
                names.append(entry.task)
    else:
        names = [
            entry.task
            for entry in dlq_.page(queue, limit=1000).items
            if isinstance(entry, Entry) and entry.reason == "unregistered"
        ]
    if not names:
        return ""
    distinct = sorted(set(names))
    return (
        f" ({plural(len(names), 'entry')} for task names the worker did not know, sent again "
        f"under the same name: {', '.join(distinct[:3])}{', …' if len(distinct) > 3 else ''})"
    )
