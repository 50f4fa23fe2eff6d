"""The dead letters: the list of queues and, beside it, the pane of the queue highlighted.

The widget owns what acts on them: ``d`` delete, ``e`` requeue, ``E`` requeue all and ``c``
clear, each confirmed in a dialog first (:mod:`tui.dialogs`), the safe button focused. Enter
opens an entry's detail, whose own ``d`` and ``e`` come back here to be confirmed the same way.
``f`` opens the failure groups of the queue shown (:class:`GroupsPane`) in place of the queues;
enter there narrows the queue's pane to a group, and every action then acts on that group only.
With marks (``space``, ``A``) ``d``, ``e`` and ``E`` act on the marks; under a filter, on what
the server matches up to the newest entry shown, counted by the server for the dialog
(:mod:`tui.bulk`). ``E`` runs the paced redrive in a worker; escape stops it.
It loads the pages its panes ask for as their cursor moves down; the dashboard polls the queues
and hands each refresh to :meth:`DeadLetters.show`, and each page to :meth:`DeadLetters.apply_page`.

The blocking call of every action runs in a thread worker that posts an :class:`ActionDone`,
which bubbles up to the dashboard: it notifies and polls again.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import ClassVar, Literal

from rich.text import Text
from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.message import Message
from textual.screen import Screen
from textual.widgets import ContentSwitcher, DataTable, OptionList, Static

from celery_morgue.core.dlq import Page, QueueInfo, StoredEntry
from celery_morgue.core.entry import Entry, UnreadableEntry
from celery_morgue.core.errors import DLQError
from celery_morgue.core.filters import EntryFilter
from celery_morgue.core.groups import GroupReport
from celery_morgue.core.redrive import RedriveProgress
from celery_morgue.core.wording import plural
from celery_morgue.tui.actions import ActionOwner
from celery_morgue.tui.bulk import BulkTarget, clear_question, delete_question, requeue_question
from celery_morgue.tui.cells import Clock, entry_age, not_requeueable, stream_order
from celery_morgue.tui.dialogs import ConfirmScreen
from celery_morgue.tui.literal import printable
from celery_morgue.tui.messages import (
    ActionDone,
    PageFailed,
    PageLoaded,
    RequeueEnded,
    RequeueProgressed,
    TextTotalCounted,
)
from celery_morgue.tui.monitor import PAGE_SIZE, Monitor
from celery_morgue.tui.outcomes import (
    entry_name,
    progress_line,
    requeue_all_done,
    requeue_refused,
)
from celery_morgue.tui.scope import EVERY_ENTRY, GroupChoice, Scope
from celery_morgue.tui.widgets.dlq_pane import DLQPane
from celery_morgue.tui.widgets.groups_pane import GroupsPane
from celery_morgue.tui.widgets.pane import FILTER
from celery_morgue.tui.widgets.queue_list import QueueList

EntryAction = Literal["delete", "requeue"]
# The entry detail is a screen, and widgets do not import screens: the dashboard passes in what
# makes one for an entry and its queue. It dismisses with the action chosen in it, if any.
EntryDetail = Callable[[StoredEntry, str], Screen[EntryAction | None]]


class DeadLetters(ActionOwner, Horizontal):
    """Every dead-letter queue of ``monitor``'s profile, one pane per queue.

    ``readonly`` (the profile's) disables the destructive keys; ``poll=False`` (tests,
    screenshots) loads no page of its own.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        FILTER,
        Binding(
            "c",
            "clear_queue",
            "Clear",
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
            "f",
            "groups",
            "Groups",
            id="groups",
            tooltip="What is failing: the failure groups of the queue, largest first",
        ),
        # Not in the footer, which an 80-column terminal fills already: in help and palette.
        Binding(
            "E",
            "requeue_queue",
            "Requeue all",
            show=False,
            id="requeue_queue",
            tooltip="Requeue every entry of the queue, or of the filter, up to the newest shown",
        ),
        Binding(
            "escape",
            "cancel_requeue",
            "Stop requeue",
            id="cancel_requeue",
            tooltip="Stop the requeue running: what was not sent stays in the queue",
        ),
    ]
    DESTRUCTIVE_ACTIONS = frozenset(
        {"clear_queue", "delete_entry", "requeue_entry", "requeue_queue"}
    )
    # What acts on the queue's pane: off while the groups view hides it.
    PANE_ACTIONS = frozenset({"filter", *DESTRUCTIVE_ACTIONS})
    PALETTE_TITLES: ClassVar[Mapping[str, str]] = {
        "filter": "Filter the dead letters",
        "groups": "Failure groups of the queue",
        "clear_queue": "Clear queue",
        "delete_entry": "Delete entry",
        "requeue_entry": "Requeue entry",
        "requeue_queue": "Requeue whole queue",
    }

    class RefreshWanted(Message):
        """The queue now shown was last read while hidden: its newest entries may have moved."""

    def __init__(
        self,
        monitor: Monitor,
        *,
        clock: Clock,
        readonly: bool,
        poll: bool,
        detail: EntryDetail,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id, readonly=readonly)
        self.monitor = monitor
        self.clock = clock
        self.poll = poll
        self.detail = detail
        self._panes: dict[str, DLQPane] = {}
        self._pane_serial = 0
        # The requeue running on each queue (at most one): its token, and the event that stops
        # it after its publish. The token tells a run's end from a later run's.
        self._redrives: dict[str, tuple[int, threading.Event]] = {}
        self._redrive_serial = 0

    def compose(self) -> ComposeResult:
        groups = GroupsPane(clock=self.clock, readonly=self.readonly, id="groups")
        groups.display = False
        yield groups
        yield QueueList(id="queues")
        with ContentSwitcher(id="panes", initial="no-queues"):
            yield Static(
                "No dead letters: nothing has failed, or the prefix is not "
                f"{self.monitor.profile.prefix!r}.",
                id="no-queues",
                classes="pane",
                markup=False,
            )

    # -- what is shown -------------------------------------------------------------------

    @property
    def queue_list(self) -> QueueList:
        return self.query_one(QueueList)

    @property
    def groups_pane(self) -> GroupsPane:
        return self.query_one(GroupsPane)

    @property
    def groups_queue(self) -> str | None:
        """The queue whose groups the next refresh should read: only while the view is open."""
        groups = self.groups_pane
        return groups.queue if groups.display else None

    @property
    def head_filter(self) -> EntryFilter:
        """What the next refresh reads the shown queue's head under: its pane's scope."""
        pane = self.visible_pane
        return pane.entry_filter if pane is not None else EntryFilter()

    @property
    def visible_pane(self) -> DLQPane | None:
        current = self.query_one(ContentSwitcher).current
        return next((pane for pane in self._panes.values() if pane.id == current), None)

    def pane(self, queue: str) -> DLQPane | None:
        return self._panes.get(queue)

    @property
    def shown_queue(self) -> str | None:
        """The queue whose newest entries the next refresh should read."""
        pane = self.visible_pane
        return pane.queue if pane is not None else self.queue_list.highlighted_queue

    @property
    def head_limit(self) -> int:
        """How many of them: as many as its pane has loaded (see :attr:`DLQPane.head_limit`)."""
        pane = self.visible_pane
        return pane.head_limit if pane is not None else PAGE_SIZE

    def focus_pane(self) -> None:
        pane = self.visible_pane
        if pane is not None:
            pane.table.focus()

    async def show(
        self,
        queues: Sequence[QueueInfo],
        head: Page | None,
        head_filter: EntryFilter = EVERY_ENTRY,
        groups: GroupReport | None = None,
    ) -> bool:
        """Show a refresh: every queue with its count, and the newest entries of one of them
        (read under ``head_filter``), and the groups the groups view shows.

        Returns whether a queue is now shown where none was (the first ones to fail).
        """
        if groups is not None:
            self.groups_pane.apply_report(groups)
        switcher = self.query_one(ContentSwitcher)
        names = {info.queue for info in queues}
        for queue in list(self._panes):
            if queue not in names:
                gone = self._panes.pop(queue)
                if switcher.current == gone.id:
                    switcher.current = "no-queues"
                await gone.remove()
        for info in queues:
            pane = self._panes.get(info.queue)
            fresh = head if head is not None and head.queue == info.queue else None
            if pane is not None and pane.entry_filter != head_filter:
                fresh = None  # read before the pane was narrowed (or widened) again
            if pane is None:
                self._pane_serial += 1
                pane = DLQPane(info.queue, clock=self.clock, id=f"dlq-{self._pane_serial}")
                pane.display = False  # the switcher shows it when its queue is highlighted
                # Data before mounting, so the new pane does not ask for what it already has.
                if fresh is not None:
                    pane.apply_head(fresh)
                self._panes[info.queue] = pane
                await switcher.mount(pane)
            elif fresh is not None:
                pane.apply_head(fresh)
                pane.retry_load()
            elif pane.entry_filter.is_empty:
                pane.total = info.total
            if fresh is not None:
                self._count_text(pane, head_filter)
        first_shown = switcher.current == "no-queues" and bool(queues)
        self.queue_list.queues = tuple(queues)
        self._show_highlighted_queue()
        return first_shown

    def _show_highlighted_queue(self) -> None:
        switcher = self.query_one(ContentSwitcher)
        queue = self.queue_list.highlighted_queue
        pane = self._panes.get(queue) if queue is not None else None
        target = pane.id if pane is not None else "no-queues"
        if switcher.current != target:
            shown = self.visible_pane
            focused = self.screen.focused
            had_focus = (
                shown is not None and focused is not None and shown in focused.ancestors_with_self
            ) or focused is None
            switcher.current = target
            if had_focus and pane is not None:
                pane.table.focus()

    @on(OptionList.OptionHighlighted, "#queues")
    def _queue_highlighted(self) -> None:
        before = self.visible_pane
        self._show_highlighted_queue()
        after = self.visible_pane
        if after is not None and after is not before and after.loaded_once:
            self.post_message(self.RefreshWanted())

    @on(OptionList.OptionSelected, "#queues")
    def _queue_selected(self) -> None:
        self.focus_pane()

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
            partial(self._load_page, message.queue, message.after, message.flt),
            thread=True,
            exclusive=True,
            group=f"page-{message.pane.id}",
            exit_on_error=False,
        )

    def _load_page(self, queue: str, after: str | None, flt: EntryFilter) -> None:
        # What it read bubbles up to the dashboard, where everything a thread reads arrives
        # (and where tests feed pages), which hands it back to apply_page.
        try:
            page = self.monitor.page(queue, after, PAGE_SIZE, flt)
        except Exception as error:  # shown in the pane; the next refresh tries again
            self.post_message(PageFailed(queue, self.monitor.describe(error)))
            return
        self.post_message(PageLoaded(page, after, flt))

    def apply_page(self, page: Page, after: str | None, flt: EntryFilter = EVERY_ENTRY) -> None:
        pane = self._panes.get(page.queue)
        if pane is not None:
            pane.apply_page(page, after, flt)
            self._count_text(pane, flt)

    def _count_text(self, pane: DLQPane, flt: EntryFilter) -> None:
        """Under a text filter, count the pane's total in a worker once the rows are shown.

        One count at a time per queue and filter (the poll and a page request would otherwise
        each scan the queue), and only when due (see TEXT_RECOUNT_SECONDS).
        """
        if not self.poll or not flt.grep or flt != pane.entry_filter or not pane.loaded_once:
            return
        if pane.filter_input.has_focus:
            return  # still typing: FilterSettled (enter) or the next poll counts
        monitor, queue = self.monitor, pane.queue
        if not monitor.claim_text_count(queue, flt):
            return

        def count() -> None:
            try:
                total = monitor.count_text(queue, flt)
            except Exception:  # the title keeps "counting…"; the next poll retries
                return
            if total is not None:
                self.post_message(TextTotalCounted(queue, flt, total))

        self.run_worker(count, thread=True, group="text-count", exit_on_error=False)

    @on(DLQPane.FilterSettled)
    def _filter_settled(self, message: DLQPane.FilterSettled) -> None:
        message.stop()
        self._count_text(message.pane, message.pane.entry_filter)

    @on(TextTotalCounted)
    def _text_total_counted(self, message: TextTotalCounted) -> None:
        message.stop()
        pane = self._panes.get(message.queue)
        if pane is not None and pane.entry_filter == message.flt:
            pane.total = message.total

    def page_failed(self, queue: str, error: str) -> None:
        pane = self._panes.get(queue)
        if pane is not None:
            pane.page_failed(error)

    # -- the groups view ------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in self.PANE_ACTIONS and self.groups_pane.display:
            return False  # the pane they act on is hidden by the groups view
        if action == "cancel_requeue":
            return self.check_requeue_running()
        allowed = super().check_action(action, parameters)
        if allowed and self._requeue_blocks(action) is not None:
            return None  # dimmed in the footer; the key, pressed, says why (on_key)
        return allowed

    def _requeue_blocks(self, action: str) -> str | None:
        """Why ``action`` is refused on the pane shown: a requeue of its queue is running, and
        a second one, or a bulk delete or a clear, would act on the entries it is sending."""
        pane = self.visible_pane
        if pane is None or pane.queue not in self._redrives:
            return None
        bulk = action in {"clear_queue", "requeue_queue"} or (
            action in {"delete_entry", "requeue_entry"} and pane.mark_count > 0
        )
        return self._running_notice(pane.queue) if bulk else None

    @staticmethod
    def _running_notice(queue: str) -> str:
        return f"A requeue of {printable(queue)} is running: escape stops it."

    def _refused_while_requeueing(self, action: str) -> bool:
        notice = self._requeue_blocks(action)
        if notice is not None:
            self.notify(notice, severity="warning", markup=False)
        return notice is not None

    def on_key(self, event: events.Key) -> None:
        active = self.screen.active_bindings.get(event.key)
        if (
            active is not None
            and not active.enabled
            and active.node is self
            and not self.readonly
            and self._refused_while_requeueing(active.binding.action)
        ):
            event.stop()
            event.prevent_default()
            return
        super().on_key(event)

    def action_groups(self) -> None:
        if self.groups_pane.display:
            self.close_groups()
            return
        queue = self.shown_queue
        if queue is None:
            self.notify("No queue, so no groups.", markup=False)
            return
        groups = self.groups_pane
        groups.open(queue)
        self.queue_list.display = False
        self.query_one(ContentSwitcher).display = False
        groups.display = True
        groups.table.focus()
        self.post_message(self.RefreshWanted())  # the groups now, not at the next poll

    def close_groups(self) -> None:
        groups = self.groups_pane
        if not groups.display:
            return
        groups.display = False
        self.queue_list.display = True
        self.query_one(ContentSwitcher).display = True
        self.focus_pane()
        self.screen.refresh_bindings()

    @on(GroupsPane.Closed)
    def _groups_closed(self, message: GroupsPane.Closed) -> None:
        message.stop()
        self.close_groups()

    @on(GroupsPane.Chosen)
    def _group_chosen(self, message: GroupsPane.Chosen) -> None:
        message.stop()
        self.narrow(message.choice)

    def narrow(self, choice: GroupChoice | None) -> None:
        """Show only ``choice``'s entries in the pane of the queue the groups view is of."""
        queue = self.groups_pane.queue
        pane = self._panes.get(queue) if queue is not None else None
        self.close_groups()
        if pane is not None:
            pane.narrow_to(choice)
            pane.table.focus()

    def groups_failed(self, error: str) -> None:
        self.groups_pane.apply_failure(error)

    # -- the entry detail ------------------------------------------------------------------

    @on(DataTable.RowSelected, "DLQPane LiveTable")
    def _open_entry(self, event: DataTable.RowSelected) -> None:
        pane = event.data_table.parent
        if not isinstance(pane, DLQPane):
            return
        entry = pane.entry(event.row_key.value or "")
        if entry is None:
            return
        queue = pane.queue
        self.app.push_screen(self.detail(entry, queue), partial(self._entry_closed, queue, entry))

    def _entry_closed(self, queue: str, entry: StoredEntry, choice: EntryAction | None) -> None:
        if choice == "delete":
            self._confirm_delete(queue, entry)
        elif choice == "requeue":
            self._confirm_requeue(queue, entry)

    # -- actions ---------------------------------------------------------------------------

    def action_filter(self) -> None:
        pane = self.visible_pane
        if pane is None:
            self.notify("No queue to filter.", markup=False)
            return
        pane.start_filter()

    def _selected_entry(self) -> tuple[DLQPane, StoredEntry] | None:
        pane = self.visible_pane
        entry = pane.selected_entry if pane is not None else None
        if pane is None or entry is None:
            self.notify("No entry selected.", severity="warning", markup=False)
            return None
        return pane, entry

    def action_delete_entry(self) -> None:
        if self._refused_while_requeueing("delete_entry"):
            return  # the palette runs actions without asking check_action
        if self._delete_marked():
            return
        selected = self._selected_entry()
        if selected is not None:
            self._confirm_delete(selected[0].queue, selected[1])

    def action_requeue_entry(self) -> None:
        if self._refused_while_requeueing("requeue_entry"):
            return
        if self._requeue_marked():
            return
        selected = self._selected_entry()
        if selected is not None:
            self._confirm_requeue(selected[0].queue, selected[1])

    def _confirm_delete(self, queue: str, entry: StoredEntry) -> None:
        question = Text.assemble(
            "Delete ",
            *entry_name(entry),
            " from ",
            (printable(queue), "bold"),
            "?\n\nThe entry is removed from the dead-letter queue for good.",
        )
        self.app.push_screen(
            ConfirmScreen("Delete entry", question, "Delete"),
            partial(self._delete_confirmed, queue, entry),
        )

    def _confirm_requeue(self, queue: str, entry: StoredEntry) -> None:
        if isinstance(entry, UnreadableEntry):
            self.notify(not_requeueable(entry), severity="warning", markup=False)
            return
        question = Text.assemble("Requeue ", *entry_name(entry), " under a new task id?")
        if entry.reason == "unregistered":
            question.append(
                "\n\nThe worker did not know this task name. It is sent again under the same "
                f"name, {printable(entry.task)}: it fails again unless a worker that registers "
                "it consumes the queue."
            )
        self.app.push_screen(
            ConfirmScreen("Requeue entry", question, "Requeue"),
            partial(self._requeue_confirmed, queue, entry),
        )

    def _delete_confirmed(self, queue: str, entry: StoredEntry, confirmed: bool | None) -> None:
        if not confirmed:
            return
        monitor = self.monitor
        name = "".join(part if isinstance(part, str) else part[0] for part in entry_name(entry))

        def run() -> ActionDone:
            removed = monitor.delete(queue, entry.id)
            if not removed:
                return ActionDone(f"Entry {entry.id} was already gone.", refresh_dlq=True)
            return ActionDone(f"Deleted {name}.", refresh_dlq=True)

        self.run_in_thread("Delete", run, monitor.describe)

    def _requeue_confirmed(self, queue: str, entry: Entry, confirmed: bool | None) -> None:
        if not confirmed:
            return
        monitor = self.monitor
        task = printable(entry.task)

        def run() -> ActionDone:
            try:
                new_id = monitor.requeue(queue, entry.id)
            except DLQError as error:  # refused: nothing was sent, the entry stays
                return requeue_refused(entry.id, error, monitor.connection.scrub)
            return ActionDone(f"Requeued {task} as {new_id}.", refresh_dlq=True)

        self.run_in_thread("Requeue", run, monitor.describe)

    # -- bulk actions: the marks, the filter, the whole queue ------------------------------

    def action_clear_queue(self) -> None:
        if self._refused_while_requeueing("clear_queue"):
            return
        pane = self.visible_pane
        # What the user has seen when pressing the key: entries arriving later are kept, even
        # ones a refresh loads while the dialog is open.
        up_to = pane.newest_seen if pane is not None else None
        if pane is None or up_to is None:
            self.notify("Nothing to clear.", markup=False)
            return
        if not pane.scope.is_empty:
            # Counted by the server, under the filter: the count is of what the clear removes.
            self._count_then(pane.queue, pane.scope, up_to, self._confirm_bulk_clear)
            return
        # Entries that arrived above the cursor while it was further down were never seen.
        unseen = pane.newer_than(up_to)
        queue, count = pane.queue, max(0, (pane.total or len(pane.order)) - unseen)
        newest = pane.entry(up_to)
        age = f" (failed {entry_age(newest, self.clock())} ago)" if newest is not None else ""
        kept = (
            f" So {'is' if unseen == 1 else 'are'} the {plural(unseen, 'newer one')} above, "
            "not seen yet."
            if unseen
            else ""
        )
        question = Text.assemble(
            "Clear queue ",
            (printable(queue), "bold"),
            f"?\n\nRemoves {plural(count, 'entry', 'entries')}, "
            f"up to the newest one shown{age}. Entries that arrive after it are kept.{kept}",
        )
        target = BulkTarget(queue, Scope(), up_to, count)
        self.app.push_screen(
            ConfirmScreen("Clear queue", question, "Clear"),
            partial(self._clear_confirmed, target),
        )

    def _confirm_bulk_clear(self, target: BulkTarget) -> None:
        self.app.push_screen(
            ConfirmScreen("Clear matching", clear_question(target), "Clear"),
            partial(self._clear_confirmed, target),
        )

    def _clear_confirmed(self, target: BulkTarget, confirmed: bool | None) -> None:
        if not confirmed:
            return
        monitor = self.monitor

        def run() -> ActionDone:
            removed = monitor.clear(target.queue, target.up_to, target.entry_filter)
            cleared = plural(removed, "entry", "entries")
            return ActionDone(
                f"Cleared {cleared} from {printable(target.queue)}.", refresh_dlq=True
            )

        self._after_bulk(target.queue)
        self.run_in_thread("Clear", run, monitor.describe)

    def _marked_target(self, pane: DLQPane) -> BulkTarget | None:
        """The entries marked one by one, newest first, or None when none are."""
        if not pane.marked:
            return None
        ids = tuple(i for i in pane.order if i in pane.marked)
        return BulkTarget(pane.queue, pane.scope, ids[0], len(ids), ids)

    def _delete_marked(self) -> bool:
        """``d`` with marks: ask about those instead of the entry under the cursor."""
        pane = self.visible_pane
        if pane is None or not pane.mark_count:
            return False
        target = self._marked_target(pane)
        if target is not None:
            self._confirm_bulk_delete(target)
        elif pane.all_marked is not None:
            self._count_then(
                pane.queue, pane.scope, pane.all_marked.up_to, self._confirm_bulk_delete
            )
        return True

    def _confirm_bulk_delete(self, target: BulkTarget) -> None:
        self.app.push_screen(
            ConfirmScreen("Delete entries", delete_question(target), "Delete"),
            partial(self._bulk_delete_confirmed, target),
        )

    def _bulk_delete_confirmed(self, target: BulkTarget, confirmed: bool | None) -> None:
        if not confirmed:
            return
        monitor = self.monitor

        def run() -> ActionDone:
            if target.ids:
                removed = monitor.delete(target.queue, *target.ids)
            else:
                removed = monitor.clear(target.queue, target.up_to, target.entry_filter)
            deleted = plural(removed, "entry", "entries")
            return ActionDone(
                f"Deleted {deleted} from {printable(target.queue)}.", refresh_dlq=True
            )

        self._after_bulk(target.queue)
        self.run_in_thread("Delete", run, monitor.describe)

    def _requeue_marked(self) -> bool:
        """``e`` or ``E`` with marks: ask about those."""
        pane = self.visible_pane
        if pane is None or not pane.mark_count:
            return False
        target = self._marked_target(pane)
        if target is not None:
            self._confirm_bulk_requeue(target)
        elif pane.all_marked is not None:
            self._count_then(
                pane.queue, pane.scope, pane.all_marked.up_to, self._confirm_bulk_requeue
            )
        return True

    def action_requeue_queue(self) -> None:
        if self._refused_while_requeueing("requeue_queue"):
            return
        if self._requeue_marked():
            return
        pane = self.visible_pane
        up_to = pane.newest_seen if pane is not None else None
        if pane is None or up_to is None:
            self.notify("Nothing to requeue.", markup=False)
            return
        if not pane.scope.is_empty:
            self._count_then(pane.queue, pane.scope, up_to, self._confirm_bulk_requeue)
            return
        # The whole queue, as for a clear: up to the newest entry seen, counted from the poll.
        count = max(0, (pane.total or len(pane.order)) - pane.newer_than(up_to))
        self._confirm_bulk_requeue(BulkTarget(pane.queue, Scope(), up_to, count))

    @on(GroupsPane.RequeueWanted)
    def _requeue_group(self, message: GroupsPane.RequeueWanted) -> None:
        message.stop()
        queue = self.groups_pane.queue
        if queue in self._redrives:
            self.notify(self._running_notice(queue), severity="warning", markup=False)
        elif queue is not None:
            # Up to the newest entry now: counted and requeued up to the same one.
            self._count_then(queue, Scope(message.choice), None, self._confirm_bulk_requeue)

    def _confirm_bulk_requeue(self, target: BulkTarget) -> None:
        if not target.count:
            self.notify("Nothing to requeue.", markup=False)
            return
        question = requeue_question(target)
        unregistered = self._unregistered_loaded(target)
        if unregistered:
            question.append(
                f"\n\n{plural(unregistered, 'entry', 'entries')} of those loaded "
                f"{'is an unregistered task' if unregistered == 1 else 'are unregistered tasks'}: "
                "sent again under the same name, which the worker did not know."
            )
        self.app.push_screen(
            ConfirmScreen("Requeue entries", question, "Requeue"),
            partial(self._bulk_requeue_confirmed, target),
        )

    def _unregistered_loaded(self, target: BulkTarget) -> int:
        """How many of the loaded entries the requeue sends are of a task no worker knew."""
        pane = self._panes.get(target.queue)
        if pane is None or pane.scope != target.scope:
            return 0
        newest = stream_order(target.up_to)
        return sum(
            1
            for entry_id, entry in pane.entries.items()
            if (entry_id in target.ids if target.ids else stream_order(entry_id) <= newest)
            and isinstance(entry, Entry)
            and entry.reason == "unregistered"
        )

    def _bulk_requeue_confirmed(self, target: BulkTarget, confirmed: bool | None) -> None:
        if not confirmed:
            return
        monitor = self.monitor
        scrub = monitor.connection.scrub
        queue = target.queue
        if queue in self._redrives:  # started while this dialog was open (a group's, say)
            self.notify(self._running_notice(queue), severity="warning", markup=False)
            return
        if target.ids:

            def run_marked() -> ActionDone:
                report = monitor.requeue_each(queue, target.ids)
                return requeue_all_done(queue, report, scrub)

            self._after_bulk(queue)
            self.run_in_thread("Requeue", run_marked, monitor.describe)
            return
        stop = threading.Event()
        self._redrive_serial += 1
        token = self._redrive_serial
        self._redrives[queue] = (token, stop)
        pane = self._panes.get(queue)
        if pane is not None:
            pane.busy = True
        if self.groups_pane.queue == queue:
            self.groups_pane.show_progress("requeue starting… · esc stops")
        self.screen.refresh_bindings()

        def progressed(progress: RedriveProgress) -> None:
            self.post_message(RequeueProgressed(queue, progress))

        def run() -> ActionDone:
            try:
                report = monitor.requeue_all(
                    queue,
                    target.entry_filter,
                    up_to=target.up_to,
                    stop=stop,
                    on_progress=progressed,
                )
            finally:
                self.post_message(RequeueEnded(queue, token))
            return requeue_all_done(queue, report, scrub)

        self._after_bulk(queue)
        self.run_in_thread("Requeue", run, monitor.describe)

    def _after_bulk(self, queue: str) -> None:
        pane = self._panes.get(queue)
        if pane is not None:
            pane.clear_marks()

    def _count_then(
        self,
        queue: str,
        scope: Scope,
        up_to: str | None,
        ask: Callable[[BulkTarget], None],
    ) -> None:
        """Count on the server what the action would touch, then ``ask`` about that count."""
        monitor = self.monitor

        def count() -> None:
            try:
                newest = up_to or monitor.newest(queue)
                counted = monitor.count(queue, scope.entry_filter, newest) if newest else 0
            except Exception as error:  # a notification, never a traceback on screen
                self.post_message(
                    ActionDone(f"Counting failed: {monitor.describe(error)}", "error")
                )
                return
            if newest is None or not counted:
                what = "The queue is empty" if scope.is_empty else f"Nothing matches {scope.phrase}"
                self.post_message(ActionDone(f"{what}: nothing to do."))
                return
            target = BulkTarget(queue, scope, newest, counted)
            with contextlib.suppress(RuntimeError):  # the app closed meanwhile
                self.app.call_from_thread(ask, target)

        self.run_worker(count, thread=True, group="actions", exit_on_error=False)

    # -- a requeue running: its progress, and escape to stop it ------------------------------

    def check_requeue_running(self) -> bool:
        pane = self.visible_pane
        return pane is not None and pane.queue in self._redrives

    def action_cancel_requeue(self) -> None:
        pane = self.visible_pane
        running = self._redrives.get(pane.queue) if pane is not None else None
        stop = running[1] if running is not None else None
        if stop is not None and not stop.is_set():
            stop.set()
            self.notify("Stopping the requeue after the message in flight…", markup=False)

    @on(RequeueProgressed)
    def _requeue_progressed(self, message: RequeueProgressed) -> None:
        message.stop()
        line = progress_line(message.progress)
        pane = self._panes.get(message.queue)
        if pane is not None:
            pane.show_progress(line)
        groups = self.groups_pane
        if groups.queue == message.queue:
            groups.show_progress(line)  # a group's requeue, started from the open view

    @on(RequeueEnded)
    def _requeue_ended(self, message: RequeueEnded) -> None:
        message.stop()
        running = self._redrives.get(message.queue)
        if running is None or running[0] != message.run:
            return  # not the run this queue has now: its entry, busy flag and progress stay
        del self._redrives[message.queue]
        pane = self._panes.get(message.queue)
        if pane is not None:
            pane.busy = False
            pane.show_progress(None)
        if self.groups_pane.queue == message.queue:
            self.groups_pane.show_progress(None)
        self.screen.refresh_bindings()
