"""The main screen: status, dead-letter queues and active tasks, polled.

The actions on them (delete, requeue, clear, revoke) are in :mod:`tui.screens.dashboard_actions`.
All I/O runs in thread workers that post :mod:`tui.messages` back; the handlers here only
update widgets and schedule the next poll once the last one has finished.
"""

from __future__ import annotations

from functools import partial
from typing import ClassVar, Literal

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import ContentSwitcher, Footer, Input, OptionList, Static

from celery_morgue.core.urls import redact_url
from celery_morgue.tui.cells import Clock, format_clock_time
from celery_morgue.tui.messages import (
    ClusterFailed,
    ClusterRefreshed,
    DeadLettersRefreshed,
    PageFailed,
    PageLoaded,
    RedisUnavailable,
)
from celery_morgue.tui.monitor import PAGE_SIZE, Monitor, is_connection_error
from celery_morgue.tui.polling import PollSchedule
from celery_morgue.tui.profiles import Profile
from celery_morgue.tui.screens.dashboard_actions import DLQ_ACTIONS, TASK_ACTIONS, DashboardActions
from celery_morgue.tui.widgets.dlq_pane import DLQPane
from celery_morgue.tui.widgets.queue_list import QueueList
from celery_morgue.tui.widgets.status import Banner, Status, StatusLine
from celery_morgue.tui.widgets.tasks_pane import TasksPane

Context = Literal["dlq", "tasks"]


