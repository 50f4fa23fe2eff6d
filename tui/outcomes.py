"""What an action did, in the words of its notification: one readable line per outcome.

Everything quoted from an entry or an error goes through :func:`printable`; the notifications
are shown with ``markup=False``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from celery_morgue.core.dlq import RequeueReport, StoredEntry
from celery_morgue.core.entry import UnreadableEntry
from celery_morgue.core.errors import DLQError, EntryNotFound
from celery_morgue.core.redrive import RedriveProgress
from celery_morgue.core.wording import plural
from celery_morgue.core.zombies import RevokeReport
from celery_morgue.tui.cells import printable
from celery_morgue.tui.messages import ActionDone, Severity

# How many task ids a line lists before "and N more".
LISTED_IDS = 3


def entry_name(entry: StoredEntry) -> tuple[tuple[str, str], str]:
    """The task name in bold and its id, escaped: how a confirmation names an entry."""
    if isinstance(entry, UnreadableEntry):
        return ("unreadable entry", "bold"), f" {entry.id}"
    return (printable(entry.task), "bold"), f" ({printable(entry.task_id)})"


def first_line(text: str) -> str:
    return printable((text.strip().splitlines() or ["unknown error"])[0]).rstrip(".")


def listed(ids: Sequence[str]) -> str:
    shown = ", ".join(printable(i) for i in ids[:LISTED_IDS])
    more = len(ids) - LISTED_IDS
    return f"{shown} and {more:,} more" if more > 0 else shown


def requeue_refused(entry_id: str, error: DLQError, scrub: Callable[[str], str]) -> ActionDone:
    """A single requeue that core refused: nothing was sent and the entry stays."""
    if isinstance(error, EntryNotFound):
        return ActionDone(f"Entry {entry_id} was already gone.", refresh_dlq=True)
    # Core's messages say what happened and what to do: already sent (AlreadyRequeued, with the
    # task id it went out as), unroutable, unreadable, lossy, busy.
    return ActionDone(
        f"Not requeued: {first_line(scrub(str(error)))}. The entry is kept.",
        severity="warning",
        refresh_dlq=True,
    )


def requeue_all_lines(report: RequeueReport) -> list[str]:
    """What a requeue-all left in the queue, and why: a line per reason."""
    lines: list[str] = []
    if report.skipped_unreadable:
        unreadable = len(report.skipped_unreadable)
        what = "not a celery-morgue entry" if unreadable == 1 else "not celery-morgue entries"
        count = plural(unreadable, "unreadable entry", "unreadable entries")
        lines.append(f"Skipped {count}: {what}, never sent (delete with d).")
    if report.already_requeued:
        tasks = listed(list(report.already_requeued.values()))
        sent = len(report.already_requeued)
        lines.append(
            f"Skipped {sent:,}: already sent again (as {tasks}) by a requeue that stopped before "
            f"removing {'it' if sent == 1 else 'them'}; check, then delete."
        )
    if report.unroutable:
        why = first_line(next(iter(report.unroutable.values())))
        more = len(report.unroutable) - 1
        also = f" (and {more:,} more)" if more else ""
        lines.append(f"Skipped {len(report.unroutable):,} unroutable{also}: {why}.")
    if report.invalid:
        why = first_line(next(iter(report.invalid.values())))
        lines.append(f"Skipped {len(report.invalid):,} that cannot be sent: {why}.")
    if report.retried:
        earlier = listed(list(report.retried.values()))
        lines.append(
            f"Sent {len(report.retried):,} again after a requeue stopped before confirming it "
            f"sent {earlier}: if that ran, they run twice."
        )
    if report.skipped_lossy:
        lines.append(f"Skipped {len(report.skipped_lossy):,}: arguments changed when stored.")
    if report.skipped_busy:
        lines.append(f"Skipped {len(report.skipped_busy):,}: being requeued by someone else.")
    return lines


def requeue_all_done(queue: str, report: RequeueReport, scrub: Callable[[str], str]) -> ActionDone:
    """What a requeue-all did; an error when the broker stopped it part-way."""
    # A bulk requeue from the UI keeps no id map (report.sent counts); marked ones list them.
    requeued = plural(max(report.sent, len(report.requeued)), "entry", "entries")
    lines = requeue_all_lines(report)
    if report.error is not None:
        error = first_line(scrub(report.error))
        text = (
            f"Requeue all failed: {error}. Requeued {requeued} from {printable(queue)} before it "
            "stopped; the rest are still in the queue."
        )
        return ActionDone("\n".join([text, *lines]), severity="error", refresh_dlq=True)
    if report.stopped:
        text = (
            f"Requeue stopped: sent {requeued} from {printable(queue)}; "
            f"{report.remaining:,} still in the queue. Requeue again to send the rest."
        )
        return ActionDone("\n".join([text, *lines]), severity="warning", refresh_dlq=True)
    attention = (
        report.skipped_busy
        or report.already_requeued
        or report.unroutable
        or report.invalid
        or report.retried
    )
    severity: Severity = "warning" if attention or report.skipped_unreadable else "information"
    text = f"Requeued {requeued} from {printable(queue)}."
    return ActionDone("\n".join([text, *lines]), severity=severity, refresh_dlq=True)


def revoke_summary(report: RevokeReport, signal: str) -> str:
    parts: list[str] = []
    if report.terminated:
        parts.append(f"Revoked {plural(len(report.terminated), 'task')} with {signal}")
    if report.already_gone:
        parts.append(f"{plural(len(report.already_gone), 'task')} had already finished")
    if report.refused:
        reasons = "; ".join(sorted(set(report.refused.values())))
        parts.append(f"{len(report.refused)} refused ({reasons})")
    if report.no_reply:
        parts.append(f"{len(report.no_reply)} got no reply from the worker")
    return ("; ".join(parts) or "Nothing to revoke") + "."


def progress_line(progress: RedriveProgress) -> str:
    """``requeue 120/1,204 · 50/s · 22s left``, for the pane's subtitle."""
    line = f"requeue {progress.sent:,}/{progress.total:,}"
    if progress.rate > 0:
        line += f" · {progress.rate:,.0f}/s"
    if progress.eta is not None:
        line += f" · {progress.eta:,.0f}s left"
    return f"{line} · esc stops"
