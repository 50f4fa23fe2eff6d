"""The UI's polls under a text filter do not rescan the queue each time, nor wait for it:
real Redis, and Pilot.

A text filter's count is a scan of the whole queue. The pane polls every few seconds, so a
poll that recounted would keep the shared Redis scanning for as long as the filter is on; and a
page that waited for the count would show no row for seconds on a big queue.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
import redis
from textual.pilot import Pilot

from celery_morgue.core import DeadLetterQueue
from celery_morgue.core.dlq import Page
from celery_morgue.core.filters import EntryFilter
from celery_morgue.tui.app import MorgueApp
from celery_morgue.tui.connection import connect_profile
from celery_morgue.tui.demo.processes import RedisServer
from celery_morgue.tui.monitor import UNCOUNTED, Monitor
from tests.helpers import make_entry, open_queue, profile_for, until, with_app

QUEUE = "text-q"
NEEDLE = EntryFilter(grep="needle")


def commands(client: redis.Redis) -> int:
    return int(client.info("stats")["total_commands_processed"])


def test_a_text_filter_poll_counts_once_and_an_action_recounts(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    dlq = DeadLetterQueue(redis_client)
    dlq.clear(QUEUE)
    # Most of the queue does not match, and the matches are the newest: a page is one read.
    assert all(dlq.add_many(make_entry(f"hay-{n}", QUEUE) for n in range(20_000)))
    needles = dlq.add_many(
        make_entry(f"needle-{n}", QUEUE, message=f"needle {n}") for n in range(60)
    )
    with connect_profile(profile_for(redis_server.url)) as connection:
        monitor = Monitor(connection)
        # The rows come first, uncounted; the count is claimed once and run apart.
        first = monitor.page(QUEUE, None, 50, NEEDLE)
        assert first.total == UNCOUNTED and len(first.items) == 50
        assert monitor.claim_text_count(QUEUE, NEEDLE)
        assert not monitor.claim_text_count(QUEUE, NEEDLE)  # one count at a time
        before = commands(redis_client)
        assert monitor.count_text(QUEUE, NEEDLE) == 60
        counting = commands(redis_client) - before

        before = commands(redis_client)
        again = monitor.page(QUEUE, None, 50, NEEDLE)
        cached_poll = commands(redis_client) - before
        assert again.total == 60
        assert not monitor.claim_text_count(QUEUE, NEEDLE)  # counted just now
        assert cached_poll * 4 < counting, (cached_poll, counting)

        # What this UI does itself is recounted at once; a confirmation always counts afresh.
        assert monitor.delete(QUEUE, str(needles[0])) == 1
        assert monitor.claim_text_count(QUEUE, NEEDLE)
        assert monitor.count_text(QUEUE, NEEDLE) == 59
        assert monitor.page(QUEUE, None, 50, NEEDLE).total == 59
        assert monitor.count(QUEUE, NEEDLE, str(needles[-1])) == 59


def test_under_a_text_filter_the_rows_show_before_one_count_that_fills_the_total(
    redis_server: RedisServer, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    dlq = DeadLetterQueue(redis_client)
    dlq.clear(QUEUE)
    assert all(dlq.add_many(make_entry(f"hay-{n}", QUEUE) for n in range(500)))
    assert all(
        dlq.add_many(make_entry(f"needle-{n}", QUEUE, message=f"needle {n}") for n in range(40))
    )
    release = threading.Event()
    started: list[EntryFilter] = []

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        monitor = app.monitor
        count_text = monitor.count_text

        def held_count(queue: str, flt: EntryFilter) -> int | None:
            started.append(flt)
            assert release.wait(30), "the test never released the count"
            return count_text(queue, flt)

        monkeypatch.setattr(monitor, "count_text", held_count)
        found = await open_queue(pilot, app, QUEUE)
        await pilot.press("slash", *"needle", "enter")
        await until(pilot, lambda: len(found.order) == 40, what="the matching rows, uncounted")
        await until(pilot, lambda: "counting…" in str(found.border_title), what="counting…")
        assert started == [NEEDLE] and found.total is None

        # Two polls while the count runs: their rows are read, no second count starts.
        pages: list[int] = []
        page = monitor.page

        def counted_page(*args: Any, **kwargs: Any) -> Page:
            pages.append(1)
            return page(*args, **kwargs)

        monkeypatch.setattr(monitor, "page", counted_page)
        for expected in (1, 2):
            app.dashboard.dlq_poll.run_now()
            await until(pilot, lambda n=expected: len(pages) >= n, what=f"poll {expected}")  # type: ignore[misc]
        await until(pilot, lambda: not poll_running(app), what="the polls done")
        assert started == [NEEDLE] and found.total is None

        release.set()
        await until(pilot, lambda: found.total == 40, what="the total, once counted")
        assert "needle" in str(found.border_title) and "40" in str(found.border_title)
        assert started == [NEEDLE]

        # Matches arriving before the next count (TEXT_RECOUNT_SECONDS): the rows, with a "+".
        dlq.add_many(make_entry(f"late-{n}", QUEUE, message=f"needle {n}") for n in range(2))
        app.dashboard.dlq_poll.run_now()
        await until(pilot, lambda: len(found.order) == 42, what="the arrivals shown")
        assert "42+" in str(found.border_title) and found.total == 40
        assert started == [NEEDLE]

    try:
        with_app(profile_for(redis_server.url, refresh=600), scenario, size=(120, 30))
    finally:
        release.set()


def poll_running(app: MorgueApp) -> bool:
    return any(w.group == "dlq-poll" and not w.is_finished for w in app.workers)
