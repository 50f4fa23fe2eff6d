"""What a refresh repaints: nothing when nothing changed, one row when one row changed.

An idle dashboard over SSH costs what it sends to the terminal, and Textual sends the regions a
widget marks dirty. These tests read those regions (a recording subclass of the table, or the
dirty regions Textual keeps for the next paint) instead of timing anything. The ages the rows
show are coarse (:func:`coarse_age`), so an old row's text, and so its row, rarely changes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import itertools
from collections.abc import Awaitable, Callable

import pytest
from rich.bar import Bar
from rich.console import Console
from rich.text import Text
from textual.app import App, ComposeResult
from textual.coordinate import Coordinate
from textual.geometry import Region
from textual.pilot import Pilot
from textual.widget import Widget

from celery_morgue.core.dlq import Page, QueueInfo
from celery_morgue.core.entry import Entry, UnreadableEntry
from celery_morgue.core.zombies import ActiveTask, ClusterSnapshot
from celery_morgue.tui.app import MorgueApp
from celery_morgue.tui.cells import (
    AGE_WIDTH,
    BAR_STEPS,
    BAR_WIDTH,
    AgeBar,
    BarColours,
    Keyed,
    age_bar,
    coarse_age,
    task_cells,
)
from celery_morgue.tui.messages import ClusterRefreshed, DeadLettersRefreshed
from celery_morgue.tui.profiles import Profile
from celery_morgue.tui.widgets.tables import ColumnSpec, LiveTable

NOW = 1_800_000_000.0
# Nothing listens here: with polling off the app never connects.
PROFILE = Profile(name="repaint", url="redis://127.0.0.1:9/0")

# -- the table on its own --------------------------------------------------------------------

COLUMNS = [ColumnSpec("Id", "id", 6), ColumnSpec("Name", "name")]


class RecordingTable(LiveTable):
    """Records every refresh asked of it: ``()`` for the whole table, else the regions."""

    def __init__(self) -> None:
        # Before DataTable's own __init__, which refreshes already.
        self.refreshes: list[tuple[Region, ...]] = []
        super().__init__(COLUMNS, order_column="id")

    def refresh(
        self,
        *regions: Region,
        repaint: bool = True,
        layout: bool = False,
        recompose: bool = False,
    ) -> RecordingTable:
        self.refreshes.append(regions)
        super().refresh(*regions, repaint=repaint, layout=layout, recompose=recompose)
        return self


class TableApp(App[None]):
    def compose(self) -> ComposeResult:
        yield RecordingTable()


def rows(names: dict[str, str]) -> dict[str, dict[str, object]]:
    """Fresh cell objects each call: equal values, never the same objects."""
    return {key: {"id": Keyed(key, Text(key)), "name": Text(name)} for key, name in names.items()}


NAMES = {f"r{n}": f"row number {n}" for n in range(6)}


def run_table(scenario: Callable[[Pilot[None], RecordingTable], Awaitable[None]]) -> None:
    async def main() -> None:
        app = TableApp()
        async with app.run_test(size=(60, 12)) as pilot:
            table = app.query_one(RecordingTable)
            table.show(rows(NAMES), list(NAMES))
            await pilot.pause()
            table.refreshes.clear()
            await scenario(pilot, table)

    asyncio.run(main())


def test_showing_identical_rows_refreshes_nothing() -> None:
    async def scenario(pilot: Pilot[None], table: RecordingTable) -> None:
        for _ in range(3):
            table.show(rows(NAMES), list(NAMES))
            await pilot.pause()
        assert table.refreshes == []

    run_table(scenario)


def test_a_changed_cell_repaints_that_cell_alone_and_shows_the_new_text() -> None:
    async def scenario(pilot: Pilot[None], table: RecordingTable) -> None:
        header = table.header_height
        assert "row number 2" in table.render_line(header + 2).text  # now in the line cache
        table.show(rows({**NAMES, "r2": "renamed"}), list(NAMES))
        assert table.refreshes, "the changed cell was not repainted"
        assert all(table.refreshes), f"a whole-table refresh: {table.refreshes}"
        regions = [region for regions in table.refreshes for region in regions]
        # The id column, unchanged, is left alone.
        name_starts = table.ordered_columns[0].get_render_width(table)
        assert {(region.y, region.height) for region in regions} == {(header + 2, 1)}
        assert all(region.x >= name_starts for region in regions), regions
        await pilot.pause()
        # What the terminal gets for that line: the new text, not a cached old row.
        assert "renamed" in table.render_line(header + 2).text
        assert "row number 3" in table.render_line(header + 3).text

    run_table(scenario)


def test_the_cursor_stays_on_its_row_through_a_quiet_refresh() -> None:
    async def scenario(pilot: Pilot[None], table: RecordingTable) -> None:
        table.move_cursor(row=4)
        await pilot.pause()
        table.refreshes.clear()
        table.show(rows({**NAMES, "r0": "changed above the cursor"}), list(NAMES))
        await pilot.pause()
        assert table.cursor_key == "r4"
        assert {region.y for regions in table.refreshes for region in regions} == {
            table.header_height
        }

    run_table(scenario)


def test_two_rows_that_swap_places_repaint_their_two_lines() -> None:
    async def scenario(pilot: Pilot[None], table: RecordingTable) -> None:
        table.move_cursor(row=3)
        await pilot.pause()
        table.refreshes.clear()
        header = table.header_height
        order = ["r0", "r3", "r2", "r1", "r4", "r5"]
        table.show(rows(NAMES), order)
        assert all(table.refreshes), f"a whole-table refresh: {table.refreshes}"
        painted = {region.y for regions in table.refreshes for region in regions}
        # Lines 1 and 3 (the swapped rows), and the cursor's old and new rows: the same two.
        assert painted == {header + 1, header + 3}
        await pilot.pause()
        assert [row.key.value for row in table.ordered_rows] == order
        assert table.cursor_key == "r3"
        assert "row number 3" in table.render_line(header + 1).text
        assert "row number 1" in table.render_line(header + 3).text

    run_table(scenario)


# -- coarse ages -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "—"),
        (-3, "0s"),  # a worker's clock a little ahead of ours
        (0, "0s"),
        (43.9, "43s"),
        (59.99, "59s"),
        (60, "1m"),
        (119, "1m"),
        (725, "12m"),
        (3_599, "59m"),
        (3_600, "1h"),
        (3 * 3_600 + 3_599, "3h"),
        (86_399, "23h"),
        (86_400, "1d"),
        (9_999 * 86_400 + 86_399, "9999d"),
        (10_000 * 86_400, "27y"),
    ],
)
def test_coarse_age_buckets_and_boundaries(seconds: float | None, text: str) -> None:
    assert coarse_age(seconds) == text
    assert len(text) <= AGE_WIDTH


def test_older_ages_change_less_often() -> None:
    def changes(start: int, stop: int) -> int:
        texts = [coarse_age(second) for second in range(start, stop)]
        return sum(1 for before, after in itertools.pairwise(texts) if before != after)

    hour, day = 3_600, 86_400
    assert changes(0, 60) == 59  # every second of the first minute
    assert changes(60, hour) == 58  # once a minute in the first hour
    assert changes(hour, 3 * hour) == 1  # once an hour: 1h, then 2h
    assert changes(2 * day, 3 * day) == 0  # a two-day-old row: once a day
    assert changes(2 * day, 3 * day + 1) == 1


# -- the age bar -----------------------------------------------------------------------------

COLOURS = BarColours(calm="green", warning="yellow", past="red", background="grey23")


def task(age: float, *, limit: float = 300.0, grace: float = 30.0) -> ActiveTask:
    return ActiveTask(
        id="aaaaaaaa-0000-4000-8000-000000000001",
        name="shop.tasks.generate_report",
        worker="celery@worker-1",
        pid=4242,
        started_at=dt.datetime.fromtimestamp(NOW - age, dt.UTC),
        age=age,
        hard_limit=limit,
        zombie=age > limit + grace,
        redelivered=False,
        args="()",
        kwargs="{}",
    )


def drawn(renderable: object) -> str:
    console = Console(width=BAR_WIDTH, color_system=None, legacy_windows=False)
    with console.capture() as capture:
        console.print(renderable, end="")
    return capture.get()


@pytest.mark.parametrize("age", [0.0, 1.0, 9.3, 9.4, 150.0, 239.9, 240.0, 299.9, 300.0, 900.0])
def test_the_bar_draws_the_age_down_to_a_quarter_cell(age: float) -> None:
    step = 300.0 / BAR_STEPS
    exact = Bar(size=300.0, begin=0, end=min(age // step * step, 300.0), width=BAR_WIDTH)
    assert drawn(age_bar(task(age), COLOURS)) == drawn(exact)


def test_bars_that_draw_the_same_are_equal_and_a_visible_step_is_not() -> None:
    step = 300.0 / BAR_STEPS
    assert BAR_STEPS == BAR_WIDTH * 4
    assert age_bar(task(10.0), COLOURS) == age_bar(task(10.0 + step / 2), COLOURS)
    assert age_bar(task(10.0), COLOURS) != age_bar(task(10.0 + step), COLOURS)
    # Past the limit the bar is full, and still changes when the task turns zombie.
    assert age_bar(task(300.0), COLOURS) == AgeBar(BAR_STEPS, "red", "grey23")
    assert task_cells(task(320.0), COLOURS, 30) != task_cells(task(331.0), COLOURS, 30)


# -- the dashboard's panes, fed as messages with polling off ---------------------------------


def repainted_lines(widget: Widget, change: Callable[[], object]) -> set[int] | None:
    """Lines of ``widget`` that ``change`` marks for the next paint; None: the whole widget.

    Read from the dirty regions Textual keeps for its next paint. A region left there from
    before ``change`` (Textual drops some unpainted, after a layout change) is not counted.
    """
    stale = set(widget._repaint_regions)
    change()
    regions = set(widget._repaint_regions) - stale
    if any(region.size == widget.outer_size for region in regions):
        return None
    return {y for region in regions for y in range(region.y, region.bottom)}


async def painted(pilot: Pilot[None], widget: Widget) -> None:
    """Wait until Textual has taken the repaint that ``widget`` asked for."""
    for _ in range(50):
        await pilot.pause()
        if not widget._repaint_required:
            return
    raise AssertionError(f"{widget!r} was never painted")


def plain(cell: object) -> str:
    return cell.text.plain if isinstance(cell, Keyed) else str(cell)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def run_dashboard(scenario: Callable[[Pilot[None], MorgueApp, Clock], Awaitable[None]]) -> None:
    async def main() -> None:
        clock = Clock()
        app = MorgueApp(PROFILE, clock=clock, poll=False)
        async with app.run_test(size=(100, 30)) as pilot:
            await scenario(pilot, app, clock)

    asyncio.run(main())


def entry(ago: float, exception: str) -> Entry:
    failed = NOW - ago
    return Entry(
        id=f"{int(failed * 1000)}-0",
        task_id=f"task-{ago:g}",
        task="shop.tasks.charge_card",
        queue="celery",
        args=[],
        kwargs={},
        exception=exception,
        message="",
        traceback="",
        retries=0,
        hostname="celery@worker-1",
        failed_at=dt.datetime.fromtimestamp(failed, dt.UTC).isoformat(),
    )


ENTRIES: list[Entry | UnreadableEntry] = [
    entry(58, "PaymentDeclined"),
    entry(600, "ValueError"),
    entry(7_300, "OSError"),
]


def head() -> DeadLettersRefreshed:
    page = Page(queue="celery", total=3, items=ENTRIES, next=None)
    return DeadLettersRefreshed([QueueInfo("celery", 3, None, None)], page, taken_at=NOW)


def test_a_dlq_refresh_repaints_only_the_rows_whose_age_text_moved() -> None:
    async def scenario(pilot: Pilot[None], app: MorgueApp, clock: Clock) -> None:
        app.dashboard.post_message(head())
        await pilot.pause()
        pane = app.dashboard.pane("celery")
        assert pane is not None
        table = pane.table
        page = head().head
        assert page is not None
        await painted(pilot, table)

        clock.now += 1  # 58 s -> 59 s: only the newest row's age moves
        first_row = table.content_offset.y + table.header_height
        assert repainted_lines(table, lambda: pane.apply_head(page)) == {first_row}
        assert plain(table.get_cell_at(Coordinate(0, 0))) == "59s"
        await painted(pilot, table)

        clock.now += 30  # 59 s -> 89 s, 600 s -> 630 s (still 10m), 7300 s -> 7330 s (2h)
        assert repainted_lines(table, lambda: pane.apply_head(page)) == {first_row}
        assert [plain(table.get_cell_at(Coordinate(row, 0))) for row in range(3)] == [
            "1m",
            "10m",
            "2h",
        ]
        await painted(pilot, table)

        # No time passed: nothing to repaint.
        assert repainted_lines(table, lambda: pane.apply_head(page)) == set()

    run_dashboard(scenario)


def cluster(*tasks: ActiveTask) -> ClusterRefreshed:
    snapshot = ClusterSnapshot(
        tasks=list(tasks),
        workers=["celery@worker-1"],
        unreachable=[],
        taken_at=dt.datetime.fromtimestamp(NOW, dt.UTC),
    )
    return ClusterRefreshed(snapshot)


def test_a_task_turning_zombie_shows_at_once_and_repaints_its_row_alone() -> None:
    steady = dataclasses.replace(task(20.0), id="bbbbbbbb-0000-4000-8000-000000000002")

    async def scenario(pilot: Pilot[None], app: MorgueApp, clock: Clock) -> None:
        pane = app.dashboard.tasks_pane
        table = pane.table
        pane.apply_snapshot(cluster(task(329.0), steady).snapshot)
        await painted(pilot, table)
        assert str(table.get_cell_at(Coordinate(0, 4))) == ""
        # Past its limit, within the grace: full, in the "past" colour.
        full = table.get_cell_at(Coordinate(0, 5))
        assert isinstance(full, AgeBar)
        assert full.filled == BAR_STEPS

        # The very next refresh that finds it past its limit plus grace marks it.
        zombie = cluster(task(331.0), steady).snapshot
        first_row = table.content_offset.y + table.header_height
        assert repainted_lines(table, lambda: pane.apply_snapshot(zombie)) == {first_row}
        assert str(table.get_cell_at(Coordinate(0, 4))) == "ZOMBIE"
        assert table.get_cell_at(Coordinate(0, 5)) == full
        calm = table.get_cell_at(Coordinate(1, 5))
        assert isinstance(calm, AgeBar)
        assert full.colour != calm.colour
        await painted(pilot, table)
        assert "ZOMBIE" in table.render_line(table.header_height).text

    run_dashboard(scenario)


def test_an_unchanged_refresh_repaints_neither_pane_nor_the_status_line() -> None:
    # A border title assigned again, even to the same text, repaints the whole pane, table
    # included; a status line updated with a relayout repaints every pane's scrollbars.
    async def scenario(pilot: Pilot[None], app: MorgueApp, clock: Clock) -> None:
        app.dashboard.post_message(head())
        await pilot.pause()
        dlq_pane = app.dashboard.pane("celery")
        assert dlq_pane is not None
        tasks_pane = app.dashboard.tasks_pane
        snapshot = cluster(task(20.0)).snapshot
        tasks_pane.apply_snapshot(snapshot)
        for widget in (dlq_pane, dlq_pane.table, tasks_pane, tasks_pane.table):
            await painted(pilot, widget)
        page = head().head
        assert page is not None

        assert repainted_lines(dlq_pane, lambda: dlq_pane.apply_head(page)) == set()
        assert repainted_lines(tasks_pane, lambda: tasks_pane.apply_snapshot(snapshot)) == set()
        assert str(dlq_pane.border_title) == "celery · 3"
        assert str(tasks_pane.border_title) == "Active tasks · 1"

        # Each poll moves the status line's "updated" time; it stays one line, so no relayout.
        status_line = app.dashboard.status_line
        await painted(pilot, status_line)
        status_line.change(refreshed_at=NOW + 61)
        assert not app.screen._layout_required
        assert status_line._repaint_required

        # A change of text still shows.
        zombie = dataclasses.replace(task(331.0), id="cccccccc-0000-4000-8000-000000000003")
        tasks_pane.apply_snapshot(cluster(task(20.0), zombie).snapshot)
        assert str(tasks_pane.border_title) == "Active tasks · 2, 1 ZOMBIE"

    run_dashboard(scenario)
