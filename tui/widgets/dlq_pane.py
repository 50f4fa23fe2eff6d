"""One dead-letter queue: its newest entries, loaded a page at a time as the cursor moves down.

The pane follows the newest failures: with the cursor on the top row, entries that arrive show
above it and the cursor moves onto the newest. Further down, the row under the cursor stays
where it is on screen and the title counts what arrived above it ("12 new ↑") until the cursor
is back at the top (``g`` or ``home``).

A pane can be narrowed to a failure group (chosen in the groups view): its rows then come from
the server, read under that filter, so what it shows is what its actions touch. ``space`` marks
rows and ``A`` marks every matching entry up to the newest shown, loaded or not; escape clears
the marks first, then the filter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import DataTable, Input

from celery_morgue.core.dlq import Page, StoredEntry
from celery_morgue.core.filters import EntryFilter
from celery_morgue.tui.cells import (
    AGE_WIDTH,
    SHORT_ID,
    TASK_NAME_WIDTH,
    Clock,
    Keyed,
    entry_cells,
    stream_order,
)
from celery_morgue.tui.monitor import PAGE_SIZE, RELOAD_CAP, UNCOUNTED
from celery_morgue.tui.scope import EVERY_ENTRY, GroupChoice, Scope
from celery_morgue.tui.widgets.pane import TablePane
from celery_morgue.tui.widgets.tables import ColumnSpec

# Ask for the next page when the cursor is this close to the last loaded row.
LOOKAHEAD = 10
# With a filter on, keep loading pages until this many rows match or this many pages were
# read: a page of a text filter is a bounded scan, which may bring few matches or none.
FILTER_MIN_ROWS = 30
FILTER_PAGE_CAP = 50


COLUMNS = [
    ColumnSpec("Age", "age", AGE_WIDTH),
    ColumnSpec("Task", "task", TASK_NAME_WIDTH),
    ColumnSpec("Error", "error"),
    ColumnSpec("Task id", "task_id", SHORT_ID),
]
# A marked row's age cell starts with this: a mark must show without colour too (NO_COLOR).
MARK = "✓"


@dataclass(frozen=True)
class AllMarked:
    """``A``: every entry in the pane's scope up to ``up_to`` (the newest shown when pressed),
    ``count`` of them then; loaded or not."""

    up_to: str
    count: int


class DLQPane(TablePane):
    """Entries of one queue, newest first.

    Only what the user has scrolled to is ever loaded: the first page when the pane is first
    shown, the next when the cursor nears the end. Each refresh re-reads the newest entries
    (as many as are loaded, up to ``RELOAD_CAP``) so deletions, clears and arrivals show.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        # Not in the footer, which an 80-column terminal fills already: in help and palette.
        Binding(
            "space",
            "toggle_mark",
            "Mark",
            show=False,
            id="toggle_mark",
            tooltip="Mark or unmark the row",
        ),
        Binding(
            "A",
            "mark_all",
            "Mark all",
            show=False,
            id="mark_all",
            tooltip="Mark every entry matching the filter, loaded or not",
        ),
        # Replaces the pane's escape: the marks go first, then the filter.
        Binding(
            "escape",
            "clear_filter",
            "Clear marks/filter",
            show=False,
            id="clear_marks",
            tooltip="Clear the marks; pressed again, the filter (group or text)",
        ),
    ]

    @dataclass
    class LoadMore(Message):
        """The pane wants the entries of ``queue`` matching ``flt`` after the cursor ``after``
        (``None``: the newest)."""

        pane: DLQPane
        queue: str
        after: str | None
        flt: EntryFilter

    @dataclass
    class FilterSettled(Message):
        """Enter in the filter: the text is what the user wants, worth a count of the queue
        (not each prefix typed on the way, each a scan of the whole queue)."""

        pane: DLQPane

    # The queue's length as last read, and whether a page is on its way: both in the titles.
    total: reactive[int | None] = reactive(None, init=False)
    fetching: reactive[bool] = reactive(False, init=False)

    def __init__(self, queue: str, *, clock: Clock, id: str | None = None) -> None:
        super().__init__(COLUMNS, order_column="age", follow_head=True, id=id)
        self.filter_input.placeholder = "filter: text of the message, then enter; escape clears"
        self.queue = queue
        self.clock = clock
        self.entries: dict[str, StoredEntry] = {}
        self.order: list[str] = []  # entry ids, newest first
        self.loaded_once = False
        self.exhausted = False
        self.error: str | None = None
        # The newest entry the cursor has been on: what arrived after it is "new".
        self.seen: str | None = None
        # Where the next page starts: the last page's Page.next.
        self.next_cursor: str | None = None
        self.group: GroupChoice | None = None
        self._rows_filter = EVERY_ENTRY  # what the loaded rows were read under
        self.pages_read = 0  # since the scope last changed
        self.marked: set[str] = set()
        self.all_marked: AllMarked | None = None
        # Set by the owner while a requeue of this queue runs: escape then cancels it, and the
        # subtitle shows how far it got.
        self.busy = False
        self.progress: str | None = None

    # -- what the rest of the UI asks ----------------------------------------------------

    @property
    def scope(self) -> Scope:
        return Scope(self.group, self.filter_text)

    @property
    def entry_filter(self) -> EntryFilter:
        """What the server reads for this pane, and what its actions touch.

        The ``/`` text is the message substring (the CLI's ``--grep``), matched by the server:
        a filter applied here to loaded rows would show some entries while an action under it
        touched others, the ones not loaded yet.
        """
        return self.scope.entry_filter

    @property
    def mark_count(self) -> int:
        return self.all_marked.count if self.all_marked is not None else len(self.marked)

    def is_marked(self, entry_id: str) -> bool:
        if self.all_marked is not None:
            return stream_order(entry_id) <= stream_order(self.all_marked.up_to)
        return entry_id in self.marked

    @property
    def newest_seen(self) -> str | None:
        """The newest entry id the user has seen: a clear removes up to it and nothing newer.

        That is the top row, unless entries arrived above it while the cursor was further down
        (the "new" ones, not seen yet). With a filter on, it is a matching row: entries the
        filter hides were never seen, so nothing newer than the newest matching row may go.
        """
        visible = self.order
        if self.seen is None:
            return visible[0] if visible else None
        seen = stream_order(self.seen)
        return next((i for i in visible if stream_order(i) <= seen), None)

    @property
    def new_count(self) -> int:
        """How many rows shown are newer than the newest one the cursor has been on."""
        if self.seen is None:
            return 0
        seen = stream_order(self.seen)
        count = 0
        for entry_id in self.order:  # newest first
            if stream_order(entry_id) <= seen:
                break
            count += 1
        return count

    def _more_new(self) -> bool:
        """Entries not loaded may be new too: more arrived at once than a refresh reads."""
        if self.seen is None or self.exhausted or not self.order or not self.scope.is_empty:
            return False
        return stream_order(self.order[-1]) > stream_order(self.seen)

    def newer_than(self, entry_id: str) -> int:
        """How many loaded entries are newer than ``entry_id``."""
        order = stream_order(entry_id)
        return sum(1 for i in self.order if stream_order(i) > order)

    @property
    def oldest_loaded(self) -> str | None:
        return self.order[-1] if self.order else None

    @property
    def head_limit(self) -> int:
        """How many of the newest entries a refresh re-reads to cover what is loaded.

        Exactly what is loaded (the first page, the pages scrolling fetched, and arrivals already
        shown), never more: :meth:`apply_head` makes the head the loaded list, so any margin
        here would load that many more entries on every refresh without the user scrolling.
        A head no bigger than the loaded list still overlaps it unless more entries arrived
        than it holds, which :meth:`apply_head` handles.
        """
        return min(max(PAGE_SIZE, len(self.order)), RELOAD_CAP)

    @property
    def selected_entry(self) -> StoredEntry | None:
        key = self.table.cursor_key
        return self.entries.get(key) if key is not None else None

    def entry(self, entry_id: str) -> StoredEntry | None:
        return self.entries.get(entry_id)

    # -- the scope and the marks ---------------------------------------------------------

    def narrow_to(self, group: GroupChoice | None) -> None:
        """Show only ``group``'s entries (None: the whole queue), read afresh from the server."""
        self.group = group
        self._rescope()

    def watch_filter_text(self) -> None:
        self._rescope()

    def _rescope(self) -> None:
        if self.entry_filter != self._rows_filter:
            self._rows_filter = self.entry_filter
            self._forget_rows()

    def _forget_rows(self) -> None:
        # A page on its way for the old scope is told apart by its filter and dropped.
        self.entries = {}
        self.order = []
        self.loaded_once = False
        self.exhausted = False
        self.error = None
        self.seen = None
        self.next_cursor = None
        self.pages_read = 0
        self.total = None
        self.fetching = False
        self.marked = set()
        self.all_marked = None
        self.render_rows()

    def show_progress(self, line: str | None) -> None:
        self.progress = line
        self._update_titles()

    def clear_marks(self) -> None:
        if self.marked or self.all_marked is not None:
            self.marked = set()
            self.all_marked = None
            self.render_rows()

    def action_toggle_mark(self) -> None:
        key = self.table.cursor_key
        if key is None:
            return
        if self.all_marked is not None:
            self.notify("Every matching entry is marked: escape clears the marks.", markup=False)
            return
        self.marked ^= {key}
        self.render_rows()
        self.table.action_cursor_down()

    def action_mark_all(self) -> None:
        up_to = self.newest_seen
        if up_to is None:
            self.notify("Nothing to mark.", markup=False)
            return
        count = max(0, (self.total or len(self.order)) - self.newer_than(up_to))
        self.marked = set()
        self.all_marked = AllMarked(up_to, count)
        self.render_rows()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "clear_filter":
            if self.busy:
                return False  # escape cancels the requeue running (the owner's binding)
            return (
                self.mark_count > 0
                or self.group is not None
                or super().check_action(action, parameters)
            )
        return super().check_action(action, parameters)

    def action_clear_filter(self) -> None:
        if self.mark_count:
            self.clear_marks()
            return
        self.group = None
        self.clear_filter()  # the text, which rescopes; and without text, the group:
        self._rescope()

    # -- data in -------------------------------------------------------------------------

    def apply_head(self, page: Page) -> None:
        """Merge the newest entries of the scope, read just now."""
        self.loaded_once = True
        self.error = None
        self._take_total(page.total)
        head_ids = [item.id for item in page.items]
        fresh = {item.id: item for item in page.items}
        if page.next is None:
            # The head is the whole queue.
            kept: list[str] = []
            self.exhausted = True
            self.next_cursor = None
        elif any(entry_id in fresh for entry_id in self.order):
            # The head overlaps what was loaded, so the older loaded entries continue it without a
            # gap; keep them, where the next page starts and whether the end was reached.
            oldest_head = stream_order(head_ids[-1])
            kept = [i for i in self.order if stream_order(i) < oldest_head]
            if not kept:
                self.next_cursor = page.next
        else:
            # More arrived than the head holds: what was loaded may no longer join up with it.
            kept = []
            self.exhausted = False
            self.next_cursor = page.next
        self.entries = {**fresh, **{i: self.entries[i] for i in kept}}
        self.order = head_ids + kept
        if self.marked:
            self.marked &= self.entries.keys()  # deleted meanwhile
        self.render_rows()

    def apply_page(self, page: Page, after: str | None, flt: EntryFilter = EVERY_ENTRY) -> None:
        """Append a page of older entries, if it still continues what is loaded."""
        if flt != self.entry_filter:
            return  # read for a scope the pane has left; the page for the new one is asked for
        self.fetching = False
        if after is None:
            self.apply_head(page)
            return
        if after != self.next_cursor:
            # A refresh changed the tail meanwhile: ask again from the new tail if still needed.
            self._maybe_load_more()
            return
        self._take_total(page.total)
        for item in page.items:
            if item.id not in self.entries:
                self.entries[item.id] = item
                self.order.append(item.id)
        self.exhausted = page.next is None
        self.next_cursor = page.next
        self.pages_read += 1
        self.render_rows()

    def _take_total(self, total: int) -> None:
        # A text filter's page comes uncounted until its count (a worker of the owner) lands:
        # keep the total shown till then, a number that lags rather than one that flickers.
        if total != UNCOUNTED:
            self.total = total

    def on_input_submitted(self, event: Input.Submitted) -> None:
        super().on_input_submitted(event)
        if self.filter_text:
            self.post_message(self.FilterSettled(self))
        self.call_after_refresh(self._update_titles)  # once the focus has left the input

    def fetch_skipped(self) -> None:
        """Nothing will answer the last request (polling is off)."""
        self.fetching = False

    def page_failed(self, error: str) -> None:
        self.fetching = False
        self.error = error
        self.render_rows()

    # -- showing -------------------------------------------------------------------------

    def render_rows(self) -> None:
        if not self.table.columns:
            return  # not mounted yet: on_mount adds the columns, then renders
        now = self.clock()
        visible = self.order
        width = self.table.flex_width
        rows = {i: entry_cells(self.entries[i], now, width) for i in visible}
        if self.mark_count:
            for entry_id, cells in rows.items():
                if self.is_marked(entry_id):
                    age = cells["age"]
                    assert isinstance(age, Keyed)
                    cells["age"] = Keyed(entry_id, Text.assemble((MARK, "bold"), age.text))
        self.table.show(rows, visible)
        if not self.loaded_once:
            self.show_placeholder(self.error or "Loading…")
        elif not self.order and self.scope.is_empty:
            self.show_placeholder("No entries.")
        elif not self.order:
            searching = "" if self.exhausted else " so far (searching older entries)"
            self.show_placeholder(f"No entries match {self.scope.title}{searching}.")
        else:
            self.show_placeholder(None)
        self._note_cursor()
        self._update_titles()
        self._maybe_load_more()

    def _note_cursor(self) -> None:
        """The entry under the cursor, and everything older, counts as seen."""
        key = self.table.cursor_key
        if key is not None and (self.seen is None or stream_order(key) > stream_order(self.seen)):
            self.seen = key

    def _update_titles(self) -> None:
        if self.total is not None and self.filter_text and len(self.order) > self.total:
            count = f"{len(self.order):,}+"  # arrivals since the text filter's last count
        elif self.total is not None:
            count = f"{self.total:,}"
        elif self.loaded_once and self.filter_text and not self.filter_input.has_focus:
            count = "counting…"  # the rows are shown; their total is a scan still running
        else:
            count = "…"
        new = self.new_count
        arrived = f" · {new:,}{'+' if self._more_new() else ''} new ↑" if new else ""
        scope = self.scope
        narrowed = "" if scope.is_empty else f" · {scope.title}"
        title = f"{self.queue} · {count}{arrived}{narrowed}"
        subtitle = f"{len(self.order):,} loaded" if self.loaded_once else ""
        if self.all_marked is not None:
            subtitle = f"all {self.all_marked.count:,} marked · {subtitle}"
        elif self.marked:
            subtitle = f"{len(self.marked):,} marked · {subtitle}"
        if self.fetching:
            subtitle = f"{subtitle} · loading…" if subtitle else "loading…"
        if self.progress is not None:
            subtitle = self.progress  # what the user waits for, over what is loaded
        self.set_titles(title, subtitle)

    def watch_total(self) -> None:
        self._update_titles()

    def watch_fetching(self) -> None:
        self._update_titles()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._note_cursor()
        self._update_titles()
        self._maybe_load_more()

    def on_show(self) -> None:
        self._maybe_load_more()

    def _maybe_load_more(self) -> None:
        if self.fetching or not self.display:
            return
        if not self.loaded_once:
            if self.error is None:
                self._request(None)
            return
        if self.exhausted or self.error is not None:
            return
        rows = self.table.row_count
        near_end = rows > 0 and self.table.cursor_row >= rows - LOOKAHEAD
        # A page of a text filter may hold few matches, or none, with more to scan after it.
        filter_starved = (
            not self.scope.is_empty and rows < FILTER_MIN_ROWS and self.pages_read < FILTER_PAGE_CAP
        )
        if near_end or filter_starved:
            self._request(self.next_cursor)

    def _request(self, after: str | None) -> None:
        self.fetching = True
        self.post_message(self.LoadMore(self, self.queue, after, self.entry_filter))

    def retry_load(self) -> None:
        """After a failed page: try again (called when Redis answers again)."""
        if self.error is not None:
            self.error = None
            self._maybe_load_more()
