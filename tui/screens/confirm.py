"""Confirmation dialogs: ``y`` confirms, ``n`` or escape cancels, and the safe button has focus."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

SIGTERM = "SIGTERM"
SIGKILL = "SIGKILL"


class ConfirmScreen(ModalScreen[bool]):
    """Asks before something destructive; dismisses with True only on an explicit yes."""

    DEFAULT_CSS = """
    ConfirmScreen {
        align: center middle;
        background: $background 60%;
    }
    ConfirmScreen > #dialog {
        width: 64;
        max-width: 100%;
        height: auto;
        max-height: 100%;
        border: round $error;
        border-title-color: $text;
        background: $surface;
        padding: 0 1;
    }
    ConfirmScreen #question {
        height: auto;
        margin: 1 0;
    }
    ConfirmScreen #buttons {
        height: auto;
        align-horizontal: right;
    }
    ConfirmScreen Button {
        margin-left: 1;
    }
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

    def __init__(self, title: str, question: Text, confirm_label: str) -> None:
        super().__init__()
        self.title_text = title
        self.question = question
        self.confirm_label = confirm_label

    # The safe choice has the focus: a stray enter must not destroy anything.
    AUTO_FOCUS = "#cancel"

    def compose(self) -> ComposeResult:
        # Set up here, not in on_mount: a dialog pushed while the app quits (a key typed right
        # after q) is mounted without being composed, and a query there would crash the exit.
        with Vertical(id="dialog") as dialog:
            dialog.border_title = Text(self.title_text)
            yield Static(self.question, id="question")
            with Horizontal(id="buttons"):
                yield from self.buttons()

    def buttons(self) -> ComposeResult:
        yield Button("Cancel (n)", id="cancel", variant="default")
        yield Button(f"{self.confirm_label} (y)", id="confirm", variant="error")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "cancel":
            self.dismiss(False)
        else:
            self.choose(event.button.id or "")

    def choose(self, button_id: str) -> None:
        self.dismiss(button_id == "confirm")

    def action_confirm(self) -> None:
        self.choose("confirm")

    def action_cancel(self) -> None:
        self.dismiss(False)


class RevokeConfirmScreen(ConfirmScreen):
    """Revoke with terminate: SIGTERM by default, SIGKILL (``K``) for tasks that ignore it.

    SIGKILL is shift+k, never ``k``: ``k`` means "up" everywhere else and ``h``/``l`` move
    between these buttons, so a plain ``k`` typed out of habit must not kill anything.
    The result stays a bool; the chosen signal is read from :attr:`signal` after a yes.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("K", "kill", "Kill (SIGKILL)", id="confirm_kill"),
    ]

    def __init__(self, title: str, question: Text) -> None:
        super().__init__(title, question, f"Revoke {SIGTERM}")
        self.signal = SIGTERM

    def buttons(self) -> ComposeResult:
        yield from super().buttons()
        yield Button(f"Kill {SIGKILL} (K)", id="kill", variant="error")

    def choose(self, button_id: str) -> None:
        if button_id == "kill":
            self.signal = SIGKILL
        self.dismiss(button_id in ("confirm", "kill"))

    def action_kill(self) -> None:
        self.choose("kill")
