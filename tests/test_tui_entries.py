"""Entries of every kind in the UI: unreadable ones, dropped ones (reasons), hidden arguments,
and what a requeue reports. Pilot against a real Redis; malformed entries are XADDed to it.
"""

from __future__ import annotations

import json
import uuid

import redis
from textual.pilot import Pilot

from celery_morgue.core import DeadLetterQueue
from celery_morgue.core.entry import Entry
from celery_morgue.tui.app import MorgueApp
from celery_morgue.tui.demo.processes import RedisServer
from celery_morgue.tui.dialogs import ConfirmScreen
from celery_morgue.tui.screens.dashboard import DashboardScreen
from celery_morgue.tui.screens.entry import EntryScreen
from tests.helpers import (
    make_entry,
    notice_ids,
    notices,
    notices_since,
    open_queue,
    profile_for,
    screen_text,
    select_entry,
    until,
    with_app,
    workers_done,
)

# A queue no test worker consumes: whatever a requeue sends stays in its broker list.
QUEUE = "entries-q"
RLO = "\u202e"
TOPIC = {"exchange": "shop.topic", "routing_key": "orders.charge", "priority": 0}


def xadd(client: redis.Redis, fields: dict[str, str | bytes]) -> str:
    """A raw stream entry in the queue, as something other than celery-morgue might write it."""
    entry_id = client.xadd(f"dlq:{QUEUE}", fields)  # type: ignore[arg-type]
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


def add(dlq: DeadLetterQueue, entry: Entry) -> str:
    entry_id = dlq.add(entry)
    assert entry_id is not None
    return entry_id


def mark_sent_earlier(client: redis.Redis, entry_id: str, task_id: str) -> None:
    """What a requeue that crashed after publishing leaves behind: the entry, marked as sent."""
    # A requeue that published, then stopped before removing the entry, ten minutes ago.
    redis_ms = int(client.time()[0]) * 1000
    marker = {
        "task_id": task_id,
        "token": uuid.uuid4().hex,
        "at_ms": redis_ms - 600_000,
        "phase": "published",
    }
    client.set(f"dlq@requeue:{QUEUE}:{entry_id}", json.dumps(marker))


def dropped(task_id: str, reason: str, exception: str, message: str) -> Entry:
    entry = make_entry(task_id, QUEUE, reason=reason, exception=None)
    entry.exception, entry.message = exception, message
    return entry


def cell(app: MorgueApp, entry_id: str, column: str) -> str:
    found = app.dashboard.pane(QUEUE)
    assert found is not None
    return str(found.table.get_cell(entry_id, column))


async def open_detail(pilot: Pilot[None], app: MorgueApp, entry_id: str) -> None:
    found = app.dashboard.pane(QUEUE)
    assert found is not None
    await select_entry(pilot, found, entry_id)
    await pilot.press("enter")
    await until(pilot, lambda: isinstance(app.screen, EntryScreen), what="detail opened")
    await pilot.pause()


def question(app: MorgueApp) -> str:
    """The open dialog's question (at 80 columns its lines wrap among other panes' text)."""
    screen = app.screen
    assert isinstance(screen, ConfirmScreen)
    return " ".join(screen.question.plain.split())


async def back(pilot: Pilot[None], app: MorgueApp) -> None:
    await pilot.press("escape")
    await until(pilot, lambda: isinstance(app.screen, DashboardScreen), what="dashboard")


# -- unreadable entries --------------------------------------------------------------------


