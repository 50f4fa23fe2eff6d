"""Bulk actions of a DLQ pane under a filter, on marks, paced and stopped: Pilot, real Redis.

The broker is the test's Redis and no worker consumes the queue, so what a requeue sent is
the broker's list of that queue, and what it did not send is still in the DLQ. Each test
fails on the old UI: ``c`` refused under a filter, ``E`` sent the whole queue, escape did not
stop a requeue, and there were no marks.
"""

from __future__ import annotations

import json

import redis
from textual.pilot import Pilot

from celery_morgue.core import DeadLetterQueue
from celery_morgue.core.entry import Entry
from celery_morgue.tui.app import MorgueApp
from celery_morgue.tui.demo.processes import RedisServer
from celery_morgue.tui.dialogs import ConfirmScreen
from celery_morgue.tui.screens.dashboard import DashboardScreen
from celery_morgue.tui.widgets.dlq_pane import DLQPane
from celery_morgue.tui.widgets.groups_pane import GroupsPane
from tests.helpers import (
    make_entry,
    notices,
    open_queue,
    profile_for,
    screen_text,
    until,
    with_app,
    workers_done,
)

# No test worker consumes this queue: a requeued task waits in its broker list.
QUEUE = "bulk-q"


def empty_dlq(client: redis.Redis) -> DeadLetterQueue:
    """The DLQ, and the broker's list of QUEUE emptied of what an earlier test sent."""
    client.delete(QUEUE)
    return DeadLetterQueue(client)


def bug(task: str, n: int) -> Entry:
    return make_entry(f"{task}-{n}", QUEUE, task=f"shop.tasks.{task}")


def fill(dlq: DeadLetterQueue, task: str, count: int) -> list[str]:
    ids = dlq.add_many(bug(task, n) for n in range(count))
    assert all(ids)
    return [str(entry_id) for entry_id in ids]


def sent_tasks(client: redis.Redis) -> list[str]:
    """The task names waiting in the broker's list of QUEUE."""
    return [json.loads(raw)["headers"]["task"] for raw in client.lrange(QUEUE, 0, -1)]


def left(dlq: DeadLetterQueue) -> set[str]:
    return {entry.id for entry in dlq.iter_entries(QUEUE)}


async def narrow_to(pilot: Pilot[None], app: MorgueApp, task: str) -> DLQPane:
    """Open the queue, then its groups view, and enter on the group of ``task``."""
    found = await open_queue(pilot, app, QUEUE)
    await pilot.press("f")
    view: GroupsPane = app.dashboard.dead_letters.groups_pane
    await until(pilot, lambda: view.display and view.table.row_count > 0, what="groups")
    await until(
        pilot,
        lambda: any(s.task == f"shop.tasks.{task}" for s in view.summaries.values()),
        what=f"group of {task}",
    )
    key = next(k for k, s in view.summaries.items() if s.task == f"shop.tasks.{task}")
    view.table.move_cursor(row=view.table.get_row_index(key))
    await pilot.pause()
    await pilot.press("enter")
    await until(pilot, lambda: found.group is not None and found.loaded_once, what="narrowed")
    return found


async def confirm(pilot: Pilot[None], app: MorgueApp, key: str, expected: str) -> None:
    await pilot.press(key)
    await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what=f"dialog of {key}")
    assert app.focused is not None and app.focused.id == "cancel"
    screen = app.screen
    assert isinstance(screen, ConfirmScreen)
    dialog = " ".join(screen.question.plain.split())
    assert expected in dialog, dialog
    await pilot.press("y")
    await until(pilot, lambda: isinstance(app.screen, DashboardScreen), what="dialog closed")


