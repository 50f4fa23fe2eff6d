"""The status line (profile, Redis, last refresh, workers) and the connection-lost banner.

Their looks are in ``status.tcss``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from celery_morgue.tui.cells import format_clock_time
from celery_morgue.tui.literal import printable


@dataclass(frozen=True)
class Status:
    profile: str
    url: str  # already redacted
    connected: bool | None = None  # None: no answer yet
    refreshed_at: float | None = None
    workers: int | None = None  # that answered; the tasks pane lists the ones that did not
    readonly: bool = False
    # Hosts whose spool holds entries not in Redis yet: (host, pending), from
    # core.spool_state.spool_backlogs.
    spool: tuple[tuple[str, int], ...] = ()

    def render(self) -> Text:
        if self.connected is None:
            state = "connecting…"
        elif self.connected:
            state = "connected"
        else:
            state = "DISCONNECTED"
        refreshed = (
            f"updated {format_clock_time(self.refreshed_at)}"
            if self.refreshed_at is not None
            else "not updated yet"
        )
        if self.workers is None:
            workers = "workers ?"
        else:
            workers = f"{self.workers} worker{'s' if self.workers != 1 else ''}"
        # The URL goes last: it is the longest, and the one a narrow terminal may cut.
        name = f"{self.profile} (read-only)" if self.readonly else self.profile
        parts = [name, state, refreshed, workers]
        hosts = [f"{printable(host)} {count:,} pending" for host, count in self.spool if count]
        if hosts:
            parts.append("spool: " + ", ".join(hosts))
        parts.append(self.url)
        return Text(" │ ".join(parts), no_wrap=True, overflow="ellipsis")


class StatusLine(Static):
    """Shows :attr:`status`; set it (or :meth:`change` some of its fields) and it repaints."""

    status: reactive[Status] = reactive(Status(profile="", url=""), init=False)

    def __init__(self, status: Status, *, id: str | None = None) -> None:
        super().__init__(id=id, markup=False)
        self.status = status  # the watcher paints it

    def change(self, **changes: object) -> None:
        self.status = replace(self.status, **changes)  # type: ignore[arg-type]

    def watch_status(self, status: Status) -> None:
        self.set_class(status.connected is False, "-disconnected")
        # Always one line high: no relayout, which repainted the scrollbars of every pane.
        self.update(status.render(), layout=False)


class Banner(Static):
    """Shown only while Redis does not answer: what failed and when the next attempt is."""

    def show_problem(self, text: str) -> None:
        self.update(Text(text))
        self.add_class("-visible")

    def hide(self) -> None:
        self.remove_class("-visible")
