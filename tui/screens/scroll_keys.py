"""The keys of a screen that is one scrolled view (the entry detail, the help)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widget import Widget

# In the BINDINGS of every screen that mixes in ScrollKeys (a mixin's own BINDINGS would not
# be merged: see ScrollKeys). The ids are the tables' (``cursor_down_j``...), so one keymap
# entry remaps both. Priority, because the focused VerticalScroll binds home, end and the page
# keys itself, to animated scrolls; an Input on the screen would still get its keys, which
# Textual takes out of every binding above it.
SCROLL_KEYS = [
    Binding("j", "scroll('down')", "Down", show=False, priority=True, id="cursor_down_j"),
    Binding("k", "scroll('up')", "Up", show=False, priority=True, id="cursor_up_k"),
    Binding("g,home", "scroll('top')", "Top", show=False, priority=True, id="cursor_top"),
    Binding("G,end", "scroll('bottom')", "Bottom", show=False, priority=True, id="cursor_bottom"),
    Binding(
        "pagedown", "scroll('page_down')", "Page down", show=False, priority=True, id="page_down"
    ),
    Binding("pageup", "scroll('page_up')", "Page up", show=False, priority=True, id="page_up"),
]

if TYPE_CHECKING:
    _Mixin = Widget
else:
    # A plain class at run time: Textual takes a screen's CSS type names and DEFAULT_CSS along
    # its first base that is a node only, and merges BINDINGS only from nodes.
    _Mixin = object


class ScrollKeys(_Mixin):
    """What :data:`SCROLL_KEYS` do to the screen's VerticalScroll: j/k a line, g/G (or
    home/end) to either end, the page keys a page. ``class X(ScrollKeys, Screen[...])``."""

    def action_scroll(self, where: str) -> None:
        view = self.query_one(VerticalScroll)
        page = view.scrollable_content_region.height
        # At once, not animated and not deferred to the next refresh: a held key repeats
        # faster than either, and every repeat would read the same target line, so the view
        # would barely move.
        if where == "down":
            view.scroll_down(animate=False, immediate=True)
        elif where == "up":
            view.scroll_up(animate=False, immediate=True)
        elif where == "top":
            view.scroll_home(animate=False, immediate=True)
        elif where == "bottom":
            view.scroll_end(animate=False, immediate=True)
        elif where == "page_down":
            view.scroll_relative(y=page, animate=False, immediate=True)
        elif where == "page_up":
            view.scroll_relative(y=-page, animate=False, immediate=True)