class DashboardScreen(DashboardActions):
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
        # Priority: handled before the keys typed after it are passed on, so that they reach
        # the filter even when they arrive together (a paste, a fast typist).
        Binding(
            "slash",
            "filter",
            "Filter",
            priority=True,
            id="filter",
            tooltip="Filter the current table by task name, exception or id",
        ),
        Binding(
            "c",
            "clear_queue",
            "Clear queue",
            id="clear_queue",
            tooltip="Clear the queue up to the newest entry shown",
        ),
        Binding("d", "delete_entry", "Delete", id="delete_entry", tooltip="Delete the entry"),
        Binding(
            "e",
            "requeue_entry",
            "Requeue",
            id="requeue_entry",
            tooltip="Requeue the entry under a new task id",
        ),
        Binding(
            "E",
            "requeue_queue",
            "Requeue all",
            show=False,
            id="requeue_queue",
            tooltip="Requeue every entry of the queue",
        ),
        Binding(
            "r",
            "revoke",
            "Revoke",
            id="revoke",
            tooltip="Revoke the selected task (terminate, SIGTERM or SIGKILL)",
        ),
        Binding(
            "R",
            "revoke_zombies",
            "Revoke zombies",
            id="revoke_zombies",
            tooltip="Revoke every task past its hard limit plus grace",
        ),
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
        super().__init__(readonly=profile.readonly)
        self.profile = profile
        self.monitor = monitor
        self.clock = clock
        self.poll = poll
        self._panes: dict[str, DLQPane] = {}
        self._pane_serial = 0
        self.dlq_poll = PollSchedule(self, self._start_dlq_poll, profile.refresh)
        self.cluster_poll = PollSchedule(self, self._start_cluster_poll, profile.refresh)
        if not poll:
            # Fed by hand (tests, screenshots): nothing may start I/O on its own.
            self.dlq_poll.stop()
            self.cluster_poll.stop()

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
            with Horizontal(id="dead-letters"):
                yield QueueList(id="queues")
                with ContentSwitcher(id="panes", initial="no-queues"):
                    yield Static(
                        "No dead letters: nothing has failed, or the prefix is not "
                        f"{self.profile.prefix!r}.",
                        id="no-queues",
                        markup=False,
                    )
            yield TasksPane(id="tasks")
        yield Static(
            "Terminal too small: morgue needs at least 60x16.", id="too-small", markup=False
        )
        yield Footer()

    @property
    def status_line(self) -> StatusLine:
        return self.query_one(StatusLine)

    @property
    def banner(self) -> Banner:
        return self.query_one(Banner)

    @property
    def queue_list(self) -> QueueList:
        return self.query_one(QueueList)

    @property
    def tasks_pane(self) -> TasksPane:
        return self.query_one(TasksPane)

    @property
    def visible_pane(self) -> DLQPane | None:
        current = self.query_one(ContentSwitcher).current
        return next((pane for pane in self._panes.values() if pane.id == current), None)

    def pane(self, queue: str) -> DLQPane | None:
        return self._panes.get(queue)

    def on_mount(self) -> None:
        self.tasks_pane.table.focus()
        if self.poll:
            self.dlq_poll.run_now()
            self.cluster_poll.run_now()

    def on_unmount(self) -> None:
        self.dlq_poll.stop()
        self.cluster_poll.stop()

    # -- polling the DLQ -----------------------------------------------------------------

    def _start_dlq_poll(self) -> None:
        pane = self.visible_pane
        preferred = pane.queue if pane is not None else self.queue_list.highlighted_queue
        limit = pane.head_limit if pane is not None else PAGE_SIZE
        self.poll_dead_letters(preferred, limit)

    @work(thread=True, exclusive=True, exit_on_error=False, group="dlq-poll")
    def poll_dead_letters(self, preferred: str | None, limit: int) -> None:
        try:
            state = self.monitor.refresh_dlq(preferred, limit)
        except Exception as error:  # whatever it is, the banner shows it and the poll retries
            self.post_message(RedisUnavailable(self._problem(error), failed_at=self.clock()))
            return
        self.post_message(
            DeadLettersRefreshed(state.queues, state.head, taken_at=self.clock(), spool=state.spool)
        )

    def _problem(self, error: BaseException) -> str:
        # The status line shows the URL; the banner says what failed.
        if is_connection_error(error):
            return f"Redis does not answer: {self._describe(error)}"
        return f"Reading the DLQ failed: {self._describe(error)}"

    async def on_dead_letters_refreshed(self, message: DeadLettersRefreshed) -> None:
        reconnected = self.status_line.status.connected is False
        self.dlq_poll.succeeded()
        self.banner.hide()
        self.status_line.change(connected=True, refreshed_at=message.taken_at, spool=message.spool)
        if reconnected:
            self.notify("Redis answers again.", markup=False)
        await self._show_queues(message)
        self.refresh_bindings()

    async def _show_queues(self, message: DeadLettersRefreshed) -> None:
        switcher = self.query_one(ContentSwitcher)
        names = {info.queue for info in message.queues}
        for queue in list(self._panes):
            if queue not in names:
                gone = self._panes.pop(queue)
                if switcher.current == gone.id:
                    switcher.current = "no-queues"
                await gone.remove()
        for info in message.queues:
            pane = self._panes.get(info.queue)
            head = message.head if message.head and message.head.queue == info.queue else None
            if pane is None:
                self._pane_serial += 1
                pane = DLQPane(info.queue, clock=self.clock, id=f"dlq-{self._pane_serial}")
                pane.display = False  # the switcher shows it when its queue is highlighted
                # Data before mounting, so the new pane does not ask for what it already has.
                if head is not None:
                    pane.apply_head(head)
                self._panes[info.queue] = pane
                await switcher.mount(pane)
            elif head is not None:
                pane.apply_head(head)
                pane.retry_load()
            else:
                pane.set_total(info.total)
        focus_table = self.focused is None or self.focused is self.tasks_pane.table
        first_time = switcher.current == "no-queues" and bool(message.queues)
        self.queue_list.show_queues(message.queues)
        self._show_highlighted_queue()
        if first_time and focus_table:
            pane = self.visible_pane
            if pane is not None:
                pane.table.focus()

    def _show_highlighted_queue(self) -> None:
        switcher = self.query_one(ContentSwitcher)
        queue = self.queue_list.highlighted_queue
        pane = self._panes.get(queue) if queue is not None else None
        target = pane.id if pane is not None else "no-queues"
        if switcher.current != target:
            shown = self.visible_pane
            had_focus = (
                shown is not None
                and self.focused is not None
                and shown in self.focused.ancestors_with_self
            ) or self.focused is None
            switcher.current = target
            if had_focus and pane is not None:
                pane.table.focus()

    @on(OptionList.OptionHighlighted, "#queues")
    def _queue_highlighted(self) -> None:
        before = self.visible_pane
        self._show_highlighted_queue()
        after = self.visible_pane
        if after is not None and after is not before and after.loaded_once and self.poll:
            self.dlq_poll.run_now()  # its head was last read while hidden
        self.refresh_bindings()

    @on(OptionList.OptionSelected, "#queues")
    def _queue_selected(self) -> None:
        pane = self.visible_pane
        if pane is not None:
            pane.table.focus()

    def on_redis_unavailable(self, message: RedisUnavailable) -> None:
        delay = self.dlq_poll.failed()
        retry_at = format_clock_time(message.failed_at + delay)
        self.banner.show_problem(
            f"{message.error.rstrip('.')}. Retrying in {delay:.0f} s, at {retry_at} "
            f"(attempt {self.dlq_poll.failures + 1})."
        )
        self.status_line.change(connected=False)

    # -- pages -----------------------------------------------------------------------------

    # By class, not by method name: Textual names the handler after the class name as it is
    # spelled ("on_dlqpane_load_more"), and a misspelt name silently drops every page request.
    @on(DLQPane.LoadMore)
    def _load_more(self, message: DLQPane.LoadMore) -> None:
        message.stop()
        if not self.poll:
            message.pane.fetch_skipped()
            return
        self.run_worker(
            partial(self._load_page, message.queue, message.after),
            thread=True,
            exclusive=True,
            group=f"page-{message.pane.id}",
            exit_on_error=False,
        )

    def _load_page(self, queue: str, after: str | None) -> None:
        try:
            page = self.monitor.page(queue, after, PAGE_SIZE)
        except Exception as error:  # shown in the pane; the next refresh tries again
            self.post_message(PageFailed(queue, self._describe(error)))
            return
        self.post_message(PageLoaded(page, after))

    def on_page_loaded(self, message: PageLoaded) -> None:
        pane = self._panes.get(message.page.queue)
        if pane is not None:
            pane.apply_page(message.page, message.after)
            self.refresh_bindings()

    def on_page_failed(self, message: PageFailed) -> None:
        pane = self._panes.get(message.queue)
        if pane is not None:
            pane.page_failed(message.error)

    # -- polling the workers -------------------------------------------------------------

    def _start_cluster_poll(self) -> None:
        self.poll_cluster()

    @work(thread=True, exclusive=True, exit_on_error=False, group="cluster-poll")
    def poll_cluster(self) -> None:
        try:
            snapshot = self.monitor.cluster()
        except Exception as error:  # shown in the pane; the poll retries after a backoff
            self.post_message(ClusterFailed(self._describe(error)))
            return
        self.post_message(ClusterRefreshed(snapshot))

    def on_cluster_refreshed(self, message: ClusterRefreshed) -> None:
        self.cluster_poll.succeeded()
        snapshot = message.snapshot
        self.tasks_pane.apply_snapshot(snapshot)
        self.status_line.change(workers=len(snapshot.workers))
        self.refresh_bindings()

    def on_cluster_failed(self, message: ClusterFailed) -> None:
        delay = self.cluster_poll.failed()
        self.tasks_pane.apply_failure(f"{message.error}; retry in {delay:.0f} s")
        self.status_line.change(workers=None)

    # -- which keys apply where ----------------------------------------------------------

    def context(self) -> Context:
        focused = self.focused
        tasks = self.tasks_pane
        if focused is not None and (focused is tasks or tasks in focused.ancestors):
            return "tasks"
        return "dlq"

    @property
    def too_small(self) -> bool:
        """The tables are hidden behind the "too small" message (the breakpoint classes)."""
        return self.has_class("-too-narrow") or self.has_class("-too-short")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "filter" and isinstance(self.focused, Input):
            return False  # a "/" typed into the filter itself
        if action in DLQ_ACTIONS | TASK_ACTIONS and self.too_small:
            return False  # they would act on rows the user cannot see
        if action in DLQ_ACTIONS and self.context() != "dlq":
            return False
        if action in TASK_ACTIONS and self.context() != "tasks":
            return False
        return super().check_action(action, parameters)

    # -- actions ---------------------------------------------------------------------------

    def action_filter(self) -> None:
        if self.context() == "tasks":
            self.tasks_pane.start_filter()
            return
        pane = self.visible_pane
        if pane is None:
            self.notify("No queue to filter.", markup=False)
            return
        pane.start_filter()

    def run_from_palette(self, action: str) -> None:
        # The palette runs actions without asking check_action.
        if action in DLQ_ACTIONS | TASK_ACTIONS and self.too_small:
            self.notify(
                "The terminal is too small to show the rows this acts on: enlarge it first.",
                severity="warning",
                markup=False,
            )
            return
        super().run_from_palette(action)

    def action_clear_queue(self) -> None:
        # Refused rather than made exact: a clear removes every entry up to an id, matching or
        # not, so with a filter on it would delete rows the filter hides while the dialog counts
        # and shows only matching ones, and "clear what I filtered" is not what it does.
        pane = self.visible_pane
        if pane is not None and pane.filter_text:
            self.notify(
                "Clear the filter first (escape): a clear removes every entry up to the newest "
                "one, matching or not.",
                severity="warning",
                markup=False,
            )
            return
        super().action_clear_queue()
