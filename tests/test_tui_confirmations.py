"""Destructive keys ask first, and task text is shown escaped: Pilot against real Redis/workers.

Each test fails on the old behaviour: ``d``/``e`` acting at once, ``k`` killing from the revoke
dialog, a failed requeue-all reported as a success, a bidi override shown raw.
"""

from __future__ import annotations

import asyncio
import socket

import pytest
import redis
from rich.text import Text
from textual.containers import VerticalScroll
from textual.pilot import Pilot
from textual.screen import Screen

from celery_morgue.core import DeadLetterQueue
from celery_morgue.core.dlq import RequeueReport
from celery_morgue.tui.app import MorgueApp
from celery_morgue.tui.demo.processes import RedisServer
from celery_morgue.tui.dialogs import ConfirmScreen, RevokeConfirmScreen
from celery_morgue.tui.outcomes import requeue_all_done
from celery_morgue.tui.screens.dashboard import DashboardScreen
from celery_morgue.tui.screens.entry import EntryScreen
from celery_morgue.tui.screens.help import HelpScreen
from tests.helpers import (
    ENTRIES,
    Worker,
    add_entries,
    dead_letters,
    feed_dashboard,
    make_app,
    make_entry,
    notices,
    open_queue,
    profile_for,
    screen_text,
    select_entry,
    shop_entry,
    until,
    wait_redis,
    with_app,
    with_fed_app,
    workers_done,
)

# A queue no test worker consumes: if a requeue slipped through, nothing would run it.
QUEUE = "confirm-q"
RLO = "\u202e"  # RIGHT-TO-LEFT OVERRIDE: reverses what follows it on the line


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_delete_asks_then_no_keeps_and_yes_deletes(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    dlq = DeadLetterQueue(redis_client)
    ids = add_entries(dlq, QUEUE, 3)

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        found = await open_queue(pilot, app, QUEUE)
        await select_entry(pilot, found, ids[1])
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="delete dialog")
        assert app.focused is not None and app.focused.id == "cancel"
        dialog = screen_text(app)
        assert f"Delete proj.tasks.example (t-{QUEUE}-1) from {QUEUE}?" in dialog
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, DashboardScreen))
        await workers_done(pilot, app)  # a wrongly started delete has reached Redis
        assert dlq.size(QUEUE) == 3

        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="delete dialog")
        await pilot.press("y")
        await until(pilot, lambda: dlq.size(QUEUE) == 2, what="entry deleted")
        assert {entry.id for entry in dlq.page(QUEUE).items} == {ids[0], ids[2]}

    with_app(profile_for(redis_server.url), scenario)


def test_requeue_asks_and_escape_keeps_the_entry(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    dlq = DeadLetterQueue(redis_client)
    ids = add_entries(dlq, QUEUE, 2)

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        found = await open_queue(pilot, app, QUEUE)
        await select_entry(pilot, found, ids[0])
        # From the table...
        await pilot.press("e")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="requeue dialog")
        assert app.focused is not None and app.focused.id == "cancel"
        assert f"Requeue proj.tasks.example (t-{QUEUE}-0)" in screen_text(app)
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, DashboardScreen))
        # ...and from the entry detail.
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, EntryScreen), what="detail opened")
        await pilot.press("e")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="requeue dialog")
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, DashboardScreen))
        await workers_done(pilot, app)  # a wrongly started requeue has reached Redis
        assert dlq.size(QUEUE) == 2
        assert not redis_client.llen(QUEUE), "a task was published"

    with_app(profile_for(redis_server.url), scenario)


def test_k_in_the_revoke_dialog_kills_nothing_and_shift_k_kills(
    worker: Worker, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    task_id = worker.send("sleep", 30)

    def active_ids() -> set[str]:
        replies = worker.control_app.control.inspect(destination=[worker.name], timeout=1).active()
        return {task["id"] for tasks in (replies or {}).values() for task in tasks}

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        tasks = app.dashboard.tasks_pane
        await until(
            pilot,
            lambda: task_id in {r.key.value for r in tasks.table.ordered_rows},
            what="the task listed",
        )
        tasks.table.focus()
        tasks.table.move_cursor(row=tasks.table.get_row_index(task_id))
        await pilot.pause()
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, RevokeConfirmScreen), what="dialog")
        await pilot.press("k")
        await workers_done(pilot, app)  # a wrongly sent revoke has reached the worker
        assert isinstance(app.screen, RevokeConfirmScreen), "k closed the dialog"
        assert not any("SIGKILL" in n for n in notices(app))
        assert task_id in active_ids()
        assert "Kill SIGKILL (K)" in screen_text(app)

        await pilot.press("K")
        await until(pilot, lambda: any("with SIGKILL" in n for n in notices(app)), what="killed")
        gone = await wait_redis(pilot, lambda: task_id not in active_ids())
        assert gone

    try:
        with_app(profile_for(redis_server.url), scenario)
    finally:
        # Leave the shared worker idle for the next test, whatever happened.
        worker.control_app.control.revoke(task_id, terminate=True)


