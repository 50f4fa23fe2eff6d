"""How the dashboard merges what its polls bring: fed as messages, with polling off.

These exercise the UI's own logic (paging, merging refreshes, keeping the cursor, backoff);
tests/test_tui.py drives the same paths against a real Redis and worker.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable

from textual.pilot import Pilot

from celery_morgue.core.backoff import calculate_backoff
from celery_morgue.core.dlq import Page, QueueInfo
from celery_morgue.core.entry import Entry
from celery_morgue.core.filters import EntryFilter
from celery_morgue.tui.app import MorgueApp
from celery_morgue.tui.messages import DeadLettersRefreshed, PageLoaded, RedisUnavailable
from celery_morgue.tui.polling import RECONNECT_MAX, reconnect_delay
from celery_morgue.tui.widgets.dlq_pane import DLQPane
from tests.helpers import NOW, PROFILE, frozen_clock, screen_text


def entry(n: int) -> Entry:
    """Entry number ``n``; a higher number is a newer entry."""
    return Entry(
        id=f"{1_700_000_000_000 + n}-0",
        task_id=f"task-{n}",
        task="proj.tasks.example",
        queue="celery",
        args=[n],
        kwargs={},
        exception="ValueError",
        message=f"failure {n}",
        traceback="",
        retries=0,
        hostname="w1@host",
        failed_at="2027-01-15T07:59:00+00:00",
    )


def newest_first(*numbers: int) -> list[Entry]:
    return [entry(n) for n in sorted(numbers, reverse=True)]


def head(items: list[Entry], total: int, more: bool) -> DeadLettersRefreshed:
    page = Page(queue="celery", total=total, items=items, next=items[-1].id if more else None)
    info = QueueInfo("celery", total, None, None)
    return DeadLettersRefreshed([info], page, taken_at=NOW)


def numbers(pane: DLQPane) -> list[int]:
    return [int(key.split("-")[0]) - 1_700_000_000_000 for key in pane.order]


def shown(pane: DLQPane) -> list[int]:
    return [
        int((row.key.value or "").split("-")[0]) - 1_700_000_000_000
        for row in pane.table.ordered_rows
    ]


def run(scenario: Callable[[Pilot[None], MorgueApp], Awaitable[None]]) -> None:
    async def main() -> None:
        app = MorgueApp(PROFILE, clock=frozen_clock, poll=False)
        async with app.run_test(size=(100, 30)) as pilot:
            await scenario(pilot, app)

    asyncio.run(main())


async def feed(pilot: Pilot[None], app: MorgueApp, *messages: object) -> None:
    for message in messages:
        app.dashboard.post_message(message)  # type: ignore[arg-type]
        await pilot.pause()
    await pilot.pause()


def celery_pane(app: MorgueApp) -> DLQPane:
    pane = app.dashboard.pane("celery")
    assert pane is not None
    return pane


def test_pages_append_older_entries_and_refreshes_merge_by_id() -> None:
    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        await feed(pilot, app, head(newest_first(*range(11, 21)), 20, more=True))
        pane = celery_pane(app)
        assert numbers(pane) == list(range(20, 10, -1))
        older = Page("celery", 20, newest_first(*range(1, 11)), next=None)
        await feed(pilot, app, PageLoaded(older, after=pane.oldest_loaded))
        assert numbers(pane) == list(range(20, 0, -1))
        assert pane.exhausted

        # Two arrived, 15 was deleted elsewhere: a refresh covering what is loaded says so.
        refreshed = [entry(n) for n in range(22, 0, -1) if n not in (15, 21)]
        await feed(pilot, app, head(refreshed, 20, more=False))
        assert numbers(pane) == [n for n in range(22, 0, -1) if n not in (15, 21)]
        assert shown(pane) == numbers(pane)

    run(scenario)


def test_a_stale_page_is_dropped() -> None:
    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        await feed(pilot, app, head(newest_first(*range(11, 21)), 20, more=True))
        pane = celery_pane(app)
        stale = Page("celery", 20, newest_first(*range(1, 6)), next=None)
        await feed(pilot, app, PageLoaded(stale, after=entry(3).id))
        assert numbers(pane) == list(range(20, 10, -1))
        assert not pane.exhausted

    run(scenario)


def test_a_head_that_no_longer_joins_what_was_loaded_replaces_it() -> None:
    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        await feed(pilot, app, head(newest_first(*range(1, 11)), 10, more=False))
        pane = celery_pane(app)
        # Fifty arrived since: the head (of ten) does not reach what was loaded; keeping the
        # old rows would leave a gap that paging would never fill.
        await feed(pilot, app, head(newest_first(*range(51, 61)), 60, more=True))
        assert numbers(pane) == list(range(60, 50, -1))
        assert not pane.exhausted
        assert pane.newest_seen == entry(60).id

    run(scenario)


def test_the_cursor_stays_on_its_entry_when_new_ones_arrive() -> None:
    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        await feed(pilot, app, head(newest_first(*range(1, 11)), 10, more=False))
        pane = celery_pane(app)
        pane.table.move_cursor(row=pane.table.get_row_index(entry(7).id))
        await pilot.pause()
        await feed(pilot, app, head(newest_first(*range(1, 14)), 13, more=False))
        assert shown(pane)[:3] == [13, 12, 11]
        assert pane.selected_entry is not None and pane.selected_entry.id == entry(7).id

    run(scenario)


def test_the_filter_is_read_by_the_server_and_pages_of_the_old_one_are_dropped() -> None:
    """The ``/`` text is the message substring, matched by the server (as ``--grep``): the pane
    forgets its rows and shows what a page read under the filter brings, nothing else."""

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        items = newest_first(*range(1, 6))
        items[2] = dataclasses.replace(items[2], exception="KeyError", message="[b]x[/b]")
        await feed(pilot, app, head(items, 5, more=False))
        pane = celery_pane(app)
        pane.filter_text = "[b]x"
        await pilot.pause()
        grep = EntryFilter(grep="[b]x")
        assert pane.entry_filter == grep
        assert shown(pane) == [] and not pane.loaded_once  # loaded rows are not filtered here
        # A poll's head read before the filter was typed is not the filter's.
        await feed(pilot, app, head(items, 5, more=False))
        assert shown(pane) == []
        matching = Page("celery", 1, [items[2]], next=None)
        await feed(pilot, app, PageLoaded(matching, after=None, flt=grep))
        assert shown(pane) == [3]
        assert pane.total == 1
        assert 'celery · 1 · "[b]x"' in screen_text(app)  # literally: not markup

        pane.filter_text = ""
        await pilot.pause()
        await feed(pilot, app, PageLoaded(matching, after=None, flt=grep))  # stale now
        assert shown(pane) == []
        await feed(pilot, app, head(items, 5, more=False))
        assert shown(pane) == [5, 4, 3, 2, 1]

    run(scenario)


def test_a_failed_poll_shows_the_banner_with_the_backoff_delay() -> None:
    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        board = app.dashboard
        for attempt in (1, 2, 3):
            await feed(pilot, app, RedisUnavailable("Redis does not answer: boom", NOW))
            assert board.dlq_poll.failures == attempt
        banner = str(board.banner.render())
        assert "Retrying in 4 s" in banner and "attempt 4" in banner
        assert board.status_line.status.connected is False
        await feed(pilot, app, head(newest_first(1), 1, more=False))
        assert not board.banner.has_class("-visible")
        assert board.dlq_poll.failures == 0

    run(scenario)


def test_reconnect_delays_come_from_core_backoff() -> None:
    delays = [reconnect_delay(failures) for failures in range(1, 9)]
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]
    assert delays[3] == calculate_backoff(3, base=1.0, max_delay=RECONNECT_MAX)


def test_ages_fit_their_column_at_every_scale() -> None:
    from celery_morgue.tui.cells import AGE_WIDTH, format_age

    samples = [0, 59, 60, 599, 600, 3_599, 3_600, 35_999, 36_000, 86_399, 86_400, 10**6, 10**9]
    for seconds in samples:
        assert len(format_age(seconds)) <= AGE_WIDTH, (seconds, format_age(seconds))
    assert [format_age(s) for s in (42, 243, 1_390, 7_500, 50_400, 273_600, 10**6)] == [
        "42s",
        "4m03s",
        "23m",
        "2h05m",
        "14h",
        "3d04h",
        "11d",
    ]
