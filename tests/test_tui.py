"""The dashboard driven with Textual's Pilot against a real Redis and a real prefork worker.

No pytest asyncio plugin here: each test runs its own event loop with ``asyncio.run``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from textual.pilot import Pilot

from celery_morgue.core import DeadLetterQueue
from celery_morgue.core.dlq import Page, QueueInfo
from celery_morgue.core.entry import Entry
from celery_morgue.core.filters import EntryFilter
from celery_morgue.tui.app import MorgueApp
from celery_morgue.tui.demo.processes import RedisServer
from celery_morgue.tui.dialogs import ConfirmScreen, RevokeConfirmScreen
from celery_morgue.tui.messages import PageLoaded
from celery_morgue.tui.screens.dashboard import DashboardScreen
from celery_morgue.tui.screens.entry import EntryScreen
from celery_morgue.tui.screens.help import HelpScreen
from tests.helpers import (
    Worker,
    add_entries,
    dead_letters,
    loaded,
    make_entry,
    notices,
    open_queue,
    palette_offers,
    pane,
    profile_for,
    screen_text,
    select_entry,
    shop_entry,
    until,
    wait_for,
    wait_for_entry,
    wait_redis,
    with_app,
    with_fed_app,
    workers_done,
)

PAUSE_MS = 8000


# -- what the panes show -------------------------------------------------------------------


def test_panes_show_each_queue_with_its_count(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    dlq = DeadLetterQueue(redis_client)
    add_entries(dlq, "celery", 130)
    add_entries(dlq, "other", 3)

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        queue_list = app.dashboard.queue_list
        await until(pilot, lambda: queue_list.names == ["celery", "other"], what="queue list")
        await until(pilot, lambda: loaded(app, "celery"))
        celery = pane(app, "celery")
        assert celery is not None
        assert celery.total == 130
        assert "celery · 130" in str(celery.border_title)
        # The first pages only: never the whole queue.
        assert 0 < len(celery.order) < 130
        newest = dlq.page("celery", limit=1).items[0]
        assert celery.order[0] == newest.id

        other = await open_queue(pilot, app, "other")
        assert other.total == 3
        assert other.table.row_count == 3
        text = screen_text(app)
        assert "other · 3" in text
        assert "celery" in text and "130" in text

        # A new failure shows on the next refresh, without a restart.
        dlq.add(make_entry("late-arrival", "other"))
        await until(pilot, lambda: other.total == 4, what="count refreshed")
        assert other.table.row_count == 4

    with_app(profile_for(redis_server.url), scenario)


def test_pages_load_as_the_cursor_moves_down(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    dlq = DeadLetterQueue(redis_client)
    add_entries(dlq, "celery", 1000)

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        celery = await open_queue(pilot, app, "celery")
        first = len(celery.order)
        assert first < 1000
        celery.table.move_cursor(row=celery.table.row_count - 1)
        await until(pilot, lambda: len(celery.order) > first, what="next page loaded")
        assert len(celery.order) < 1000
        ids = celery.order
        assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))), reverse=True)
        assert len(set(ids)) == len(ids)

    with_app(profile_for(redis_server.url), scenario)


def test_exception_markup_is_shown_literally(
    worker: Worker, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    dlq = DeadLetterQueue(redis_client)
    message = "[red]boom[/red] [link=http://example.com]click[/link] [bold"
    task_id = worker.send("boom", message)
    entry = wait_for_entry(dlq, "celery", task_id)

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        celery = await open_queue(pilot, app, "celery")
        cell = celery.table.get_cell(entry.id, "error")
        assert str(cell).startswith("ValueError: [red]boom[/red] [link=")  # cut to the column
        assert "[red]boom[/red]" in screen_text(app)

        await select_entry(pilot, celery, entry.id)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, EntryScreen), what="detail opened")
        await pilot.pause()
        detail = screen_text(app)
        assert message in detail
        assert "ValueError" in detail
        assert "tests.workerapp.boom" in detail
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, DashboardScreen))

    with_app(profile_for(redis_server.url), scenario, size=(100, 40))


# -- clearing ------------------------------------------------------------------------------


def test_clear_then_yes_empties_the_queue(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    dlq = DeadLetterQueue(redis_client)
    add_entries(dlq, "celery", 25)
    add_entries(dlq, "other", 2)

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        await open_queue(pilot, app, "celery")
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirm")
        dialog = screen_text(app)
        assert "celery" in dialog and "25 entries" in dialog
        assert app.focused is not None and app.focused.id == "cancel"
        await pilot.press("y")
        await until(pilot, lambda: dlq.size("celery") == 0, what="queue emptied in Redis")
        assert dlq.size("other") == 2
        await until(pilot, lambda: any("Cleared 25 entries from celery" in n for n in notices(app)))
        await until(pilot, lambda: "celery" not in app.dashboard.queue_list.names)

    with_app(profile_for(redis_server.url), scenario)


@pytest.mark.parametrize("key", ["n", "escape"])
def test_clear_then_no_leaves_the_queue(
    redis_server: RedisServer, redis_client: redis.Redis, key: str
) -> None:
    dlq = DeadLetterQueue(redis_client)
    add_entries(dlq, "celery", 5)

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        await open_queue(pilot, app, "celery")
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press(key)
        await until(pilot, lambda: isinstance(app.screen, DashboardScreen))
        await workers_done(pilot, app)  # a wrongly started clear has reached Redis
        assert dlq.size("celery") == 5

    with_app(profile_for(redis_server.url), scenario)


def test_entry_written_while_the_dialog_is_open_survives_the_clear(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    dlq = DeadLetterQueue(redis_client)
    add_entries(dlq, "celery", 10)

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        await open_queue(pilot, app, "celery")
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        newcomer = dlq.add(make_entry("arrived-during-dialog", "celery"))
        # Let refreshes run behind the dialog: they load the newcomer into the pane.
        celery = pane(app, "celery")
        assert celery is not None
        await until(pilot, lambda: newcomer in celery.entries, what="refresh behind the dialog")
        await pilot.press("y")
        await until(pilot, lambda: dlq.size("celery") == 1, what="clear done")
        remaining = dlq.page("celery").items
        assert [entry.task_id for entry in remaining] == ["arrived-during-dialog"]

    with_app(profile_for(redis_server.url), scenario)


# -- single entries ------------------------------------------------------------------------


def test_delete_removes_the_selected_entry(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    dlq = DeadLetterQueue(redis_client)
    ids = add_entries(dlq, "celery", 3)

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        celery = await open_queue(pilot, app, "celery")
        await select_entry(pilot, celery, ids[1])
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await until(pilot, lambda: dlq.size("celery") == 2, what="entry deleted")
        assert {e.id for e in dlq.page("celery").items} == {ids[0], ids[2]}
        await until(pilot, lambda: ids[1] not in celery.entries, what="row gone")
        assert celery.table.row_count == 2

    with_app(profile_for(redis_server.url), scenario)


def test_requeue_from_the_detail_runs_the_task_again(
    worker: Worker, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    dlq = DeadLetterQueue(redis_client)
    flag = "flag:tui-requeue"
    redis_client.delete(flag, f"done:{flag}")
    task_id = worker.send("fails_until_flag", flag, queue="other")
    entry = wait_for_entry(dlq, "other", task_id)
    redis_client.set(flag, 1)

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        other = await open_queue(pilot, app, "other")
        await select_entry(pilot, other, entry.id)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, EntryScreen))
        await pilot.press("e")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await until(pilot, lambda: isinstance(app.screen, DashboardScreen))
        done = await wait_redis(pilot, lambda: redis_client.get(f"done:{flag}"))
        record = json.loads(done)
        assert record["requeued_from"] == task_id
        assert record["task_id"] != task_id
        assert dlq.size("other") == 0
        await until(pilot, lambda: any(record["task_id"] in n for n in notices(app)))

    with_app(profile_for(redis_server.url), scenario)


def test_requeue_all_is_confirmed_first(
    worker: Worker, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    dlq = DeadLetterQueue(redis_client)
    flags = [f"flag:tui-all-{n}" for n in range(2)]
    redis_client.delete(*flags, *(f"done:{f}" for f in flags))
    for flag in flags:
        wait_for_entry(dlq, "other", worker.send("fails_until_flag", flag, queue="other"))
    for flag in flags:
        redis_client.set(flag, 1)

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        await open_queue(pilot, app, "other")
        await pilot.press("E")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        for flag in flags:
            await wait_redis(pilot, lambda flag=flag: redis_client.get(f"done:{flag}"))
        assert dlq.size("other") == 0
        await until(pilot, lambda: any("Requeued 2 entries from other" in n for n in notices(app)))

    with_app(profile_for(redis_server.url), scenario)


# -- active tasks --------------------------------------------------------------------------


def test_a_zombie_is_flagged_then_revoked(
    redis_server: RedisServer, redis_client: redis.Redis, start_worker: Callable[..., Worker]
) -> None:
    # The UI flags zombies as the worker's own reaper would: by the worker's options.
    worker = start_worker(
        redis_server.url,
        queues="tui-zombies",
        env={"MORGUE_TEST_HARD_LIMIT": "2", "MORGUE_TEST_GRACE": "0"},
    )
    task_id = worker.send("sleep", 60, queue="tui-zombies")
    profile = profile_for(redis_server.url)

    def active_ids() -> set[str]:
        replies = worker.control_app.control.inspect(destination=[worker.name], timeout=1).active()
        return {task["id"] for tasks in (replies or {}).values() for task in tasks}

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        tasks = app.dashboard.tasks_pane

        def zombie_row() -> bool:
            snapshot = tasks.snapshot
            return snapshot is not None and any(t.id == task_id for t in snapshot.zombies)

        await until(pilot, zombie_row, timeout=30, what="the task flagged as a zombie")
        await until(pilot, lambda: task_id in {r.key.value for r in tasks.table.ordered_rows})
        assert str(tasks.table.get_cell(task_id, "state")) == "ZOMBIE"
        assert "ZOMBIE" in screen_text(app)

        tasks.table.focus()
        await pilot.pause()
        await pilot.press("R")
        await until(pilot, lambda: isinstance(app.screen, RevokeConfirmScreen))
        assert app.focused is not None and app.focused.id == "cancel"
        await pilot.press("y")
        await until(pilot, lambda: any("Revoked 1 task with SIGTERM" in n for n in notices(app)))
        gone = await wait_redis(pilot, lambda: task_id not in active_ids() or "gone")
        assert gone
        assert task_id not in active_ids()
        await until(pilot, lambda: not tasks.zombies, what="the table refreshed")

    with_app(profile, scenario)


def test_revoke_then_no_leaves_the_task_running(
    worker: Worker, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    task_id = worker.send("sleep", 8)
    profile = profile_for(redis_server.url)

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
        await until(pilot, lambda: isinstance(app.screen, RevokeConfirmScreen))
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, DashboardScreen))
        await workers_done(pilot, app)  # a wrongly sent revoke has reached the worker
        assert task_id in active_ids()
        assert not any("Revoked" in n for n in notices(app))

    with_app(profile, scenario)
    # Leave the shared worker idle for the next test, and its DLQ settled: the terminated task
    # gets an entry, which must not land in the next test's queue.
    worker.control_app.control.revoke(task_id, terminate=True)
    dlq = DeadLetterQueue(redis_client)
    wait_for(
        lambda: any(
            getattr(entry, "task_id", None) == task_id for entry in dlq.iter_entries("celery")
        ),
        timeout=20,
    )


# -- read-only profiles, keymap, palette, help ---------------------------------------------


def test_readonly_profile_refuses_destructive_keys(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    dlq = DeadLetterQueue(redis_client)
    ids = add_entries(dlq, "celery", 3)

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        celery = await open_queue(pilot, app, "celery")
        await select_entry(pilot, celery, ids[0])
        bindings = app.screen.active_bindings
        assert not bindings["c"].enabled and not bindings["d"].enabled
        for key in ("c", "d", "e", "E"):
            await pilot.press(key)
            await pilot.pause()
            assert isinstance(app.screen, DashboardScreen)
        await until(pilot, lambda: any("Read-only profile" in n for n in notices(app)))
        await workers_done(pilot, app)  # a wrongly started action has reached Redis
        assert dlq.size("celery") == 3

    with_app(profile_for(redis_server.url, readonly=True), scenario)


def test_keymap_remaps_a_binding_and_help_shows_it() -> None:
    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        await pilot.press("c")
        await pilot.pause()
        assert isinstance(app.screen, DashboardScreen), "c no longer clears"
        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, DashboardScreen))
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen))
        help_text = screen_text(app)
        assert "Clear the queue up to the newest entry shown" in help_text
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, DashboardScreen))

    with_fed_app(scenario, size=(80, 80), keymap={"clear_queue": "x"})


def test_command_palette_offers_the_actions() -> None:
    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        await palette_offers(pilot, app, "Clear")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="clear confirm")
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, DashboardScreen))

    with_fed_app(scenario)


def test_filter_narrows_the_table_and_escape_clears_it() -> None:
    entries = [
        shop_entry(n, 60 + n, "shop.tasks.charge_card", "ValueError", f"failure {n}")
        for n in range(1, 21)
    ]
    needle = shop_entry(21, 30, "proj.tasks.special", "ValueError", "the one to find")
    queues = [QueueInfo("celery", 21, None, None)]

    async def feed(pilot: Pilot[None]) -> None:
        assert isinstance(pilot.app, MorgueApp)
        pilot.app.dashboard.post_message(dead_letters([needle, *entries], queues))
        await pilot.pause()

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        celery = pane(app, "celery")
        assert celery is not None
        await until(pilot, lambda: celery.table.row_count == 21)
        celery.table.focus()
        await pilot.press("slash")
        await pilot.press(*"one to find")
        # The server reads the filter: here, the page it would send back.
        grep = EntryFilter(grep="one to find")
        assert celery.entry_filter == grep
        found = Page("celery", 1, [needle], next=None)
        app.dashboard.post_message(PageLoaded(found, None, grep))
        await until(pilot, lambda: celery.table.row_count == 1, what="filtered")
        assert celery.table.cursor_key == needle.id
        await pilot.press("enter")  # keeps the filter, back to the table
        assert app.focused is celery.table
        await pilot.press("escape")
        assert celery.entry_filter.is_empty
        app.dashboard.post_message(dead_letters([needle, *entries], queues))
        await until(pilot, lambda: celery.table.row_count == 21, what="filter cleared")

    with_fed_app(scenario, feed=feed)


def test_too_small_terminal_shows_a_message() -> None:
    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        assert app.dashboard.query_one("#too-small").display
        assert "Terminal too small" in screen_text(app)

    with_fed_app(scenario, size=(50, 12))


# -- Redis under real conditions -----------------------------------------------------------


@pytest.mark.slow
def test_keys_are_handled_while_redis_is_paused(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    dlq = DeadLetterQueue(redis_client)
    add_entries(dlq, "celery", 5)
    # A poll blocked on the paused Redis stays blocked for the whole test.
    profile = profile_for(redis_server.url, timeout=20.0)

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        await open_queue(pilot, app, "celery")
        board = app.dashboard
        await until(pilot, lambda: not board.dlq_poll.in_flight, what="an idle moment")
        # Redis 6.2 (the bundled server) holds even CLIENT UNPAUSE until the pause ends, so
        # the pause is short and simply runs out.
        redis_client.execute_command("CLIENT", "PAUSE", str(PAUSE_MS), "ALL")
        paused_until = time.monotonic() + PAUSE_MS / 1000
        board.dlq_poll.run_now()
        await pilot.pause()
        assert board.dlq_poll.in_flight, "the poll should be stuck on the paused Redis"
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), timeout=5)
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, DashboardScreen), timeout=5)
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), timeout=5)
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, DashboardScreen), timeout=5)
        before = app.focused
        await pilot.press("tab")
        assert app.focused is not before
        if time.monotonic() < paused_until:
            assert board.dlq_poll.in_flight, "the poll finished while Redis was paused"
        else:
            pytest.skip("the machine was too slow to press the keys within the pause")
        await until(pilot, lambda: not board.dlq_poll.in_flight, what="poll done after the pause")

    with_app(profile, scenario)


@pytest.mark.redis
@pytest.mark.slow
def test_reconnects_after_redis_restarts(tmp_path: Any) -> None:
    server = RedisServer(persistent=True)
    server.start()
    try:
        client = redis.Redis.from_url(server.url)
        dlq = DeadLetterQueue(client)
        add_entries(dlq, "celery", 4)
        profile = profile_for(server.url, timeout=1.0, refresh=0.3)

        async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
            await open_queue(pilot, app, "celery")
            board = app.dashboard
            server.stop()
            await until(pilot, lambda: board.banner.has_class("-visible"), what="banner")
            # What the operator reads, once it is painted.
            await until(
                pilot, lambda: "does not answer" in screen_text(app), what="the banner's text"
            )
            assert board.status_line.status.connected is False
            server.start()
            dlq.add(make_entry("after-restart", "celery"))
            await until(
                pilot,
                lambda: not board.banner.has_class("-visible"),
                timeout=45,
                what="reconnected",
            )
            celery = pane(app, "celery")
            assert celery is not None
            await until(pilot, lambda: celery.total == 5, what="data after the restart")
            assert "Traceback" not in screen_text(app)

        with_app(profile, scenario)

        # The plain restart() too: the app keeps going and shows what was written after it.
        async def restarted(pilot: Pilot[None], app: MorgueApp) -> None:
            celery = await open_queue(pilot, app, "celery")
            server.restart()
            dlq.add(make_entry("after-second-restart", "celery"))
            await until(pilot, lambda: celery.total == 6, timeout=45, what="after restart()")

        with_app(profile, restarted)
        client.close()
    finally:
        pid = server.pid
        server.close()
        from celery_morgue.tui.demo.processes import group_pids

        assert not group_pids(pid)


def test_entry_detail_shows_arguments_and_traceback(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    dlq = DeadLetterQueue(redis_client)
    entry_id = dlq.add(
        make_entry(
            "detail-1",
            "celery",
            args=[{"order": 42}],
            kwargs={"note": "[b]not bold[/b]"},
            traceback="Traceback (most recent call last):\n  File 'x.py'\nValueError: nope",
            retries=3,
        )
    )

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        celery = await open_queue(pilot, app, "celery")
        await select_entry(pilot, celery, entry_id)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, EntryScreen))
        await pilot.pause()
        text = screen_text(app)
        for expected in ('"order": 42', "[b]not bold[/b]", "File 'x.py'", "w1@host", "detail-1"):
            assert expected in text, expected
        screen = app.screen
        assert isinstance(screen, EntryScreen)
        entry = screen.entry
        assert isinstance(entry, Entry) and entry.retries == 3

    with_app(profile_for(redis_server.url), scenario, size=(100, 50))
