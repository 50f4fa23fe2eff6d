"""DLQ paging and the keys that act on it, driven with Textual's Pilot against a real Redis.

No pytest asyncio plugin here: each test runs its own event loop with ``asyncio.run``.
"""

from __future__ import annotations

import time

import redis
from textual.pilot import Pilot

from celery_morgue.core import DeadLetterQueue
from celery_morgue.tui.app import MorgueApp
from celery_morgue.tui.demo.processes import RedisServer
from celery_morgue.tui.dialogs import ConfirmScreen
from celery_morgue.tui.monitor import PAGE_SIZE
from celery_morgue.tui.widgets.dlq_pane import DLQPane
from tests.helpers import (
    add_entries,
    make_entry,
    open_queue,
    pane,
    profile_for,
    screen_text,
    until,
    with_app,
    with_fed_app,
)


def newest_first(ids: list[str]) -> list[str]:
    return sorted(ids, key=lambda i: tuple(map(int, i.split("-"))), reverse=True)


async def next_refresh(pilot: Pilot[None], app: MorgueApp, what: str) -> None:
    """Let one more DLQ refresh reach the dashboard."""
    status = app.dashboard.status_line
    before = status.status.refreshed_at
    await until(pilot, lambda: status.status.refreshed_at != before, what=what)


async def refreshes(pilot: Pilot[None], app: MorgueApp, count: int) -> None:
    """Let ``count`` more DLQ refreshes reach the dashboard."""
    for n in range(count):
        await next_refresh(pilot, app, f"refresh {n + 1}")


async def scroll_to_end(pilot: Pilot[None], celery: DLQPane) -> None:
    """Put the cursor on the last row and wait for the next page (or the end of the queue)."""
    before = len(celery.order)
    celery.table.move_cursor(row=celery.table.row_count - 1)
    await until(
        pilot,
        lambda: len(celery.order) > before or celery.exhausted,
        what=f"the page after {before} entries",
    )


def test_scrolling_to_the_end_loads_every_older_entry(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    dlq = DeadLetterQueue(redis_client)
    ids = add_entries(dlq, "celery", 250)

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        celery = await open_queue(pilot, app, "celery")
        assert len(celery.order) == PAGE_SIZE
        # Only the cursor loads more: the refresh is far away, so it cannot do it instead.
        deadline = time.monotonic() + 30
        while len(celery.order) < len(ids) and time.monotonic() < deadline:
            await scroll_to_end(pilot, celery)
        assert celery.order == newest_first(ids)
        assert celery.exhausted
        assert celery.table.row_count == len(ids)
        await until(pilot, lambda: not celery.fetching, what="no fetch left pending")
        assert "loading" not in str(celery.border_subtitle)

    with_app(profile_for(redis_server.url, refresh=600), scenario)


def test_refreshes_without_scrolling_do_not_load_more(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    dlq = DeadLetterQueue(redis_client)
    add_entries(dlq, "celery", 250)

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        celery = await open_queue(pilot, app, "celery")
        first = len(celery.order)
        assert first == PAGE_SIZE
        await refreshes(pilot, app, 4)
        assert len(celery.order) == first
        assert celery.head_limit == first

        # A page fetched by scrolling is kept by the refreshes, and nothing more is added.
        await scroll_to_end(pilot, celery)
        assert len(celery.order) == 2 * PAGE_SIZE
        celery.table.move_cursor(row=0)
        scrolled = len(celery.order)
        await refreshes(pilot, app, 4)
        assert len(celery.order) == scrolled

    with_app(profile_for(redis_server.url, refresh=0.2), scenario)


def test_clear_under_a_text_filter_removes_only_matching_entries_up_to_the_newest_shown(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    """Was refused; now the dialog counts what the server matches and the clear removes just
    that: entries the filter leaves out stay, and so do matching ones newer than those shown."""
    dlq = DeadLetterQueue(redis_client)
    rare = dlq.add_many(make_entry(f"old-{n}", "celery", message=f"rare {n}") for n in range(3))
    common = add_entries(dlq, "celery", 5)

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        celery = await open_queue(pilot, app, "celery")
        await pilot.press("slash", *"rare", "enter")
        await until(pilot, lambda: celery.order == rare[::-1], what="filtered rows")
        await until(pilot, lambda: celery.total == len(rare), what="the count, after the rows")
        newer = dlq.add(make_entry("new-rare", "celery", message="rare and new"))
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="clear dialog")
        assert 'Clear 3 entries containing "rare" from celery?' in screen_text(app)
        await pilot.press("y")
        await until(pilot, lambda: dlq.size("celery") == len(common) + 1, what="cleared")
        left = {entry.id for entry in dlq.page("celery").items}
        assert left == {*common, newer}

    with_app(profile_for(redis_server.url, refresh=600), scenario)


def test_a_too_small_terminal_disables_the_destructive_keys() -> None:
    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        celery = pane(app, "celery")
        assert celery is not None
        celery.table.focus()
        await pilot.pause()
        screen = app.dashboard
        assert screen.has_class("-too-narrow")
        # Refused outright: no dialog, so nothing that a yes could start.
        for key in ("d", "c", "e", "E"):
            await pilot.press(key)
            await pilot.pause()
            assert app.screen is screen, f"{key} opened {type(app.screen).__name__}"
        # Nor does the footer offer them.
        for action in ("delete_entry", "clear_queue", "requeue_entry", "requeue_queue", "revoke"):
            owner = screen.tasks_pane if action == "revoke" else screen.dead_letters
            assert not owner.check_action(action, ())

    with_fed_app(scenario, size=(50, 12))