def test_unreadable_entries_are_listed_shown_escaped_and_deleted(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    dlq = DeadLetterQueue(redis_client)
    good = add(dlq, make_entry("good-1", QUEUE))
    not_json = xadd(redis_client, {"entry": b"{not json"})
    wrong = xadd(
        redis_client,
        {"entry": json.dumps({"task_id": 5, "task": "t", "queue": QUEUE, "failed_at": "x"})},
    )
    foreign = xadd(redis_client, {"job": "[red]x[/red]", "note": "\x1b[31mred\x1b[0m"})
    huge = xadd(redis_client, {"entry": "[" + "x" * (2 * 1024 * 1024)})
    marked = xadd(redis_client, {"entry": f"[bold]not[/bold] json \x1b[2J {RLO}evil".encode()})
    unreadable = {
        not_json: "not JSON",
        wrong: "task_id is a int, not a string",
        foreign: "no 'entry' field (fields: job, note)",
        huge: "more than an entry can be",
        marked: "not JSON",
    }

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        found = await open_queue(pilot, app, QUEUE)
        await until(pilot, lambda: found.table.row_count == 6, what="every entry listed")
        board = app.dashboard
        assert not board.banner.has_class("-visible")
        assert board.status_line.status.connected is True
        for entry_id, problem in unreadable.items():
            assert cell(app, entry_id, "task") == "UNREADABLE"
            assert problem in cell(app, entry_id, "error") or cell(app, entry_id, "error").endswith(
                "…"
            ), (entry_id, cell(app, entry_id, "error"))
            entry = found.entry(entry_id)
            assert entry is not None and problem in getattr(entry, "problem", "")
        assert cell(app, good, "task") == "proj.tasks.example"
        text = screen_text(app)
        assert "UNREADABLE" in text and "Reading the DLQ failed" not in text

        # The detail shows what is stored, markup and control characters as typed.
        await open_detail(pilot, app, marked)
        detail = screen_text(app)
        assert f"Unreadable entry · {marked}" in detail
        assert "[bold]not[/bold] json \\x1b[2J \\u202eevil" in detail
        assert RLO not in detail and "\x1b" not in detail
        await pilot.press("e")
        await until(pilot, lambda: any("cannot be requeued" in n for n in notices(app)))
        assert isinstance(app.screen, EntryScreen), "e on an unreadable entry left the detail"
        await back(pilot, app)

        await open_detail(pilot, app, foreign)
        detail = screen_text(app)
        # Its fields, as JSON: the escape character reads \u001b.
        assert '"job": "[red]x[/red]"' in detail and "\\u001b[31mred\\u001b[0m" in detail
        await back(pilot, app)

        await open_detail(pilot, app, huge)
        assert "more than an entry can be" in screen_text(app)
        await back(pilot, app)

        # e in the table says why, and asks nothing.
        await select_entry(pilot, found, not_json)
        seen = notice_ids(app)
        await pilot.press("e")
        await until(pilot, lambda: notices_since(app, seen), what="a notice")
        assert "cannot be requeued" in notices_since(app, seen)[-1]
        await workers_done(pilot, app)
        assert isinstance(app.screen, DashboardScreen)

        # d deletes it, asking first.
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="delete dialog")
        assert f"Delete unreadable entry {not_json} from {QUEUE}?" in screen_text(app)
        await pilot.press("y")
        await until(pilot, lambda: not redis_client.xrange(f"dlq:{QUEUE}", not_json, not_json))
        await until(pilot, lambda: not_json not in found.entries, what="row gone")
        assert found.table.row_count == 5
        assert not board.banner.has_class("-visible")

    with_app(profile_for(redis_server.url), scenario, size=(100, 40))


def test_a_queue_of_only_unreadable_entries_shows_them(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    dlq = DeadLetterQueue(redis_client)
    only = add(dlq, make_entry("soon-gone", QUEUE))
    bad = [xadd(redis_client, {"entry": b"{not json"}) for _ in range(3)]
    dlq.delete(QUEUE, only)

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        found = await open_queue(pilot, app, QUEUE)
        await until(pilot, lambda: found.table.row_count == 3, what="the unreadable rows")
        assert found.order == bad[::-1]
        assert f"{QUEUE} · 3" in screen_text(app)
        assert not app.dashboard.banner.has_class("-visible")

    with_app(profile_for(redis_server.url), scenario)


# -- reasons -------------------------------------------------------------------------------


def test_reasons_show_on_the_rows_and_in_the_detail_at_80x24(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    dlq = DeadLetterQueue(redis_client)
    failed = add(dlq, make_entry("plain-1", QUEUE))
    terminated = add(
        dlq, dropped("killed-1", "terminated", "Terminated", "terminated by a revoke (signal 15)")
    )
    unknown = add(
        dlq,
        dropped("gone-1", "unregistered", "NotRegistered", "task 'proj.gone' is not registered"),
    )
    expired = add(dlq, dropped("late-1", "expired", "Expired", "expired before it ran"))

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        await open_queue(pilot, app, QUEUE)
        # The error column is narrow at 80 columns: the marker first, then what fits.
        assert cell(app, failed, "error").startswith("ValueError: fai")
        assert cell(app, terminated, "error").startswith("TERMINATED ter")
        assert cell(app, unknown, "error").startswith("UNREGISTERED t")
        assert cell(app, expired, "error").startswith("EXPIRED expired")
        text = screen_text(app)
        for marker in ("TERMINATED", "UNREGISTERED", "EXPIRED"):
            assert marker in text, marker

        await open_detail(pilot, app, terminated)
        detail = screen_text(app)
        assert "Reason" in detail and "terminated: revoked with terminate" in detail
        await back(pilot, app)

        # e and E say that an unregistered task goes out under the name nobody knew.
        found = app.dashboard.pane(QUEUE)
        assert found is not None
        await select_entry(pilot, found, unknown)
        await pilot.press("e")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="requeue dialog")
        dialog = question(app)
        assert "did not know this task name" in dialog
        assert "sent again under the same name" in dialog
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, DashboardScreen))
        await pilot.press("E")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="requeue-all")
        dialog = question(app)
        assert "1 entry of those loaded is an unregistered task" in dialog
        assert "same name, which the worker did not know" in dialog
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, DashboardScreen))
        await workers_done(pilot, app)
        assert dlq.size(QUEUE) == 4

    with_app(profile_for(redis_server.url), scenario)


# -- hidden arguments ----------------------------------------------------------------------


