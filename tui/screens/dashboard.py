"""The main screen: the status line, the dead letters and the active tasks, polled.

The screen holds the layout, the polls and the status line. The keys that act on the data are
the widgets' own: :class:`DeadLetters` (delete, requeue, clear, groups) and :class:`TasksPane`
(revoke); the footer shows those of the focused widget, as Textual finds them in the focus
chain. All I/O runs in thread workers that post :mod:`tui.messages` back; the handlers here
hand the results to the widgets and schedule the next poll once the last one has finished.
"""

from __future__ import annotations

from typing import ClassVar

from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Static

from celery_morgue.core.dlq import StoredEntry
from celery_morgue.core.filters import EntryFilter
from celery_morgue.core.urls import redact_url
from celery_morgue.tui.cells import Clock, format_clock_time
from celery_morgue.tui.messages import (
    ActionDone,
    ClusterFailed,
    ClusterRefreshed,
    DeadLettersRefreshed,
    PageFailed,
    PageLoaded,
    RedisUnavailable,
)
from celery_morgue.tui.monitor import Monitor, is_connection_error
from celery_morgue.tui.polling import PollSchedule
from celery_morgue.tui.profiles import Profile
from celery_morgue.tui.screens.entry import EntryScreen
from celery_morgue.tui.widgets.dead_letters import DeadLetters
from celery_morgue.tui.widgets.dlq_pane import DLQPane
from celery_morgue.tui.widgets.queue_list import QueueList
from celery_morgue.tui.widgets.status import Banner, Status, StatusLine
from celery_morgue.tui.widgets.tasks_pane import TasksPane


