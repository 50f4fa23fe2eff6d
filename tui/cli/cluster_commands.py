"""`morgue tasks` and `morgue zombies`: what the workers run now, and the tasks past their end."""

from __future__ import annotations

import signal as signals
import textwrap
from collections.abc import Sequence
from typing import Any

import click

from celery_morgue.core.wording import plural
from celery_morgue.core.zombies import (
    SOURCE_INSPECT,
    ActiveTask,
    ClusterSnapshot,
    active_tasks,
    revoke_tasks,
)
from celery_morgue.tui.cli.output import (
    Column,
    emit_json,
    format_seconds,
    render_table,
    terminal_width,
)
from celery_morgue.tui.cli.session import Failure, Session, confirm, pass_session

ZOMBIE_MARK = "ZOMBIE"
# After the limit source of a task from a worker without morgue_active (no core.install).
INSPECTED_MARK = "*"
NO_HARD_LIMIT = "none"


class SignalType(click.ParamType[str]):
    """A signal by name (``TERM``, ``SIGKILL``) or number; converted to ``SIGTERM`` form."""

    name = "SIGNAL"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value).strip().upper()
        try:
            if text.isdigit():
                return signals.Signals(int(text)).name
            name = text if text.startswith("SIG") else f"SIG{text}"
            return signals.Signals[name].name
        except (KeyError, ValueError):
            self.fail(f"{value!r} is not a signal (e.g. TERM, KILL, SIGINT, 9)", param, ctx)


def _snapshot_dict(
    snapshot: ClusterSnapshot, key: str, tasks: Sequence[ActiveTask]
) -> dict[str, Any]:
    return {
        "taken_at": snapshot.taken_at.isoformat(),
        "workers": list(snapshot.workers),
        "unreachable": list(snapshot.unreachable),
        key: [task.as_dict() for task in tasks],
    }


def _table(tasks: Sequence[ActiveTask]) -> str:
    columns = [
        Column("id", flexible=True, minimum=8),
        Column("task", flexible=True, minimum=10),
        Column("worker", flexible=True, minimum=8),
        Column("age", right=True),
        Column("limit", right=True),
        Column("from"),
        Column("state"),
    ]
    rows = [
        [
            task.id,
            task.name,
            task.worker,
            format_seconds(task.age),
            format_seconds(task.hard_limit) if task.limit_known else NO_HARD_LIMIT,
            task.hard_limit_source + (INSPECTED_MARK if task.source == SOURCE_INSPECT else ""),
            ZOMBIE_MARK if task.zombie else "",
        ]
        for task in tasks
    ]
    return render_table(columns, rows)


def _footer(snapshot: ClusterSnapshot, tasks: Sequence[ActiveTask], noun: str) -> str:
    text = f"{plural(len(tasks), noun)} on {plural(len(snapshot.workers), 'worker')}"
    if snapshot.unreachable:
        text += f"; no reply from {', '.join(snapshot.unreachable)}"
    if any(task.source == SOURCE_INSPECT for task in tasks):
        note = (
            f"{INSPECTED_MARK} asked with inspect: {', '.join(snapshot.inspected)} "
            "(no core.install there, so no morgue_active): a per-call limit is unseen and "
            "ages are on this host's clock"
        )
        text += "\n" + textwrap.fill(note, width=terminal_width(), break_on_hyphens=False)
    return text


def cluster_snapshot(
    session: Session, hard_limit: float | None, no_limit: bool, grace: float | None
) -> ClusterSnapshot:
    profile = session.profile()
    return active_tasks(
        session.connection().app,
        hard_limit=None if no_limit else profile.hard_limit if hard_limit is None else hard_limit,
        grace=profile.grace if grace is None else grace,
        timeout=profile.inspect_timeout,
        # Neither given: each installed worker's own options, as its reaper applies them.
        worker_defaults=hard_limit is None and not no_limit and grace is None,
    )


def _uninstalled_note(found: Sequence[ActiveTask]) -> str | None:
    """Which zombies run on workers without core.install; None when there are none."""
    ids = [task.id for task in found if task.source == SOURCE_INSPECT]
    if not ids:
        return None
    note = (
        f"{plural(len(ids), 'zombie')} on workers without core.install (asked with inspect: "
        "a per-call limit is unseen, and no reaper of theirs would end them): " + ", ".join(ids)
    )
    return textwrap.fill(note, width=terminal_width(), break_on_hyphens=False)


