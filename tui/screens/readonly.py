"""Read-only profiles: destructive keys stay visible but disabled, and say why when pressed."""

from __future__ import annotations

from textual import events
from textual.screen import Screen, ScreenResultType

# Every action that changes Redis or the workers.
DESTRUCTIVE_ACTIONS = frozenset(
    {
        "revoke",
        "revoke_zombies",
        "clear_queue",
        "delete_entry",
        "requeue_entry",
        "requeue_queue",
    }
)


class GuardedScreen(Screen[ScreenResultType]):
    """A screen whose destructive actions a read-only profile disables.

    ``check_action`` returning None shows a binding dimmed and makes Textual skip it; the key
    then reaches :meth:`on_key`, which explains instead of doing nothing.
    """

    def __init__(self, *, readonly: bool) -> None:
        super().__init__()
        self.readonly = readonly

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if self.readonly and action in DESTRUCTIVE_ACTIONS:
            return None
        return True

    def refuse_readonly(self, action: str) -> bool:
        """Notify and return True when ``action`` is refused because the profile is read-only."""
        if self.readonly and action in DESTRUCTIVE_ACTIONS:
            label = action.replace("_", " ")
            self.notify(
                f"Read-only profile: {label} is disabled.",
                severity="warning",
                markup=False,
            )
            return True
        return False

    def on_key(self, event: events.Key) -> None:
        active = self.active_bindings.get(event.key)
        if active is None or active.enabled:
            return
        if self.refuse_readonly(active.binding.action):
            event.stop()
            event.prevent_default()
