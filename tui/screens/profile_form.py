"""The profile editor: one form to add or edit a profile, checked field by field before saving.

A refused value is explained under its own field and nothing is written; the checks are in
:mod:`tui.screens.profile_draft`. Passwords are typed masked, and go into the file only when
"store passwords in the file" is on.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.content import Content
from textual.widgets import Button, Checkbox, Input, Label, Static

from celery_morgue.tui.config_file import ConfigError
from celery_morgue.tui.dialogs import Dialog
from celery_morgue.tui.profiles import Profile
from celery_morgue.tui.screens.profile_draft import (
    TEXT_FIELDS,
    FormValues,
    ProfileDraft,
    check_form,
    initial_values,
)


class MarkedCheckbox(Checkbox):
    """A checkbox whose mark is a character, so that it shows without colour (NO_COLOR)."""

    def render(self) -> Content:
        self.BUTTON_INNER = "X" if self.value else " "
        return super().render()


class ProfileForm(Dialog[ProfileDraft | None]):
    """Add (``profile`` None) or edit a profile. ``save`` writes the draft; a ``ConfigError``
    it raises is shown in the form, which stays open so nothing typed is lost."""

    DEFAULT_CSS = """
    ProfileForm .field {
        height: 1;
    }
    ProfileForm .field Label {
        width: 22;
        color: $text-muted;
    }
    ProfileForm .field Input {
        width: 1fr;
    }
    ProfileForm .field-error {
        display: none;
        height: auto;
        margin-left: 22;
        color: $text-error;
    }
    ProfileForm .field-error.-shown {
        display: block;
    }
    ProfileForm Checkbox {
        margin-left: 22;
    }
    ProfileForm #form-error {
        display: none;
        height: auto;
        margin-top: 1;
        color: $text-error;
    }
    ProfileForm #form-error.-shown {
        display: block;
    }
    ProfileForm #buttons {
        height: auto;
        margin-top: 1;
        align-horizontal: right;
    }
    ProfileForm Button {
        margin-left: 1;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "ctrl+s", "save", "Save", id="profile_save", tooltip="Profile form: check and save"
        ),
        Binding(
            "escape",
            "cancel",
            "Cancel",
            id="profile_cancel",
            tooltip="Profile form: close without saving",
        ),
    ]

    def __init__(
        self,
        profile: Profile | None,
        *,
        taken: Collection[str],
        save: Callable[[ProfileDraft], None],
        passwords: Mapping[str, str],
    ) -> None:
        super().__init__()
        self.original = profile
        self.taken = taken
        self.save = save
        self.values = initial_values(profile, passwords)

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="form", classes="dialog-box"):
            for field in TEXT_FIELDS:
                with Horizontal(classes="field"):
                    yield Label(field.label, markup=False)
                    yield Input(
                        self.values.text[field.key],
                        placeholder=field.help,
                        password=field.password,
                        id=field.key,
                        compact=True,
                    )
                yield Static("", id=f"{field.key}-error", classes="field-error", markup=False)
                if field.key == "password":
                    yield MarkedCheckbox(
                        "Store passwords in the file (off: use env vars)",
                        self.values.store_passwords,
                        id="store_passwords",
                        compact=True,
                    )
            yield MarkedCheckbox(
                "Read-only: refuse destructive actions",
                self.values.readonly,
                id="readonly",
                compact=True,
            )
            yield Static("", id="form-error", markup=False)
            with Horizontal(id="buttons"):
                yield Button("Cancel (esc)", id="cancel", variant="default", compact=True)
                yield Button("Save (ctrl+s)", id="save", variant="primary", compact=True)

    def on_mount(self) -> None:
        form = self.query_one("#form")
        if self.original is None:
            form.border_title = Text("Add profile")
        else:
            form.border_title = Text.assemble("Edit profile ", (self.original.name, "bold"))
        form.border_subtitle = Text("enter or ctrl+s saves, escape cancels")
        self.query_one("#name", Input).focus()

    def read(self) -> FormValues:
        return FormValues(
            {field.key: self.query_one(f"#{field.key}", Input).value for field in TEXT_FIELDS},
            store_passwords=self.query_one("#store_passwords", Checkbox).value,
            readonly=self.query_one("#readonly", Checkbox).value,
        )

    def show_errors(self, errors: Mapping[str, str]) -> None:
        for error in self.query(".field-error").results(Static):
            key = (error.id or "").removesuffix("-error")
            message = errors.get(key, "")
            error.update(Text(message))
            error.set_class(bool(message), "-shown")
            self.query_one(f"#{key}", Input).set_class(bool(message), "-invalid")
        first = next((field.key for field in TEXT_FIELDS if field.key in errors), None)
        if first is not None:
            self.query_one(f"#{first}", Input).focus()

    def show_form_error(self, message: str) -> None:
        error = self.query_one("#form-error", Static)
        error.update(Text(message))
        error.set_class(bool(message), "-shown")

    def action_save(self) -> None:
        original = self.original.name if self.original is not None else None
        draft, errors = check_form(self.read(), replaces=original, taken=self.taken)
        self.show_errors(errors)
        self.show_form_error("")
        if draft is None:
            count = len(errors)
            self.notify(
                f"Not saved: {count} field{'s' if count != 1 else ''} to fix.",
                severity="error",
                markup=False,
            )
            return
        try:
            self.save(draft)
        except ConfigError as exc:
            self.show_form_error(f"Not saved: {exc}")
            return
        self.dismiss(draft)

    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_save()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "save":
            self.action_save()
        else:
            self.action_cancel()
