"""What the dashboard's destructive keys do: delete, requeue, clear and revoke, each confirmed.

Every one of them asks first in a :class:`ConfirmScreen` (the safe button focused, ``y`` to go
ahead), whether started from the table, the entry detail or the command palette.

:class:`DashboardActions` is the dashboard's base class: it holds the actions, their
confirmations and their command-palette entries; the dashboard (:mod:`tui.screens.dashboard`)
holds the layout and the polling.
The blocking call of each action runs in a thread worker that posts an :class:`ActionDone`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial

from rich.text import Text
from textual import on
from textual.app import SystemCommand
from textual.binding import Binding
from textual.widgets import DataTable

from celery_morgue.core.dlq import StoredEntry
from celery_morgue.core.entry import Entry, UnreadableEntry
from celery_morgue.core.errors import DLQError
from celery_morgue.core.wording import plural
from celery_morgue.core.zombies import ActiveTask
from celery_morgue.tui.cells import Clock, clipped_line, entry_age, not_requeueable, printable
from celery_morgue.tui.messages import ActionDone
from celery_morgue.tui.monitor import Monitor
from celery_morgue.tui.polling import PollSchedule
from celery_morgue.tui.profiles import Profile
from celery_morgue.tui.screens.confirm import ConfirmScreen, RevokeConfirmScreen
from celery_morgue.tui.screens.entry import EntryAction, EntryScreen
from celery_morgue.tui.screens.outcomes import (
    entry_name,
    requeue_all_done,
    requeue_refused,
    revoke_summary,
)
from celery_morgue.tui.screens.readonly import GuardedScreen
from celery_morgue.tui.widgets.dlq_pane import DLQPane
from celery_morgue.tui.widgets.tasks_pane import TasksPane

DLQ_ACTIONS = frozenset({"clear_queue", "delete_entry", "requeue_entry", "requeue_queue"})
TASK_ACTIONS = frozenset({"revoke", "revoke_zombies"})
PALETTE_TITLES = {
    "filter": "Filter the table",
    "clear_queue": "Clear queue",
    "delete_entry": "Delete entry",
    "requeue_entry": "Requeue entry",
    "requeue_queue": "Requeue whole queue",
    "revoke": "Revoke task",
    "revoke_zombies": "Revoke zombies",
}
# How many task names a revoke confirmation lists before "and N more".
LISTED_TASKS = 5


class DashboardActions(GuardedScreen[None]):
    """The actions of :class:`tui.screens.dashboard.DashboardScreen`, which sets these up."""

    profile: Profile
    monitor: Monitor
    clock: Clock
    poll: bool
    dlq_poll: PollSchedule
    cluster_poll: PollSchedule

    @property
    def visible_pane(self) -> DLQPane | None:
        raise NotImplementedError

    @property
    def tasks_pane(self) -> TasksPane:
        raise NotImplementedError

    def _describe(self, error: BaseException) -> str:
        return self.monitor.describe(error)

    def palette_commands(self) -> Iterable[SystemCommand]:
        """The same actions as the keys, for ctrl+p, whatever pane has the focus."""
        for binding in self.BINDINGS:
            assert isinstance(binding, Binding)
            if binding.action.startswith("app."):
                continue
            title = PALETTE_TITLES.get(binding.action, binding.description)
            help_text = binding.tooltip or binding.description
            if self.readonly and binding.action in DLQ_ACTIONS | TASK_ACTIONS:
                help_text += " (disabled: read-only profile)"
            yield SystemCommand(title, help_text, partial(self.run_from_palette, binding.action))

    def run_from_palette(self, action: str) -> None:
        if self.refuse_readonly(action):
            return
        getattr(self, f"action_{action}")()

    def _selected_entry(self) -> tuple[DLQPane, StoredEntry] | None:
        pane = self.visible_pane
        entry = pane.selected_entry if pane is not None else None
        if pane is None or entry is None:
            self.notify("No entry selected.", severity="warning", markup=False)
            return None
        return pane, entry

    @on(DataTable.RowSelected, "DLQPane LiveTable")
    def _open_entry(self, event: DataTable.RowSelected) -> None:
        pane = event.data_table.parent
        if not isinstance(pane, DLQPane):
            return
        entry = pane.entry(event.row_key.value or "")
        if entry is None:
            return
        queue = pane.queue
        self.app.push_screen(
            EntryScreen(entry, queue, clock=self.clock, readonly=self.readonly),
            partial(self._entry_closed, queue, entry),
        )

    def _entry_closed(self, queue: str, entry: StoredEntry, choice: EntryAction | None) -> None:
        if choice == "delete":
            self._confirm_delete(queue, entry)
        elif choice == "requeue":
            self._confirm_requeue(queue, entry)

    def action_delete_entry(self) -> None:
        selected = self._selected_entry()
        if selected is not None:
            self._confirm_delete(selected[0].queue, selected[1])

    def action_requeue_entry(self) -> None:
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

        self._run_action("Delete", run)

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

        self._run_action("Requeue", run)

    def action_clear_queue(self) -> None:
        pane = self.visible_pane
        # What the user has seen when pressing the key: entries arriving later are kept, even
        # ones a refresh loads while the dialog is open.
        up_to = pane.newest_seen if pane is not None else None
        if pane is None or up_to is None:
            self.notify("Nothing to clear.", markup=False)
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
        self.app.push_screen(
            ConfirmScreen("Clear queue", question, "Clear"),
            partial(self._clear_confirmed, queue, up_to),
        )

    def _clear_confirmed(self, queue: str, up_to: str, confirmed: bool | None) -> None:
        if not confirmed:
            return
        monitor = self.monitor

        def run() -> ActionDone:
            removed = monitor.clear(queue, up_to)
            cleared = plural(removed, "entry", "entries")
            return ActionDone(f"Cleared {cleared} from {queue}.", refresh_dlq=True)

        self._run_action("Clear", run)

    def action_requeue_queue(self) -> None:
        pane = self.visible_pane
        if pane is None or not pane.order:
            self.notify("Nothing to requeue.", markup=False)
            return
        queue, count = pane.queue, pane.total or len(pane.order)
        question = Text.assemble(
            "Requeue every entry of ",
            (printable(queue), "bold"),
            f"? About {count:,} tasks are sent again, each under a new id. Entries whose "
            "arguments were changed when stored, and unreadable ones, are skipped.",
        )
        loaded = list(pane.entries.values())
        unregistered = sum(1 for e in loaded if isinstance(e, Entry) and e.reason == "unregistered")
        if unregistered:
            question.append(
                f"\n\n{plural(unregistered, 'entry', 'entries')} of those loaded "
                f"{'is an unregistered task' if unregistered == 1 else 'are unregistered tasks'}: "
                "sent again under the same name, which the worker did not know."
            )
        self.app.push_screen(
            ConfirmScreen("Requeue queue", question, "Requeue all"),
            partial(self._requeue_all_confirmed, queue),
        )

    def _requeue_all_confirmed(self, queue: str, confirmed: bool | None) -> None:
        if not confirmed:
            return
        monitor = self.monitor

        def run() -> ActionDone:
            return requeue_all_done(queue, monitor.requeue_all(queue), monitor.connection.scrub)

        self._run_action("Requeue all", run)

    def action_revoke(self) -> None:
        task = self.tasks_pane.selected_task
        if task is None:
            self.notify("No running task selected.", severity="warning", markup=False)
            return
        question = Text.assemble(
            "Revoke ",
            (printable(task.name), "bold"),
            f" ({printable(task.id)}) on {printable(task.worker)}?\n\n"
            "The worker terminates it with the chosen signal.",
        )
        self._confirm_revoke("Revoke task", question, [task])

    def action_revoke_zombies(self) -> None:
        zombies = self.tasks_pane.zombies
        if not zombies:
            self.notify("No zombie tasks.", markup=False)
            return
        names = ", ".join(clipped_line(task.name, 40) for task in zombies[:LISTED_TASKS])
        more = f" and {len(zombies) - LISTED_TASKS} more" if len(zombies) > LISTED_TASKS else ""
        question = Text(
            f"Revoke {plural(len(zombies), 'zombie task')} (past their hard limit plus "
            f"{self.profile.grace:g} s grace)?\n\n{names}{more}"
        )
        self._confirm_revoke("Revoke zombies", question, zombies)

    def _confirm_revoke(self, title: str, question: Text, tasks: list[ActiveTask]) -> None:
        dialog = RevokeConfirmScreen(title, question)

        def confirmed(answer: bool | None) -> None:
            if answer:
                self._revoke(tasks, dialog.signal)

        self.app.push_screen(dialog, confirmed)

    def _revoke(self, tasks: list[ActiveTask], signal: str) -> None:
        monitor = self.monitor

        def run() -> ActionDone:
            report = monitor.revoke(tasks, signal)
            return ActionDone(revoke_summary(report, signal), refresh_cluster=True)

        self._run_action("Revoke", run)

    def _run_action(self, label: str, run: Callable[[], ActionDone]) -> None:
        def guarded() -> None:
            try:
                done = run()
            except Exception as error:  # a notification, never a traceback on screen
                done = ActionDone(
                    f"{label} failed: {self._describe(error)}",
                    severity="error",
                    refresh_dlq=True,
                )
            self.post_message(done)

        self.run_worker(guarded, thread=True, group="actions", exit_on_error=False)

    def on_action_done(self, message: ActionDone) -> None:
        self.notify(message.text, severity=message.severity, markup=False)
        if self.poll and message.refresh_dlq:
            self.dlq_poll.run_now()
        if self.poll and message.refresh_cluster:
            self.cluster_poll.run_now()
