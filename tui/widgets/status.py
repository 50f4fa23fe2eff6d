"""The status line (profile, Redis, last refresh, workers) and the connection-lost banner."""

from __future__ import annotations

from dataclasses import dataclass, replace

from rich.text import Text
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
    DEFAULT_CSS = """
    StatusLine {
        height: 1;
        padding: 0 1;
        text-wrap: nowrap;
        text-overflow: ellipsis;
        background: $panel;
        color: $text;
    }
    StatusLine.-disconnected {
        background: $error;
        color: $text;
    }
    """

    def __init__(self, status: Status, *, id: str | None = None) -> None:
        super().__init__(status.render(), id=id, markup=False)
        self.status = status

    def change(self, **changes: object) -> None:
        self.status = replace(self.status, **changes)  # type: ignore[arg-type]
        self.set_class(self.status.connected is False, "-disconnected")
        self.update(self.status.render())


class Banner(Static):
    """Shown only while Redis does not answer: what failed and when the next attempt is."""

    DEFAULT_CSS = """
    Banner {
        height: auto;
        max-height: 3;
        padding: 0 1;
        background: $error-muted;
        color: $text;
        display: none;
    }
    Banner.-visible {
        display: block;
    }
    """

    def show_problem(self, text: str) -> None:
        self.update(Text(text))
        self.add_class("-visible")

    def hide(self) -> None:
        self.remove_class("-visible")
