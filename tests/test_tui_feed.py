"""The DLQ pane follows the newest failures, as each refresh brings them.

With the cursor on the top row, new entries show on top and the cursor stays on the newest.
Further down, the row under the cursor keeps its line on screen and the title counts what
arrived above it ("12 new ↑") until the cursor is back at the top. ``g``/``home`` and
``G``/``end`` go to the newest and the oldest loaded entries.

Following is the pane's own logic: those tests feed it the refreshes as messages, with no
Redis. Loading the next page and clearing run against a real Redis, written to while the
app runs. Each wait is on what the pane shows, a bounded number of pauses, never on a clock.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
from textual.pilot import Pilot

from celery_morgue.core import DeadLetterQueue
from celery_morgue.core.dlq import Page, QueueInfo
from celery_morgue.core.entry import Entry
from celery_morgue.tui.app import MorgueApp
from celery_morgue.tui.demo.processes import RedisServer
from celery_morgue.tui.messages import DeadLettersRefreshed
from celery_morgue.tui.monitor import PAGE_SIZE
from celery_morgue.tui.widgets.dlq_pane import DLQPane
from tests.helpers import (
    NOW,
    accept_if_asked,
    make_entry,
    open_queue,
    profile_for,
    screen_text,
    with_app,
    with_fed_app,
)

QUEUE = "feed-q"
# Pauses of 50 ms: far more than the refreshes (every 0.2 s) need, and bounded.
TRIES = 400


async def shown(pilot: Pilot[None], predicate: Callable[[], object], what: str) -> None:
    """Pause until the UI shows what ``predicate`` checks; fail after ``TRIES`` pauses."""
    for _ in range(TRIES):
        if predicate():
            return
        await pilot.pause(0.05)
    pytest.fail(f"never shown: {what}")


def add(dlq: DeadLetterQueue, first: int, count: int) -> list[str]:
    """Entries numbered ``first`` on, oldest first; the task id column shows ``0042-fee``."""
    ids = dlq.add_many(make_entry(f"{n:04d}-feed", QUEUE) for n in range(first, first + count))
    assert all(ids)
    return [i for i in ids if i is not None]


class FedQueue:
    """The queue as the DLQ poll brings it, fed to the dashboard as its refreshes."""

    # Stream ids of entry n: a higher number is a newer entry.
    FIRST_MS = 1_700_000_000_000

    def __init__(self, app: MorgueApp) -> None:
        self.app = app
        self.entries: list[Entry] = []  # oldest first

    def add(self, first: int, count: int) -> list[str]:
        """Entries numbered ``first`` on, oldest first, then the refresh that brings them."""
        for n in range(first, first + count):
            entry = make_entry(f"{n:04d}-feed", QUEUE)
            entry.id = f"{self.FIRST_MS + n}-0"
            self.entries.append(entry)
        total = len(self.entries)
        head = Page(queue=QUEUE, total=total, items=self.entries[::-1], next=None)
        queues = [QueueInfo(QUEUE, total, None, None)]
        self.app.dashboard.post_message(DeadLettersRefreshed(queues, head, taken_at=NOW))
        return [entry.id for entry in self.entries[-count:]]


def top_key(found: DLQPane) -> str | None:
    rows = found.table.ordered_rows
    return rows[0].key.value if rows else None


def screen_lines(app: MorgueApp) -> list[str]:
    """The lines of the screen (every one of them has a border, so none is blank)."""
    return [line for line in screen_text(app).splitlines() if line.strip()]


def line_of(app: MorgueApp, text: str) -> int:
    """The screen line that shows ``text`` (it must be on exactly one)."""
    lines = [n for n, line in enumerate(screen_lines(app)) if text in line]
    assert len(lines) == 1, (text, lines)
    return lines[0]


def first_row_line(app: MorgueApp) -> int:
    """The screen line of the DLQ table's first row: under its header, the first one on screen."""
    headers = [n for n, line in enumerate(screen_lines(app)) if "Task id" in line]
    return headers[0] + 1


def title(found: DLQPane) -> str:
    return str(found.border_title)


def test_at_the_top_new_entries_show_above_and_the_cursor_stays_on_the_newest() -> None:
    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        queue = FedQueue(app)
        queue.add(0, 30)
        found = await open_queue(pilot, app, QUEUE)
        assert found.table.cursor_row == 0
        for batch in range(3):
            (newest,) = queue.add(100 + batch, 1)

            def on_top(newest: str = newest) -> bool:
                return top_key(found) == newest

            await shown(pilot, on_top, "the new entry")
            assert found.table.cursor_key == newest
            assert found.table.cursor_row == 0 and found.table.scroll_y == 0
            # The newest entry's task id is on the first row under the header.
            assert line_of(app, f"{100 + batch:04d}-fee") == first_row_line(app)
            assert "new ↑" not in title(found)
        assert f"{QUEUE} · 33" in screen_text(app)

    with_fed_app(scenario, feed=None)


