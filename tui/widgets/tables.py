"""A DataTable that moves with j/k and g/G, updates in place by row key, and fits its width."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from textual import events
from textual.binding import Binding, BindingType
from textual.coordinate import Coordinate
from textual.geometry import Size
from textual.message import Message
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey, RowKey

from celery_morgue.tui.cells import Keyed

# The flexible column never gets narrower than this, even in a terminal too narrow for it.
MIN_FLEX_WIDTH = 12


@dataclass(frozen=True)
class _Place:
    """Where the cursor was before the rows changed: its row key, and its line on screen."""

    key: str | None
    at_top: bool
    line: int


@dataclass(frozen=True)
class ColumnSpec:
    label: str
    key: str
    width: int | None = None  # None: the one column that takes the width the others leave


class LiveTable(DataTable[object]):
    """A row-cursor table whose rows are replaced wholesale by :meth:`show`.

    ``show`` removes rows that are gone, updates only the cells that changed and adds new rows,
    so the cursor stays on the same row while the data underneath it moves. A refresh that
    changes nothing repaints nothing; one that changes a cell repaints only that cell.

    With ``follow_head`` (a feed whose newest rows come first, like a dead-letter queue) rows
    that arrive above the cursor behave as a reader expects: a cursor on the top row stays on
    the top row, on the newest; a cursor further down stays on its row *and on its line of the
    screen*, the view scrolling by what arrived above it, so nothing moves under the reader.

    Every column has a fixed width but one, which takes the rest of the table's width; when
    that changes (a resize), the columns are rebuilt and :class:`LiveTable.Refit` asks the owner
    to show its rows again, cut to the new width. Fixed widths also keep refreshes cheap:
    DataTable re-measures a whole auto-width column whenever one of its cells shrinks.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j", "cursor_down", "Down (or ↓)", show=False, id="cursor_down_j"),
        Binding("k", "cursor_up", "Up (or ↑)", show=False, id="cursor_up_k"),
        # DataTable binds home/end to the first and last column, which a row cursor ignores.
        Binding(
            "g,home",
            "cursor_top",
            "Top",
            show=False,
            id="cursor_top",
            tooltip="Top row (in a DLQ pane, the newest entry)",
        ),
        Binding(
            "G,end",
            "cursor_bottom",
            "Bottom",
            show=False,
            id="cursor_bottom",
            tooltip="Bottom row (in a DLQ pane, the oldest entry loaded)",
        ),
        Binding(
            "enter",
            "select_cursor",
            "Open",
            show=False,
            id="open_row",
            tooltip="Open the entry's detail",
        ),
    ]

    class Refit(Message):
        """The flexible column changed width: show the rows again."""

    def __init__(
        self,
        columns: Sequence[ColumnSpec],
        *,
        order_column: str,
        follow_head: bool = False,
        id: str | None = None,
    ) -> None:
        super().__init__(
            id=id,
            cursor_type="row",
            zebra_stripes=False,
            # Let the age bar keep its own colour on the cursor row.
            cursor_foreground_priority="renderable",
        )
        self.specs = list(columns)
        self.order_column = order_column
        self.follow_head = follow_head
        self.flex_width = MIN_FLEX_WIDTH
        self._restore: _Place | None = None

    def on_mount(self) -> None:
        self._add_columns()

    def _wanted_flex_width(self) -> int:
        fixed = sum(spec.width for spec in self.specs if spec.width is not None)
        padding = 2 * self.cell_padding * len(self.specs)
        # Room for the vertical scrollbar is kept whether or not it shows, so that a few more
        # rows do not change every cell.
        available = self.size.width - self.styles.scrollbar_size_vertical
        return max(MIN_FLEX_WIDTH, available - fixed - padding)

    def _add_columns(self) -> None:
        self.flex_width = self._wanted_flex_width()
        for spec in self.specs:
            width = spec.width if spec.width is not None else self.flex_width
            self.add_column(spec.label, key=spec.key, width=width)

    def on_resize(self, event: events.Resize) -> None:
        if self._wanted_flex_width() == self.flex_width:
            return
        self._restore = self._place()
        self.clear(columns=True)
        self._add_columns()
        self.post_message(self.Refit())

    @property
    def cursor_key(self) -> str | None:
        if self.row_count == 0 or not self.is_valid_row_index(self.cursor_row):
            return None
        return self.ordered_rows[self.cursor_row].key.value

    def action_cursor_top(self) -> None:
        if self.row_count:
            self.move_cursor(row=0, animate=False)

    def action_cursor_bottom(self) -> None:
        if self.row_count:
            self.move_cursor(row=self.row_count - 1, animate=False)

    def _place(self) -> _Place:
        row = self.cursor_row if self.row_count else 0
        return _Place(self.cursor_key, row == 0, row - round(self.scroll_y))

    def _hold_on_screen(self, row: int, line: int) -> None:
        """Scroll so that ``row`` shows on screen ``line`` (the line it was on before).

        DataTable learns its new height only when idle, after the next refresh, and clamps a
        scroll beyond the old height; that refresh would show the rows pushed down. Every row
        is one line high, so the height is known now: set it, and scroll before any refresh.
        """
        header = self.header_height if self.show_header else 0
        height = self.row_count + header
        if self.virtual_size.height != height:
            self.virtual_size = Size(self.virtual_size.width, height)
        self.scroll_to(y=max(0, row - line), animate=False, immediate=True)

    def show(self, rows: Mapping[str, Mapping[str, object]], order: Sequence[str]) -> None:
        """Show ``rows`` (row key -> cells by column key) in ``order``.

        The cell in ``order_column`` must be a :class:`Keyed` holding the row key.
        """
        before = self._restore or self._place()
        self._restore = None
        kept_index = self.cursor_row
        columns = list(self.columns)
        with self.app.batch_update():
            existing = {row.key.value or "" for row in self.ordered_rows}
            for key in existing - rows.keys():
                self.remove_row(key)
            for key in order:
                cells = rows[key]
                if key in existing:
                    changed = {
                        column: cells[column.value or ""]
                        for column in columns
                        if self.get_cell(key, column) != cells[column.value or ""]
                    }
                    if changed:
                        self._replace_cells(key, changed)
                else:
                    self.add_row(*(cells[column.value or ""] for column in columns), key=key)
            if [row.key.value for row in self.ordered_rows] != list(order):
                if existing == set(order):
                    self._move_rows(order)
                else:
                    position = {key: index for index, key in enumerate(order)}
                    self.sort(self.order_column, key=lambda cell: _position(cell, position))
            if not self.row_count:
                return
            if self.follow_head:
                self._follow(before, kept_index, rows)
            elif before.key is not None and before.key in rows:
                self.move_cursor(row=self.get_row_index(before.key), animate=False)
            else:
                self.move_cursor(row=min(kept_index, self.row_count - 1), animate=False)

    def _replace_cells(self, key: str, changed: Mapping[ColumnKey, object]) -> None:
        """Write the ``changed`` cells of row ``key`` and repaint those cells alone.

        ``DataTable.update_cell`` refreshes the whole table for every cell it writes: each
        visible row is rendered and sent to the terminal again, which over SSH is most of what
        an idle dashboard costs. The render caches are keyed by ``_update_count``, so it must
        move for the cells to be drawn anew; cells not repainted keep what the terminal shows.
        """
        row = self._data[RowKey(key)]
        for column, value in changed.items():
            row[column] = value
        self._update_count += 1
        index = self.get_row_index(key)
        for column in changed:
            self.refresh_coordinate(Coordinate(index, self.get_column_index(column)))

    def _move_rows(self, order: Sequence[str]) -> None:
        """Put the same rows in a new ``order`` and repaint the lines whose row changed.

        ``DataTable.sort`` repaints the whole table; when two running tasks swap places (their
        ages come from two workers' replies, a few milliseconds apart) only their two lines
        need to. Every row is one line high, so a row's index is its line.
        """
        shown = [row.key.value for row in self.ordered_rows]
        locations = {RowKey(key): index for index, key in enumerate(order)}
        self._row_locations = type(self._row_locations)(locations)
        self._update_count += 1
        for index, (was, now) in enumerate(zip(shown, order, strict=True)):
            if was != now:
                self.refresh_row(index)

    def _follow(self, before: _Place, old_row: int, rows: Mapping[str, object]) -> None:
        """Place the cursor of a ``follow_head`` table after its rows changed.

        Nothing moves when nothing changed above the cursor: a view scrolled with the mouse
        wheel stays where it is between refreshes.
        """
        if before.at_top:
            if self.cursor_row != 0 or self.ordered_rows[0].key.value != before.key:
                self.move_cursor(row=0, animate=False)
                self.scroll_to(y=0, animate=False, immediate=True)
        elif before.key is not None and before.key in rows:
            row = self.get_row_index(before.key)
            if row != old_row:
                self._hold_on_screen(row, before.line)
                self.move_cursor(row=row, animate=False)
        else:
            # Its row is gone (deleted, cleared): the row now at its index, on the same line.
            self.move_cursor(row=min(old_row, self.row_count - 1), animate=False)


def _position(cell: object, position: Mapping[str, int]) -> int:
    return position.get(cell.key, len(position)) if isinstance(cell, Keyed) else len(position)