def _hard_limit(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[float | None, bool]:
    """``(seconds, False)``, ``(None, True)`` for ``none``, ``(None, False)`` when not given."""
    if value is None:
        return None, False
    if value.strip().lower() == NO_HARD_LIMIT:
        return None, True
    try:
        seconds = float(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a number of seconds or 'none'") from None
    if not 0 < seconds < float("inf"):
        raise click.BadParameter(f"{value!r} must be more than zero seconds (or 'none')")
    return seconds, False


hard_limit_option = click.option(
    "--hard-limit",
    metavar="SECONDS|none",
    callback=_hard_limit,
    help=(
        "Seconds a task may run when neither the call, the task nor the pool sets a limit "
        "(default: each worker's own hard_limit option, else the profile's; never below the "
        "task's soft limit); 'none': such tasks are never zombies."
    ),
)
grace_option = click.option(
    "--grace",
    type=click.FloatRange(min=0),
    help="Seconds past its limit before a task counts as a zombie (default: the profile's).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@click.command(short_help="Tasks running now; zombies marked.")
@hard_limit_option
@grace_option
@json_option
@pass_session
def tasks(
    session: Session, hard_limit: tuple[float | None, bool], grace: float | None, as_json: bool
) -> None:
    """Tasks the workers are running now, oldest first; zombies are marked.

    Each task's limit is the one its worker enforces, and says where it came from: the call
    (apply_async(time_limit=...)), the task, the pool, its soft limit (soft: no hard limit
    known, and the soft one is longer than the default), or the default (the worker's own
    hard_limit option, or --hard-limit).
    """
    snapshot = cluster_snapshot(session, *hard_limit, grace)
    if as_json:
        emit_json(_snapshot_dict(snapshot, "tasks", snapshot.tasks))
        return
    if snapshot.tasks:
        click.echo(_table(snapshot.tasks))
    click.echo(_footer(snapshot, snapshot.tasks, "active task"))


@click.command(short_help="Tasks past their hard limit; --revoke.")
@hard_limit_option
@grace_option
@click.option("--revoke", is_flag=True, help="Revoke the zombies, terminating their processes.")
@click.option(
    "--signal",
    "sig",
    type=SignalType(),
    default="SIGTERM",
    show_default=True,
    help="Signal for --revoke (KILL ends a task that ignores TERM).",
)
@click.option(
    "--yes", "-y", is_flag=True, help="Do not ask; required when stdin is not a terminal."
)
@json_option
@pass_session
def zombies(
    session: Session,
    hard_limit: tuple[float | None, bool],
    grace: float | None,
    revoke: bool,
    sig: str,
    yes: bool,
    as_json: bool,
) -> None:
    """Tasks running past their hard time limit plus grace; --revoke ends them."""
    if revoke:
        session.require_writable("revoke tasks")
    snapshot = cluster_snapshot(session, *hard_limit, grace)
    found = list(snapshot.zombies)
    data = _snapshot_dict(snapshot, "zombies", found)
    data["revoke"] = None
    if not revoke or not found:
        if as_json:
            emit_json(data)
            return
        if found:
            click.echo(_table(found))
        click.echo(_footer(snapshot, found, "zombie"))
        return
    note = _uninstalled_note(found)
    if not as_json:
        click.echo(_table(found))
        if note:
            click.echo(note)
    confirm(yes, f"Revoke {plural(len(found), 'zombie task')} with {sig}?")
    report = revoke_tasks(
        session.connection().app, found, signal=sig, timeout=session.profile().inspect_timeout
    )
    # Workers without core.install: revoked on request like the rest, but said so.
    without = [task.id for task in found if task.source == SOURCE_INSPECT]
    data["revoke"] = {**report.as_dict(), "without_install": without}
    if as_json:
        emit_json(data)
    else:
        click.echo(
            f"revoked with {sig}: {len(report.terminated)} terminated, "
            f"{len(report.already_gone)} already gone, {len(report.refused)} refused, "
            f"{len(report.no_reply)} without reply"
        )
    if report.refused or report.no_reply:
        raise Failure(
            f"{len(report.refused) + len(report.no_reply)} of {plural(len(found), 'zombie')} "
            "not confirmed ended (refused or no reply from their worker)"
        )