def test_a_group_filtered_clear_keeps_other_groups_and_newer_entries(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    dlq = empty_dlq(redis_client)
    others = fill(dlq, "charge_card", 4)
    fill(dlq, "parse_invoice", 6)

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        found = await narrow_to(pilot, app, "parse_invoice")
        await until(pilot, lambda: len(found.order) == 6, what="the group's rows")
        group = found.group
        assert group is not None
        newer = dlq.add(bug("parse_invoice", 99))  # arrives after the rows shown
        await confirm(
            pilot,
            app,
            "c",
            f"Clear 6 entries of group {group.group} (ValueError in parse_invoice) from {QUEUE}?",
        )
        await until(pilot, lambda: dlq.size(QUEUE) == 5, what="the group cleared")
        assert left(dlq) == {*others, newer}

    with_app(profile_for(redis_server.url, refresh=600), scenario, size=(120, 30))


def test_requeue_under_a_filter_sends_only_the_matching_entries(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    dlq = empty_dlq(redis_client)
    others = fill(dlq, "charge_card", 5)
    fill(dlq, "parse_invoice", 130)  # more than a page: not only the loaded rows

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        found = await narrow_to(pilot, app, "parse_invoice")
        group = found.group
        assert group is not None
        await confirm(pilot, app, "E", f"Requeue 130 entries of group {group.group}")
        await until(pilot, lambda: len(sent_tasks(redis_client)) == 130, what="sent")
        await until(pilot, lambda: dlq.size(QUEUE) == 5, what="requeued ones gone")
        assert set(sent_tasks(redis_client)) == {"shop.tasks.parse_invoice"}
        assert left(dlq) == set(others)
        await until(pilot, lambda: any(n.startswith("Requeued 130") for n in notices(app)))

    with_app(profile_for(redis_server.url, refresh=600), scenario, size=(120, 30))


def test_escape_stops_a_paced_requeue_and_the_rest_stay(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    dlq = empty_dlq(redis_client)
    ids = fill(dlq, "parse_invoice", 60)

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        found = await open_queue(pilot, app, QUEUE)
        await confirm(pilot, app, "E", f"Requeue 60 entries of {QUEUE}?")
        await until(pilot, lambda: found.progress is not None, what="progress in the pane")
        await until(pilot, lambda: "requeue " in screen_text(app), what="progress shown")
        await pilot.press("escape")
        await until(
            pilot,
            lambda: any(n.startswith("Requeue stopped") for n in notices(app)),
            what="the stopped outcome",
        )
        await workers_done(pilot, app)
        sent = len(sent_tasks(redis_client))
        assert 0 < sent < len(ids)
        # Nothing sent twice, nothing lost: what was sent left the DLQ, the rest stayed.
        assert dlq.size(QUEUE) == len(ids) - sent
        outcome = next(n for n in notices(app) if n.startswith("Requeue stopped"))
        assert f"sent {sent} entr" in outcome and f"{len(ids) - sent} still in the queue" in outcome
        assert found.progress is None and not found.busy

    with_app(profile_for(redis_server.url, refresh=600), scenario, size=(120, 30), requeue_rate=10)


def test_a_second_E_while_a_requeue_runs_is_refused_and_escape_stops_the_one_run(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    """Was: a second dialog (with the first count, stale), a second run, and escape stopping
    only the second while the first sent everything."""
    dlq = empty_dlq(redis_client)
    ids = fill(dlq, "parse_invoice", 60)

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        found = await open_queue(pilot, app, QUEUE)
        dead_letters = app.dashboard.dead_letters
        await confirm(pilot, app, "E", f"Requeue 60 entries of {QUEUE}?")
        await until(pilot, lambda: found.progress is not None, what="progress in the pane")
        refusal = f"A requeue of {QUEUE} is running: escape stops it."
        assert dead_letters.check_action("requeue_queue", ()) is None  # dimmed in the footer
        for key in ("E", "c"):
            await pilot.press(key)
            await pilot.pause()
            assert isinstance(app.screen, DashboardScreen), f"{key} opened a dialog"
        assert notices(app).count(refusal) == 2
        await pilot.press("space", "d")  # a mark, then a bulk delete: refused as well
        await pilot.pause()
        assert isinstance(app.screen, DashboardScreen), "d on marks opened a dialog"
        assert notices(app).count(refusal) == 3

        await pilot.press("escape")
        await until(
            pilot,
            lambda: any(n.startswith("Requeue stopped") for n in notices(app)),
            what="the stopped outcome",
        )
        await workers_done(pilot, app)
        sent = len(sent_tasks(redis_client))
        assert 0 < sent < len(ids)
        assert dlq.size(QUEUE) == len(ids) - sent
        assert not found.busy and found.progress is None
        await pilot.press("escape")  # the run is over: escape clears the mark again
        await until(pilot, lambda: not found.mark_count, what="the mark cleared")
        # Nothing runs on: a requeue started again (its confirmation) counts what is left.
        await until(pilot, lambda: found.total == len(ids) - sent, what="the refreshed total")
        await confirm(pilot, app, "E", f"Requeue {len(ids) - sent} entries of {QUEUE}?")
        await until(pilot, lambda: found.progress is not None, what="the new run's progress")
        await pilot.press("escape")
        await until(pilot, lambda: not found.busy, what="the new run stopped")
        await workers_done(pilot, app)
        assert dlq.size(QUEUE) + len(sent_tasks(redis_client)) == len(ids)

    with_app(profile_for(redis_server.url, refresh=600), scenario, size=(120, 30), requeue_rate=10)


def test_the_groups_view_refuses_a_second_requeue_of_its_queue(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    dlq = empty_dlq(redis_client)
    fill(dlq, "refund", 40)

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        await open_queue(pilot, app, QUEUE)
        await pilot.press("f")
        view = app.dashboard.dead_letters.groups_pane
        await until(pilot, lambda: view.table.row_count == 1, what="groups")
        await confirm(pilot, app, "E", "Requeue 40 entries of group")
        await until(pilot, lambda: view.progress is not None, what="progress")
        # Under load the first send can lag the progress bar: escape must stop a run that sent.
        await until(pilot, lambda: len(sent_tasks(redis_client)) > 0, what="a first send")
        await pilot.press("E")
        running = f"A requeue of {QUEUE} is running: escape stops it."
        await until(pilot, lambda: running in notices(app), what="the refusal")
        assert isinstance(app.screen, DashboardScreen), "a second E opened a dialog"
        await pilot.press("escape")
        await until(pilot, lambda: view.progress is None, what="the run stopped")
        await workers_done(pilot, app)
        assert 0 < len(sent_tasks(redis_client)) < 40
        assert dlq.size(QUEUE) + len(sent_tasks(redis_client)) == 40

    with_app(profile_for(redis_server.url, refresh=600), scenario, size=(120, 30), requeue_rate=10)


def test_marks_then_d_delete_exactly_the_marked_entries(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    dlq = empty_dlq(redis_client)
    ids = fill(dlq, "parse_invoice", 6)  # shown newest first: ids[5] on top

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        found = await open_queue(pilot, app, QUEUE)
        found.table.move_cursor(row=0)
        await pilot.press("space")  # marks ids[5], moves down
        await pilot.press("down")
        await pilot.press("space")  # marks ids[3]
        assert found.marked == {ids[5], ids[3]}
        assert "2 marked" in screen_text(app)
        assert "✓" in str(found.table.get_cell(ids[5], "age"))
        await confirm(pilot, app, "d", f"Delete the 2 marked entries from {QUEUE}?")
        await until(pilot, lambda: dlq.size(QUEUE) == 4, what="deleted")
        assert left(dlq) == {ids[0], ids[1], ids[2], ids[4]}
        assert not found.marked

        # A marks every entry; escape clears the marks and nothing else.
        await until(pilot, lambda: len(found.order) == 4, what="refreshed")
        await pilot.press("A")
        assert found.all_marked is not None and found.mark_count == 4
        assert "all 4 marked" in screen_text(app)
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="delete dialog")
        assert isinstance(app.screen, ConfirmScreen)
        assert app.screen.question.plain.startswith(f"Delete 4 entries from {QUEUE}?")
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, DashboardScreen), what="cancelled")
        await pilot.press("escape")
        assert found.mark_count == 0 and found.scope.is_empty
        assert dlq.size(QUEUE) == 4

    with_app(profile_for(redis_server.url, refresh=600), scenario, size=(120, 30))


def test_mark_all_under_a_group_requeues_every_match_up_to_the_newest_shown(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    dlq = empty_dlq(redis_client)
    others = fill(dlq, "charge_card", 3)
    fill(dlq, "parse_invoice", 120)

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        found = await narrow_to(pilot, app, "parse_invoice")
        await pilot.press("A")
        assert found.mark_count == 120 and len(found.order) < 120  # not only the loaded rows
        assert "all 120 marked" in screen_text(app)
        newer = dlq.add(bug("parse_invoice", 999))
        await confirm(pilot, app, "e", "Requeue 120 entries of group")
        await until(pilot, lambda: len(sent_tasks(redis_client)) == 120, what="sent")
        await until(pilot, lambda: dlq.size(QUEUE) == 4, what="requeued ones gone")
        assert left(dlq) == {*others, newer}

    with_app(profile_for(redis_server.url, refresh=600), scenario, size=(120, 30))


def test_requeue_group_from_the_groups_view(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    dlq = empty_dlq(redis_client)
    others = fill(dlq, "charge_card", 7)
    fill(dlq, "refund", 4)

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        await open_queue(pilot, app, QUEUE)
        await pilot.press("f")
        view = app.dashboard.dead_letters.groups_pane
        await until(pilot, lambda: view.table.row_count == 2, what="groups")
        view.table.move_cursor(row=1)  # refund, the smaller
        await pilot.pause()
        chosen = view.selected
        assert chosen is not None and chosen.task == "shop.tasks.refund"
        await confirm(pilot, app, "E", f"Requeue 4 entries of group {chosen.group}")
        await until(pilot, lambda: len(sent_tasks(redis_client)) == 4, what="sent")
        await until(pilot, lambda: dlq.size(QUEUE) == 7, what="requeued ones gone")
        assert set(sent_tasks(redis_client)) == {"shop.tasks.refund"}
        assert left(dlq) == set(others)

    with_app(profile_for(redis_server.url, refresh=600), scenario, size=(120, 30))


def test_a_readonly_profile_refuses_every_new_action(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    dlq = empty_dlq(redis_client)
    fill(dlq, "charge_card", 3)
    fill(dlq, "refund", 2)

    async def refused(pilot: Pilot[None], app: MorgueApp, key: str, label: str) -> None:
        await pilot.press(key)
        await pilot.pause()
        assert isinstance(app.screen, DashboardScreen), f"{key} opened a dialog"
        assert f"Read-only profile: {label} is disabled." in notices(app)

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        await open_queue(pilot, app, QUEUE)
        await pilot.press("f")
        view = app.dashboard.dead_letters.groups_pane
        await until(pilot, lambda: view.table.row_count == 2, what="groups")
        await refused(pilot, app, "E", "requeue group")
        commands = {c.title: c for c in app.get_system_commands(app.screen)}
        assert commands["Requeue group"].help.endswith("(disabled: read-only profile)")
        await pilot.press("escape")
        await until(pilot, lambda: not view.display, what="groups closed")

        found = await narrow_to(pilot, app, "refund")
        for key, label in (("c", "clear queue"), ("E", "requeue queue"), ("d", "delete entry")):
            await refused(pilot, app, key, label)
        await pilot.press("space")  # marking changes nothing: allowed
        await pilot.press("A")
        assert found.mark_count == 2
        for key, label in (("d", "delete entry"), ("e", "requeue entry"), ("E", "requeue queue")):
            await refused(pilot, app, key, label)
        await workers_done(pilot, app)
        assert dlq.size(QUEUE) == 5
        assert not sent_tasks(redis_client)

    with_app(profile_for(redis_server.url, refresh=600, readonly=True), scenario, size=(120, 30))


def test_escape_in_the_groups_view_stops_the_groups_requeue_first(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    dlq = empty_dlq(redis_client)
    others = fill(dlq, "charge_card", 3)
    group_ids = fill(dlq, "refund", 40)

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        await open_queue(pilot, app, QUEUE)
        await pilot.press("f")
        view = app.dashboard.dead_letters.groups_pane
        await until(pilot, lambda: view.table.row_count == 2, what="groups")
        assert view.selected is not None and view.selected.task == "shop.tasks.refund"
        await confirm(pilot, app, "E", "Requeue 40 entries of group")
        await until(pilot, lambda: "requeue " in str(view.border_subtitle), what="progress")
        await until(pilot, lambda: len(sent_tasks(redis_client)) > 0, what="a first send")
        await pilot.press("escape")  # stops the requeue; the view stays open
        await until(
            pilot,
            lambda: any(n.startswith("Requeue stopped") for n in notices(app)),
            what="the stopped outcome",
        )
        assert view.display
        await workers_done(pilot, app)
        sent = len(sent_tasks(redis_client))
        assert 0 < sent < len(group_ids)
        assert dlq.size(QUEUE) == len(others) + len(group_ids) - sent
        await until(pilot, lambda: view.progress is None, what="progress gone")
        await pilot.press("escape")  # now it closes the view
        await until(pilot, lambda: not view.display, what="groups closed")

    with_app(profile_for(redis_server.url, refresh=600), scenario, size=(120, 30), requeue_rate=10)