def test_hidden_arguments_show_the_callers_repr_until_v(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    dlq = DeadLetterQueue(redis_client)
    plain = add(dlq, make_entry("plain-1", QUEUE))
    secret = add(
        dlq,
        make_entry(
            "secret-1",
            QUEUE,
            args=["4111-1111-1111-1111"],
            kwargs={"pin": "9999"},
            argsrepr="('<card>',)",
            kwargsrepr="{'pin': '***'}",
        ),
    )

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        found = await open_queue(pilot, app, QUEUE)
        assert "4111" not in screen_text(app)
        # Nor does the filter find a row by what the caller hid.
        found.start_filter()
        await pilot.press(*"4111")
        await until(pilot, lambda: found.table.row_count == 0, what="nothing matches")
        await pilot.press("escape")
        await until(pilot, lambda: found.table.row_count == 2, what="filter cleared")

        await open_detail(pilot, app, secret)
        detail = screen_text(app)
        assert "Args, as the caller's argsrepr" in detail and "('<card>',)" in detail
        assert "Kwargs, as the caller's kwargsrepr" in detail and "{'pin': '***'}" in detail
        assert "4111" not in detail and "9999" not in detail
        assert "Reveal args" in detail  # the footer offers it
        await pilot.press("v")
        await until(pilot, lambda: "4111-1111-1111-1111" in screen_text(app), what="revealed")
        assert '"pin": "9999"' in screen_text(app)
        await pilot.press("v")
        await until(pilot, lambda: "4111" not in screen_text(app), what="hidden again")
        await back(pilot, app)

        # An entry that hid nothing shows its arguments, and v has nothing to do.
        await open_detail(pilot, app, plain)
        detail = screen_text(app)
        assert '"two"' in detail and "Reveal args" not in detail
        await pilot.press("v")
        await pilot.pause()
        assert "argsrepr" not in screen_text(app)

    with_app(profile_for(redis_server.url), scenario, size=(100, 50))


# -- what a requeue reports ----------------------------------------------------------------


def test_a_single_requeue_reports_already_sent_and_unroutable_and_keeps_the_entry(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    dlq = DeadLetterQueue(redis_client)
    sent = add(dlq, make_entry("sent-1", QUEUE))
    mark_sent_earlier(redis_client, sent, "earlier-task-id")
    topic = add(dlq, make_entry("topic-1", QUEUE, delivery_info=TOPIC))
    redis_client.delete(QUEUE)

    async def requeue(pilot: Pilot[None], app: MorgueApp, entry_id: str) -> str:
        found = app.dashboard.pane(QUEUE)
        assert found is not None
        await select_entry(pilot, found, entry_id)
        seen = notice_ids(app)
        await pilot.press("e")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="dialog")
        await pilot.press("y")
        await until(pilot, lambda: notices_since(app, seen), what="the outcome")
        return notices_since(app, seen)[-1]

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        await open_queue(pilot, app, QUEUE)
        text = await requeue(pilot, app, sent)
        assert text.startswith(f"Not requeued: entry {sent} was already sent again as task ")
        assert "earlier-task-id" in text and "check that task, then delete the entry" in text
        assert "\n" not in text
        text = await requeue(pilot, app, topic)
        assert text.startswith(f"Not requeued: entry {topic} came through exchange 'shop.topic'")
        assert text.endswith("The entry is kept.")
        assert dlq.size(QUEUE) == 2
        assert not redis_client.llen(QUEUE), "a task was published"

    with_app(profile_for(redis_server.url), scenario, size=(100, 30))


def test_requeue_all_reports_each_outcome_on_its_own_line(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    dlq = DeadLetterQueue(redis_client)
    good = add(dlq, make_entry("good-1", QUEUE))
    sent = add(dlq, make_entry("sent-1", QUEUE))
    mark_sent_earlier(redis_client, sent, "earlier-task-id")
    add(dlq, make_entry("topic-1", QUEUE, delivery_info=TOPIC))
    xadd(redis_client, {"entry": b"{not json"})
    redis_client.delete(QUEUE)

    def outcome(app: MorgueApp) -> list[str]:
        found = [n for n in notices(app) if n.startswith("Requeued ")]
        return found[0].split("\n") if found else []

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        await open_queue(pilot, app, QUEUE)
        await pilot.press("E")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="dialog")
        assert "unreadable ones, are skipped" in question(app)
        await pilot.press("y")
        await until(pilot, lambda: outcome(app), what="the requeue-all notification")
        lines = outcome(app)
        assert lines[0] == f"Requeued 1 entry from {QUEUE}.", lines
        assert len(lines) == 4, lines
        assert (
            lines[1]
            == "Skipped 1 unreadable entry: not a celery-morgue entry, never sent (delete with d)."
        )
        assert lines[2].startswith("Skipped 1: already sent again (as earlier-task-id)")
        assert lines[3].startswith("Skipped 1 unroutable: entry ")
        assert "'shop.topic'" in lines[3]
        severities = [n.severity for n in app._notifications if n.message.startswith("Requeued")]
        assert severities == ["warning"]
        await until(pilot, lambda: dlq.size(QUEUE) == 3, what="the rest kept")
        assert good not in {entry.id for entry in dlq.page(QUEUE).items}
        assert redis_client.llen(QUEUE) == 1, "the good entry was published once"

    try:
        with_app(profile_for(redis_server.url), scenario, size=(100, 30))
    finally:
        redis_client.delete(QUEUE)
