"""The groups view and a pane narrowed to a group, through Pilot against a real Redis.

Each test fails on the UI without the view: ``f`` would do nothing, enter would open an entry,
and the pane would keep showing every entry of the queue.
"""

from __future__ import annotations

import redis
from textual.pilot import Pilot

from celery_morgue.core import DeadLetterQueue
from celery_morgue.core.entry import Entry
from celery_morgue.tui.app import MorgueApp
from celery_morgue.tui.cells import Keyed
from celery_morgue.tui.demo.processes import RedisServer
from celery_morgue.tui.widgets.dlq_pane import DLQPane
from celery_morgue.tui.widgets.groups_pane import GroupsPane
from tests.helpers import (
    make_entry,
    open_queue,
    profile_for,
    screen_text,
    until,
    with_app,
)

QUEUE = "grouped"


def bug(task: str, n: int, message: str | None = None) -> Entry:
    """A failure of ``task``: each task name is a group of its own."""
    return make_entry(f"{task}-{n}", QUEUE, task=f"shop.tasks.{task}", message=message)


def fill(dlq: DeadLetterQueue, counts: dict[str, int]) -> dict[str, list[str]]:
    """``counts[task]`` failures of each task, interleaved; their ids by task, oldest first."""
    ids: dict[str, list[str]] = {task: [] for task in counts}
    for n in range(max(counts.values())):
        for task, count in counts.items():
            if n < count:
                entry_id = dlq.add(bug(task, n))
                assert entry_id is not None
                ids[task].append(entry_id)
    return ids


def groups_pane(app: MorgueApp) -> GroupsPane:
    return app.dashboard.dead_letters.groups_pane


def group_counts(app: MorgueApp) -> list[tuple[str, str]]:
    """(task, count) of each row as shown, top to bottom."""
    view = groups_pane(app)
    summaries = view.summaries
    rows = [row.key.value or "" for row in view.table.ordered_rows]
    counts = [view.table.get_cell(key, "count") for key in rows]
    assert all(isinstance(count, Keyed) for count in counts)
    return [
        (summaries[key].task, count.text.plain)
        for key, count in zip(rows, counts, strict=True)
        if isinstance(count, Keyed)
    ]


async def open_groups(pilot: Pilot[None], app: MorgueApp, rows: int) -> GroupsPane:
    await pilot.press("f")
    view = groups_pane(app)
    await until(pilot, lambda: view.display and view.table.row_count == rows, what="groups")
    return view


def test_groups_view_lists_groups_largest_first_and_follows_the_queue(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    dlq = DeadLetterQueue(redis_client)
    fill(dlq, {"parse_invoice": 7, "charge_card": 12, "send_receipt": 3})

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        await open_queue(pilot, app, QUEUE)
        view = await open_groups(pilot, app, 3)
        assert app.focused is view.table
        assert group_counts(app) == [
            ("shop.tasks.charge_card", "12"),
            ("shop.tasks.parse_invoice", "7"),
            ("shop.tasks.send_receipt", "3"),
        ]
        assert f"{QUEUE} · 3 groups · 22 entries" in screen_text(app)

        # Live: the next poll shows a new group, and a group growing past another moves up.
        for n in range(8):
            dlq.add(bug("send_receipt", 100 + n))
        dlq.add(bug("refund", 1))
        await until(pilot, lambda: len(group_counts(app)) == 4, what="the new group")
        assert group_counts(app) == [
            ("shop.tasks.charge_card", "12"),
            ("shop.tasks.send_receipt", "11"),
            ("shop.tasks.parse_invoice", "7"),
            ("shop.tasks.refund", "1"),
        ]

        await pilot.press("escape")
        await until(pilot, lambda: not view.display, what="groups closed")
        found = app.dashboard.pane(QUEUE)
        assert found is not None and app.focused is found.table
        assert found.group is None

    with_app(profile_for(redis_server.url), scenario, size=(100, 30))


def test_enter_narrows_the_pane_to_the_group_and_escape_widens_it(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    dlq = DeadLetterQueue(redis_client)
    ids = fill(dlq, {"parse_invoice": 130, "charge_card": 40})

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        found = await open_queue(pilot, app, QUEUE)
        view = await open_groups(pilot, app, 2)
        view.table.move_cursor(row=1)  # charge_card, 40 entries
        await pilot.pause()
        chosen = view.selected
        assert chosen is not None and chosen.task == "shop.tasks.charge_card"
        await pilot.press("enter")
        await until(pilot, lambda: not view.display, what="groups closed")
        assert found.group is not None and found.group.group == chosen.group
        await until(
            pilot, lambda: found.loaded_once and found.table.row_count == 40, what="group rows"
        )
        # Only the group's entries, newest first, and its count, from the server.
        assert found.order == list(reversed(ids["charge_card"]))
        assert found.total == 40
        title = str(found.border_title)
        assert title == f"{QUEUE} · 40 · group {chosen.group} · ValueError in charge_card"

        # A page of the group past the first: the other group's entries never come in.
        found.table.move_cursor(row=found.table.row_count - 1)
        await pilot.pause()
        assert set(found.order) <= set(ids["charge_card"])

        await pilot.press("escape")
        await until(pilot, lambda: found.group is None, what="the filter cleared")
        await until(pilot, lambda: found.total == 170, what="the whole queue again")
        assert str(found.border_title) == f"{QUEUE} · 170"

    with_app(profile_for(redis_server.url), scenario, size=(100, 30))


def test_markup_in_a_sample_is_shown_literally(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    dlq = DeadLetterQueue(redis_client)
    dlq.add(bug("parse_invoice", 1, message="[bold red]boom[/] [link=http://x]y[/link]"))

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        await open_queue(pilot, app, QUEUE)
        await open_groups(pilot, app, 1)
        assert "[bold red]boom[/] [link=http://x]y[/link]" in screen_text(app)

    with_app(profile_for(redis_server.url), scenario, size=(120, 30))


def test_the_groups_view_fits_80_columns(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    dlq = DeadLetterQueue(redis_client)
    fill(dlq, {"parse_invoice_with_a_long_name": 3})

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        await open_queue(pilot, app, QUEUE)
        await open_groups(pilot, app, 1)
        text = screen_text(app)
        assert "Close groups" in text and "Requeue group" in text
        row = next(line for line in text.splitlines() if "ValueError" in line)
        assert "failure of" in row, row  # the sample has room beside the other columns

    with_app(profile_for(redis_server.url), scenario)


def test_a_narrowed_pane_keeps_pages_of_its_old_scope_out(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    """A page read for the whole queue, arriving after the pane was narrowed, is dropped."""
    dlq = DeadLetterQueue(redis_client)
    fill(dlq, {"parse_invoice": 5, "charge_card": 5})

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        found: DLQPane = await open_queue(pilot, app, QUEUE)
        whole = dlq.page(QUEUE)
        view = await open_groups(pilot, app, 2)
        await pilot.press("enter")
        await until(pilot, lambda: found.loaded_once and found.total == 5, what="narrowed")
        found.apply_page(whole, None)  # the unfiltered filter: read before narrowing
        await pilot.pause()
        assert found.total == 5 and len(found.order) == 5
        assert view.display is False

    with_app(profile_for(redis_server.url), scenario, size=(100, 30))