def test_further_down_the_row_stays_put_and_the_title_counts_the_new_ones() -> None:
    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        queue = FedQueue(app)
        ids = queue.add(0, 40)
        found = await open_queue(pilot, app, QUEUE)
        # Down far enough that the view has scrolled: the cursor is not on the first line.
        await pilot.press(*["j"] * 15)
        await shown(pilot, lambda: found.table.cursor_row == 15, "the cursor moved")
        chosen = found.table.cursor_key
        assert chosen == ids[-16]
        assert found.table.scroll_y > 0
        line = line_of(app, "0024-fee")

        new = queue.add(100, 12)
        await shown(pilot, lambda: "12 new ↑" in title(found), "12 new in the title")
        assert found.table.cursor_key == chosen
        assert found.table.cursor_row == 15 + 12
        assert line_of(app, "0024-fee") == line, "the row under the cursor moved on screen"
        assert "12 new ↑" in screen_text(app)

        # More arrive: the count grows, the row still does not move.
        new += queue.add(200, 3)
        await shown(pilot, lambda: "15 new ↑" in title(found), "15 new in the title")
        assert line_of(app, "0024-fee") == line

        # Back at the top: on the newest, and nothing is new any more.
        await pilot.press("g")
        await shown(pilot, lambda: found.table.cursor_row == 0, "the cursor at the top")
        assert found.table.cursor_key == new[-1]
        await shown(pilot, lambda: "new ↑" not in title(found), "the count cleared")
        assert line_of(app, "0202-fee") == first_row_line(app)
        assert "new ↑" not in screen_text(app)

    with_fed_app(scenario, feed=None)


def test_moving_up_through_the_new_entries_counts_down() -> None:
    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        queue = FedQueue(app)
        queue.add(0, 20)
        found = await open_queue(pilot, app, QUEUE)
        await pilot.press("j", "j")
        await shown(pilot, lambda: found.table.cursor_row == 2, "the cursor moved")
        queue.add(100, 5)
        await shown(pilot, lambda: "5 new ↑" in title(found), "5 new")
        # Up onto the oldest of the new ones: the four above it are still unseen.
        await pilot.press(*["k"] * 3)
        await shown(pilot, lambda: "4 new ↑" in title(found), "4 new")
        await pilot.press("home")
        await shown(pilot, lambda: "new ↑" not in title(found), "none new")
        assert found.table.cursor_row == 0

    with_fed_app(scenario, feed=None)


def test_g_and_end_go_to_the_newest_and_the_oldest_loaded_entries(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    dlq = DeadLetterQueue(redis_client)
    ids = add(dlq, 0, PAGE_SIZE + 50)

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        found = await open_queue(pilot, app, QUEUE)
        assert len(found.order) == PAGE_SIZE
        await pilot.press("G")
        # The oldest of the first page; being at the end loads the next one.
        await shown(pilot, lambda: found.table.cursor_key == ids[50], "G: the oldest loaded")
        await shown(pilot, lambda: len(found.order) == len(ids), "the next page")
        assert found.table.cursor_key == ids[50], "the page load moved the cursor"
        await pilot.press("end")
        await shown(pilot, lambda: found.table.cursor_key == ids[0], "end: the oldest of all")
        assert line_of(app, "0000-fee") > first_row_line(app)
        await pilot.press("g")
        await shown(pilot, lambda: found.table.cursor_key == ids[-1], "g: the newest")
        await pilot.press("end", "home")
        await shown(pilot, lambda: found.table.cursor_key == ids[-1], "home: the newest")
        assert found.table.scroll_y == 0
        assert line_of(app, f"{len(ids) - 1:04d}-fee") == first_row_line(app)

    with_app(profile_for(redis_server.url, refresh=600), scenario)


def test_a_clear_while_scrolled_down_keeps_the_new_entries_not_seen(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    dlq = DeadLetterQueue(redis_client)
    old = add(dlq, 0, 10)

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        found = await open_queue(pilot, app, QUEUE)
        await pilot.press("j")
        new = add(dlq, 100, 4)
        await shown(pilot, lambda: "4 new ↑" in title(found), "4 new")
        assert found.newest_seen == old[-1]
        await pilot.press("c")
        text = screen_text(app)
        assert "Removes 10 entries" in text, text
        await accept_if_asked(pilot, app)
        await shown(pilot, lambda: dlq.size(QUEUE) == 4, "the clear done")
        assert {entry.id for entry in dlq.page(QUEUE).items} == set(new)

    with_app(profile_for(redis_server.url, refresh=0.2), scenario)