class DashboardScreen(Screen[None]):
    # Textual declares these as plain attributes, so ClassVar here would clash with it.
    HORIZONTAL_BREAKPOINTS = [  # noqa: RUF012
        (0, "-too-narrow"),
        (60, "-wide-enough"),
    ]
    VERTICAL_BREAKPOINTS = [  # noqa: RUF012
        (0, "-too-short"),
        (16, "-tall-enough"),
    ]

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("tab", "app.focus_next", "Next pane", show=False, id="next_pane"),
        Binding("shift+tab", "app.focus_previous", "Previous pane", show=False, id="prev_pane"),
        # Not in the footer, which an 80-column terminal fills already: in help and palette.
        Binding(
            "p",
            "app.profiles",
            "Profiles",
            show=False,
            id="profiles",
            tooltip="Switch, add, edit or delete profiles",
        ),
    ]

    def __init__(
        self,
        profile: Profile,
        monitor: Monitor,
        *,
        clock: Clock,
        poll: bool = True,
    ) -> None:
        super().__init__()
        self.profile = profile
        self.monitor = monitor
        self.clock = clock
        self.poll = poll
        self.dlq_poll = PollSchedule(self, self._start_dlq_poll, profile.refresh)
        self.cluster_poll = PollSchedule(self, self._start_cluster_poll, profile.refresh)
        if not poll:
            # Fed by hand (tests, screenshots): nothing may start I/O on its own.
            self.dlq_poll.stop()
            self.cluster_poll.stop()

    @property
    def readonly(self) -> bool:
        return self.profile.readonly

    # -- layout --------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Vertical(id="top"):
            yield StatusLine(
                Status(
                    profile=self.profile.name,
                    url=redact_url(self.profile.url),
                    readonly=self.profile.readonly,
                ),
                id="status",
            )
            yield Banner(id="banner")
        with Vertical(id="layout"):
            yield DeadLetters(
                self.monitor,
                clock=self.clock,
                readonly=self.readonly,
                poll=self.poll,
                detail=self._entry_detail,
                id="dead-letters",
            )
            yield TasksPane(self.monitor, readonly=self.readonly, id="tasks")
        yield Static(
            "Terminal too small: morgue needs at least 60x16.", id="too-small", markup=False
        )
        yield Footer()

    def _entry_detail(self, entry: StoredEntry, queue: str) -> EntryScreen:
        return EntryScreen(entry, queue, clock=self.clock, readonly=self.readonly)

    @property
    def status_line(self) -> StatusLine:
        return self.query_one(StatusLine)

    @property
    def banner(self) -> Banner:
        return self.query_one(Banner)

    @property
    def dead_letters(self) -> DeadLetters:
        return self.query_one(DeadLetters)

    @property
    def queue_list(self) -> QueueList:
        return self.dead_letters.queue_list

    @property
    def tasks_pane(self) -> TasksPane:
        return self.query_one(TasksPane)

    def pane(self, queue: str) -> DLQPane | None:
        return self.dead_letters.pane(queue)

    def on_mount(self) -> None:
        self.tasks_pane.table.focus()
        if self.poll:
            self.dlq_poll.run_now()
            self.cluster_poll.run_now()

    def on_unmount(self) -> None:
        self.dlq_poll.stop()
        self.cluster_poll.stop()

    def on_resize(self, event: events.Resize) -> None:
        # The destructive keys are hidden while the layout is (the breakpoint classes, which
        # Textual sets on this resize): let the footer ask again once they are set.
        self.call_after_refresh(self.refresh_bindings)

    # -- polling the DLQ -----------------------------------------------------------------

    def _start_dlq_poll(self) -> None:
        dead_letters = self.dead_letters
        groups_queue = dead_letters.groups_queue
        preferred = groups_queue or dead_letters.shown_queue
        self.poll_dead_letters(
            preferred, dead_letters.head_limit, dead_letters.head_filter, groups_queue is not None
        )

    @work(thread=True, exclusive=True, exit_on_error=False, group="dlq-poll")
    def poll_dead_letters(
        self, preferred: str | None, limit: int, flt: EntryFilter, groups: bool
    ) -> None:
        try:
            state = self.monitor.refresh_dlq(preferred, limit, flt, groups=groups)
        except Exception as error:  # whatever it is, the banner shows it and the poll retries
            self.post_message(RedisUnavailable(self._problem(error), failed_at=self.clock()))
            return
        self.post_message(
            DeadLettersRefreshed(
                state.queues,
                state.head,
                taken_at=self.clock(),
                spool=state.spool,
                head_filter=state.head_filter,
                groups=state.groups,
            )
        )

    def _problem(self, error: BaseException) -> str:
        # The status line shows the URL; the banner says what failed.
        if is_connection_error(error):
            return f"Redis does not answer: {self.monitor.describe(error)}"
        return f"Reading the DLQ failed: {self.monitor.describe(error)}"

    async def on_dead_letters_refreshed(self, message: DeadLettersRefreshed) -> None:
        reconnected = self.status_line.status.connected is False
        self.dlq_poll.succeeded()
        self.banner.hide()
        self.status_line.change(connected=True, refreshed_at=message.taken_at, spool=message.spool)
        if reconnected:
            self.notify("Redis answers again.", markup=False)
        first_shown = await self.dead_letters.show(
            message.queues, message.head, message.head_filter, message.groups
        )
        # The first failures take the focus from where the screen put it on opening.
        if first_shown and (self.focused is None or self.focused is self.tasks_pane.table):
            self.dead_letters.focus_pane()

    def on_page_loaded(self, message: PageLoaded) -> None:
        self.dead_letters.apply_page(message.page, message.after, message.flt)

    def on_page_failed(self, message: PageFailed) -> None:
        self.dead_letters.page_failed(message.queue, message.error)

    @on(DeadLetters.RefreshWanted)
    def _refresh_dead_letters(self) -> None:
        if self.poll:
            self.dlq_poll.run_now()

    def on_redis_unavailable(self, message: RedisUnavailable) -> None:
        delay = self.dlq_poll.failed()
        retry_at = format_clock_time(message.failed_at + delay)
        self.banner.show_problem(
            f"{message.error.rstrip('.')}. Retrying in {delay:.0f} s, at {retry_at} "
            f"(attempt {self.dlq_poll.failures + 1})."
        )
        self.status_line.change(connected=False)

    # -- polling the workers -------------------------------------------------------------

    def _start_cluster_poll(self) -> None:
        self.poll_cluster()

    @work(thread=True, exclusive=True, exit_on_error=False, group="cluster-poll")
    def poll_cluster(self) -> None:
        try:
            snapshot = self.monitor.cluster()
        except Exception as error:  # shown in the pane; the poll retries after a backoff
            self.post_message(ClusterFailed(self.monitor.describe(error)))
            return
        self.post_message(ClusterRefreshed(snapshot))

    def on_cluster_refreshed(self, message: ClusterRefreshed) -> None:
        self.cluster_poll.succeeded()
        snapshot = message.snapshot
        self.tasks_pane.apply_snapshot(snapshot)
        self.status_line.change(workers=len(snapshot.workers))

    def on_cluster_failed(self, message: ClusterFailed) -> None:
        delay = self.cluster_poll.failed()
        self.tasks_pane.apply_failure(f"{message.error}; retry in {delay:.0f} s")
        self.status_line.change(workers=None)

    # -- after an action -----------------------------------------------------------------

    def on_action_done(self, message: ActionDone) -> None:
        """A widget's action finished: say what it did, and show what it changed."""
        self.notify(message.text, severity=message.severity, markup=False)
        if self.poll and message.refresh_dlq:
            self.dlq_poll.run_now()
        if self.poll and message.refresh_cluster:
            self.cluster_poll.run_now()
