"""What a widget or screen that owns actions shares: guards, palette entries, thread workers.

The owner binds its keys in its own ``BINDINGS`` and names the destructive ones in
``DESTRUCTIVE_ACTIONS``. Textual asks the owner's ``check_action`` whenever the owner is in the
focus chain, so the footer shows the keys of the focused widget, and these guards apply to
them: on a read-only profile a destructive key stays in the footer, dimmed, and says why when
pressed; while the rows it would act on are not shown (a terminal too small), it is hidden.
Every binding is also a command-palette entry, which goes through the same guards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

from textual import events
from textual.app import SystemCommand
from textual.binding import Binding
from textual.widget import Widget

from celery_morgue.tui.messages import ActionDone

if TYPE_CHECKING:
    _Mixin = Widget
else:
    # A plain class at run time: Textual takes a widget's CSS type names and DEFAULT_CSS along
    # its first base that is a node only, so a Widget here would hide the real base
    # (Horizontal, TablePane, Screen) and its styles. The type checker sees the Widget.
    _Mixin = object


class ActionOwner(_Mixin):
    """Mixed into a widget or screen before its Textual base: ``class X(ActionOwner, Vertical)``.

    ``readonly`` (keyword-only) is the profile's: True disables ``DESTRUCTIVE_ACTIONS``.
    """

    DESTRUCTIVE_ACTIONS: ClassVar[frozenset[str]] = frozenset()
    # Titles in the command palette by action; an action without one shows its description.
    PALETTE_TITLES: ClassVar[Mapping[str, str]] = {}

    def __init__(self, *args: Any, readonly: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.readonly = readonly

    @property
    def rows_shown(self) -> bool:
        """Whether what the owner acts on is on screen: no ancestor is hidden (``display``)."""
        return all(node.display for node in self.ancestors_with_self)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in self.DESTRUCTIVE_ACTIONS:
            if not self.rows_shown:
                return False  # they would act on rows the user cannot see
            if self.readonly:
                # None shows the binding dimmed and makes Textual skip it; the key then
                # reaches on_key, which explains instead of doing nothing.
                return None
        return super().check_action(action, parameters)

    def refuse_readonly(self, action: str) -> bool:
        """Notify and return True when ``action`` is refused because the profile is read-only."""
        if self.readonly and action in self.DESTRUCTIVE_ACTIONS:
            label = action.replace("_", " ")
            self.notify(
                f"Read-only profile: {label} is disabled.",
                severity="warning",
                markup=False,
            )
            return True
        return False

    def on_key(self, event: events.Key) -> None:
        active = self.screen.active_bindings.get(event.key)
        if active is None or active.enabled or active.node is not self:
            return
        if self.refuse_readonly(active.binding.action):
            event.stop()
            event.prevent_default()

    def palette_commands(self) -> Iterable[SystemCommand]:
        """The owner's actions, for ctrl+p, whatever has the focus."""
        for binding in self.BINDINGS:
            if not isinstance(binding, Binding) or binding.action.startswith("app."):
                continue
            title = self.PALETTE_TITLES.get(binding.action, binding.description)
            help_text = binding.tooltip or binding.description
            if self.readonly and binding.action in self.DESTRUCTIVE_ACTIONS:
                help_text += " (disabled: read-only profile)"
            yield SystemCommand(title, help_text, partial(self.run_from_palette, binding.action))

    def run_from_palette(self, action: str) -> None:
        # The palette runs actions without asking check_action.
        if action in self.DESTRUCTIVE_ACTIONS and not self.rows_shown:
            self.notify(
                "The terminal is too small to show the rows this acts on: enlarge it first.",
                severity="warning",
                markup=False,
            )
            return
        if self.refuse_readonly(action):
            return
        getattr(self, f"action_{action}")()

    def run_in_thread(
        self,
        label: str,
        run: Callable[[], ActionDone],
        describe: Callable[[BaseException], str],
    ) -> None:
        """Run ``run`` (a blocking call to Redis or the workers) in a thread worker.

        Its :class:`ActionDone`, or the failure ``describe`` puts in words, is posted to the
        owner and bubbles up to the dashboard, which notifies and refreshes.
        """

        def guarded() -> None:
            try:
                done = run()
            except Exception as error:  # a notification, never a traceback on screen
                done = ActionDone(
                    f"{label} failed: {describe(error)}", severity="error", refresh_dlq=True
                )
            self.post_message(done)

        self.run_worker(guarded, thread=True, group="actions", exit_on_error=False)
