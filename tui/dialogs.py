"""Dialogs: a box over the screen it opened on; confirmations ask ``y`` / ``n`` before harm.

Outside :mod:`tui.screens` on purpose: the widgets that own the destructive keys push these
confirmations themselves, and widgets do not import screens (the import-linter contract). The
dialogs depend on nothing of the UI, so importing them drags no screen into a widget.
Their looks are in ``dialogs.tcss``, loaded by the app.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

SIGTERM = "SIGTERM"
SIGKILL = "SIGKILL"

DialogResult = TypeVar("DialogResult")


class Dialog(ModalScreen[DialogResult]):
    """A modal box centred over the dimmed screen below; the box has the ``dialog-box`` class."""


@dataclass(frozen=True)
class Choice(Generic[DialogResult]):
    """A button of a confirmation: what the dialog dismisses with when it is chosen."""

    button_id: str
    label: str
    result: DialogResult


class Confirmation(Dialog[DialogResult]):
    """Asks before something destructive: Cancel (focused) and the ``choices``, each a button.

    ``y`` picks the first choice; ``n``, escape and Cancel dismiss with ``cancelled``.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "confirm", "Yes", id="confirm_yes"),
        Binding("n", "cancel", "No", id="confirm_no"),
        Binding("escape", "cancel", "Cancel", id="confirm_cancel"),
        Binding(
            "left,h", "app.focus_previous", "Previous button", show=False, id="confirm_previous"
        ),
        Binding("right,l", "app.focus_next", "Next button", show=False, id="confirm_next"),
    ]

    # The safe choice has the focus: a stray enter must not destroy anything.
    AUTO_FOCUS = "#cancel"

    def __init__(
        self,
        title: str,
        question: Text,
        choices: Sequence[Choice[DialogResult]],
        *,
        cancelled: DialogResult,
    ) -> None:
        super().__init__()
        self.title_text = title
        self.question = question
        self.choices = {choice.button_id: choice for choice in choices}
        self.confirm_id = choices[0].button_id
        self.cancelled = cancelled

    def compose(self) -> ComposeResult:
        # Set up here, not in on_mount: a dialog pushed while the app quits (a key typed right
        # after q) is mounted without being composed, and a query there would crash the exit.
        with Vertical(id="dialog", classes="dialog-box") as dialog:
            dialog.border_title = Text(self.title_text)
            yield Static(self.question, id="question")
            with Horizontal(id="buttons"):
                yield Button("Cancel (n)", id="cancel", variant="default")
                for choice in self.choices.values():
                    yield Button(choice.label, id=choice.button_id, variant="error")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.choose(event.button.id or "cancel")

    def choose(self, button_id: str) -> None:
        choice = self.choices.get(button_id)
        self.dismiss(choice.result if choice is not None else self.cancelled)

    def action_confirm(self) -> None:
        self.choose(self.confirm_id)

    def action_cancel(self) -> None:
        self.choose("cancel")


class ConfirmScreen(Confirmation[bool]):
    """Dismisses with True only on an explicit yes."""

    def __init__(self, title: str, question: Text, confirm_label: str) -> None:
        super().__init__(
            title, question, [Choice("confirm", f"{confirm_label} (y)", True)], cancelled=False
        )


class RevokeConfirmScreen(Confirmation[str | None]):
    """Revoke with terminate: dismisses with the signal, SIGTERM (``y``) or SIGKILL (``K``).

    SIGKILL is shift+k, never ``k``: ``k`` means "up" everywhere else and ``h``/``l`` move
    between these buttons, so a plain ``k`` typed out of habit must not kill anything.
    None when cancelled.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("K", "kill", "Kill (SIGKILL)", id="confirm_kill"),
    ]

    def __init__(self, title: str, question: Text) -> None:
        choices: list[Choice[str | None]] = [
            Choice("confirm", f"Revoke {SIGTERM} (y)", SIGTERM),
            Choice("kill", f"Kill {SIGKILL} (K)", SIGKILL),
        ]
        super().__init__(title, question, choices, cancelled=None)

    def action_kill(self) -> None:
        self.choose("kill")