def test_requeue_all_with_the_broker_down_reports_an_error_and_keeps_entries(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    dlq = DeadLetterQueue(redis_client)
    add_entries(dlq, QUEUE, 3)
    # The DLQ Redis is up; the broker the requeue publishes to is not.
    profile = profile_for(
        redis_server.url, broker_url=f"redis://127.0.0.1:{closed_port()}/0", timeout=1.0
    )

    def errors(app: MorgueApp) -> list[str]:
        return [n.message for n in app._notifications if n.severity == "error"]

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        await open_queue(pilot, app, QUEUE)
        await pilot.press("E")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="dialog")
        await pilot.press("y")
        await until(pilot, lambda: errors(app), timeout=30, what="an error notification")
        message = errors(app)[0]
        assert message.startswith("Requeue all failed: "), message
        assert "Requeued 0 entries" in message and "still in the queue" in message
        assert not any(n.startswith("Requeued ") for n in notices(app))
        assert dlq.size(QUEUE) == 3

    with_app(profile, scenario)


def test_requeue_all_summary_mentions_busy_entries() -> None:
    report = RequeueReport(requeued={"1-0": "new"}, skipped_busy=["2-0"], skipped_lossy=["3-0"])
    done = requeue_all_done(QUEUE, report, lambda text: text)
    assert done.text.startswith(f"Requeued 1 entry from {QUEUE}.")
    assert "Skipped 1: being requeued by someone else." in done.text
    assert "Skipped 1: arguments changed when stored." in done.text
    assert done.severity == "warning"

    failed = RequeueReport(error="OperationalError: secret-pw refused\nmore")
    done = requeue_all_done(QUEUE, failed, lambda text: text.replace("secret-pw", "***"))
    assert done.severity == "error"
    assert "OperationalError: *** refused." in done.text and "more" not in done.text


def test_bidi_override_from_a_task_is_shown_escaped(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    dlq = DeadLetterQueue(redis_client)
    entry_id = dlq.add(
        make_entry(
            "bidi-1",
            QUEUE,
            task=f"proj.{RLO}evil",
            exception=ValueError(f"paid {RLO}0001 EUR"),
            args=[f"a{RLO}b"],
            traceback=f"Traceback (most recent call last):\nValueError: paid {RLO}0001 EUR",
        )
    )

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        found = await open_queue(pilot, app, QUEUE)
        assert str(found.table.get_cell(entry_id, "task")).endswith("proj.\\u202eevil")
        assert "paid \\u202e0001 EUR" in str(found.table.get_cell(entry_id, "error"))
        await select_entry(pilot, found, entry_id)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, EntryScreen), what="detail opened")
        await pilot.pause()
        detail = screen_text(app)
        assert RLO not in detail
        assert "paid \\u202e0001 EUR" in detail  # the message, and the traceback's last line
        assert detail.count("paid \\u202e0001 EUR") >= 2
        assert '"a\\u202eb"' in detail
        assert "proj.\\u202eevil" in detail

    with_app(profile_for(redis_server.url), scenario, size=(100, 50))


def test_held_j_scrolls_detail_and_help_a_line_a_press() -> None:
    frames = "\n".join(f"  File 'frame_{n}.py', line {n}" for n in range(120))
    long = shop_entry(
        1, 4, "shop.tasks.charge_card", "ValueError", "deep", traceback=f"Traceback:\n{frames}"
    )

    async def feed(pilot: Pilot[None]) -> None:
        assert isinstance(pilot.app, MorgueApp)
        pilot.app.dashboard.post_message(dead_letters([long]))
        await pilot.pause()

    async def presses_move_at_once(pilot: Pilot[None], screen: EntryScreen | HelpScreen) -> None:
        scroll = screen.query_one(VerticalScroll)
        assert scroll.scroll_y == 0 and scroll.max_scroll_y > 12
        # Pilot waits for animations after each key, which hides the bug: a held key runs the
        # action again before any animation ends, so call it the way repeats do, back to back.
        for _ in range(12):
            await screen.run_action("scroll('down')")
        await pilot.pause()  # one refresh: scrolls are applied after it
        assert scroll.scroll_y == 12
        assert not screen.app.animator.is_being_animated(scroll, "scroll_y")
        for _ in range(5):
            await screen.run_action("scroll('up')")
        await pilot.pause()
        assert scroll.scroll_y == 7

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        found = app.dashboard.pane("celery")
        assert found is not None
        found.table.focus()
        await select_entry(pilot, found, long.id)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, EntryScreen), what="detail opened")
        await pilot.pause()
        assert isinstance(app.screen, EntryScreen)
        await presses_move_at_once(pilot, app.screen)
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, DashboardScreen))
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), what="help opened")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        await presses_move_at_once(pilot, app.screen)

    with_fed_app(scenario, size=(80, 20), feed=feed)


@pytest.mark.parametrize("screen", ["confirm", "entry", "help"])
def test_a_screen_pushed_while_the_app_quits_does_not_crash_the_exit(screen: str) -> None:
    """q then another key in the same read (a fast typist, a paste): the screen the second key
    pushes is mounted while the app exits, without being composed; the exit stays clean."""

    async def main() -> MorgueApp:
        app = make_app()
        async with app.run_test(size=(80, 24)) as pilot:
            await feed_dashboard(pilot)
            pushed: Screen[object] = {
                "confirm": ConfirmScreen("Delete entry", Text("Delete?"), "Delete"),
                "entry": EntryScreen(ENTRIES[0], "celery", clock=lambda: 0.0, readonly=False),
                "help": HelpScreen(app.help_sections(), {}),
            }[screen]
            await app.run_action("quit")
            app.push_screen(pushed)
            await pilot.pause()
        return app

    app = asyncio.run(main())
    assert app.return_code == 0
    assert not app._exit_renderables, "a traceback on the way out"
