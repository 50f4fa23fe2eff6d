"""The profiles screen (``p``): the profiles of the config file, to switch to, add, edit, delete.

Writes are the edits of :class:`tui.config_file.Config` that `morgue profiles` makes, through
:func:`tui.config_file.update_config`: atomic, mode 0600, and never over a file that does not
load. The file is read when the screen opens and written only when the user adds, edits,
deletes or sets the default; the profile the dashboard shows (``--url``, the demo) is never
written unless the user saves it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from celery_morgue.core.urls import redact_url
from celery_morgue.tui.config_file import Config, ConfigError, load_config, update_config
from celery_morgue.tui.connection import Connection, with_password
from celery_morgue.tui.dialogs import ConfirmScreen
from celery_morgue.tui.profiles import Profile, ProfileError
from celery_morgue.tui.screens.profile_draft import ProfileDraft
from celery_morgue.tui.screens.profile_form import ProfileForm

DEFAULT_MARK = "*"
SHOWN_MARK = "▶"


@dataclass(frozen=True)
class Switch:
    """The user chose ``profile``; ``connection`` is its clients, made but not used yet."""

    profile: Profile
    connection: Connection


def live_profile(profile: Profile, passwords: Mapping[str, str]) -> Profile:
    """``profile`` with the passwords typed this session (by env var name) in its URLs.

    Only in memory, for connecting: the file keeps naming the variable.
    """
    changes: dict[str, object] = {}
    password = passwords.get(profile.password_env or "")
    if password is not None:
        changes.update(url=with_password(profile.url, password), password_env=None)
    broker_password = passwords.get(profile.broker_password_env or "")
    if broker_password is not None and profile.broker_url is not None:
        changes.update(
            broker_url=with_password(profile.broker_url, broker_password),
            broker_password_env=None,
        )
    return dataclasses.replace(profile, **changes) if changes else profile  # type: ignore[arg-type]


def display_path(path: Path) -> str:
    """``path`` with the home folder as ``~``: shorter, and the same on every machine."""
    try:
        return f"~/{path.relative_to(Path.home())}"
    except (ValueError, RuntimeError):  # not under home, or no home at all
        return str(path)


class ProfilesScreen(Screen[Switch | None]):
    """Dismisses with the profile to switch to, or None (escape)."""

    DEFAULT_CSS = """
    ProfilesScreen #heading {
        dock: top;
        height: auto;
    }
    ProfilesScreen #path {
        height: auto;
        padding: 0 1;
        background: $panel;
        color: $text;
    }
    ProfilesScreen #shown {
        height: auto;
        padding: 0 1;
        color: $text-muted;
    }
    ProfilesScreen #config-error {
        display: none;
        height: auto;
        padding: 0 1;
        background: $error-muted;
        color: $text;
    }
    ProfilesScreen #config-error.-shown {
        display: block;
    }
    ProfilesScreen DataTable {
        height: 1fr;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        # Priority: the table would otherwise take enter for its own "select".
        Binding(
            "enter",
            "switch",
            "Switch",
            priority=True,
            id="profile_switch",
            tooltip="Show it on the dashboard (reconnects)",
        ),
        Binding("a", "add", "Add", id="profile_add", tooltip="Add a profile"),
        Binding("e", "edit", "Edit", id="profile_edit", tooltip="Edit the profile"),
        Binding("d", "delete", "Delete", id="profile_delete", tooltip="Delete the profile"),
        Binding(
            "asterisk,D",
            "set_default",
            "Default",
            id="profile_default",
            key_display="*",
            tooltip="Make the profile the default one",
        ),
        Binding("escape", "back", "Back", id="profiles_back", tooltip="Back to the dashboard"),
    ]

    def __init__(
        self,
        path: Path,
        *,
        shown: Profile,
        connect: Callable[[Profile], Connection],
        passwords: MutableMapping[str, str],
    ) -> None:
        super().__init__()
        self.path = path
        self.shown = shown
        self.connect = connect
        self.passwords = passwords
        self.config: Config | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="heading"):
            yield Static(Text(f"Config file: {display_path(self.path)}"), id="path")
            yield Static(self._shown_line(), id="shown")
            yield Static("", id="config-error", markup=False)
        table: DataTable[Text] = DataTable(
            cursor_type="row", zebra_stripes=False, id="profiles", classes="pane"
        )
        yield table
        # Without the palette key, which ctrl+p still opens: the six keys here fill 80 columns.
        yield Footer(show_command_palette=False)

    def _shown_line(self) -> Text:
        shown = self.shown
        if self.config is None:
            where = ""
        elif shown.name not in self.config.profiles:
            where = ", not in the config file"
        elif self.config.profiles[shown.name] != shown:
            where = ", not as the config file has it now"
        else:
            where = f", marked {SHOWN_MARK}"
        return Text.assemble(
            "The dashboard shows ",
            (shown.name, "bold"),
            f" ({redact_url(shown.url)}{' read-only' if shown.readonly else ''}){where}.",
        )

    @property
    def table(self) -> DataTable[Text]:
        return self.query_one("#profiles", DataTable)

    def on_mount(self) -> None:
        table = self.table
        table.add_column(Text(""), key="marks")
        table.add_column(Text("Name"), key="name")
        table.add_column(Text("Mode"), key="mode")
        table.add_column(Text("Redis"), key="url")
        table.add_column(Text("Broker"), key="broker")
        table.border_subtitle = Text(f"{DEFAULT_MARK} default · {SHOWN_MARK} on the dashboard")
        self.reload()
        table.focus()

    # -- the list -------------------------------------------------------------------------

    def reload(self, config: Config | None = None, select: str | None = None) -> None:
        """Show ``config`` (else the file as it is now), the cursor on ``select`` if given."""
        error = self.query_one("#config-error", Static)
        if config is None:
            try:
                config = load_config(self.path)
            except ConfigError as exc:
                self.config = None
                error.update(Text(f"{exc} (fix the file; nothing is written to it until then)"))
                error.add_class("-shown")
                self._show_rows([], None)
                return
        error.remove_class("-shown")
        self.config = config
        self.query_one("#shown", Static).update(self._shown_line())
        self._show_rows([config.profiles[name] for name in config.names()], config.default)
        if select is not None and select in config.profiles:
            self.table.move_cursor(row=self.table.get_row_index(select), animate=False)

    def _show_rows(self, profiles: list[Profile], default: str | None) -> None:
        table = self.table
        kept = self.selected_name
        table.clear()
        for profile in profiles:
            marks = (DEFAULT_MARK if profile.name == default else " ") + (
                SHOWN_MARK if profile == self.shown else " "
            )
            table.add_row(
                Text(marks),
                Text(profile.name),
                Text("read-only" if profile.readonly else ""),
                Text(redact_url(profile.url)),
                Text(redact_url(profile.broker_url) if profile.broker_url else "-"),
                key=profile.name,
            )
        if kept is not None and kept in {profile.name for profile in profiles}:
            table.move_cursor(row=table.get_row_index(kept), animate=False)
        count = len(profiles)
        table.border_title = Text(f"Profiles · {count}")
        if not profiles and self.config is not None:
            where = "" if self.config.exists else " (no file yet: adding creates it)"
            table.border_title = Text(f"Profiles · none{where}; a adds one")

    @property
    def selected_name(self) -> str | None:
        table = self.table
        if table.row_count == 0 or not table.is_valid_row_index(table.cursor_row):
            return None
        return table.ordered_rows[table.cursor_row].key.value

    def _selected(self) -> Profile | None:
        name = self.selected_name
        profile = self.config.profiles.get(name) if self.config and name else None
        if profile is None:
            self.notify("No profile selected.", severity="warning", markup=False)
        return profile

    def _writable(self) -> Config | None:
        if self.config is None:
            self.notify(
                "The config file does not load: fix it first.", severity="error", markup=False
            )
        return self.config

    # -- actions ---------------------------------------------------------------------------

    def action_switch(self) -> None:
        profile = self._selected()
        if profile is None:
            return
        try:
            connection = self.connect(live_profile(profile, self.passwords))
        except ProfileError as exc:
            self.notify(f"Cannot switch: {exc}", severity="error", markup=False)
            return
        self.dismiss(Switch(profile, connection))

    def action_add(self) -> None:
        config = self._writable()
        if config is not None:
            self._open_form(None, config)

    def action_edit(self) -> None:
        config = self._writable()
        profile = self._selected() if config is not None else None
        if config is not None and profile is not None:
            self._open_form(profile, config)

    def _open_form(self, profile: Profile | None, config: Config) -> None:
        written: list[Config] = []

        def save(draft: ProfileDraft) -> None:
            def change(config: Config) -> None:
                config.save_profile(draft.profile, replaces=draft.replaces)

            written.append(update_config(self.path, change))

        def closed(draft: ProfileDraft | None) -> None:
            if draft is None or not written:
                return
            self.passwords.update(draft.session_passwords)
            name = draft.profile.name
            self.reload(written[-1], select=name)
            kept = (
                " (its password is kept for this session only)" if draft.session_passwords else ""
            )
            self.notify(f"Saved profile {name!r} in {display_path(self.path)}{kept}.", markup=False)

        form = ProfileForm(profile, taken=set(config.profiles), save=save, passwords=self.passwords)
        self.app.push_screen(form, closed)

    def action_delete(self) -> None:
        if self._writable() is None:
            return
        profile = self._selected()
        if profile is None:
            return
        question = Text.assemble(
            "Delete profile ",
            (profile.name, "bold"),
            f" ({redact_url(profile.url)}) from {display_path(self.path)}?",
        )

        def confirmed(answer: bool | None) -> None:
            if answer:
                deleted = f"Deleted profile {profile.name!r}."
                self._write(lambda config: config.remove_profile(profile.name), deleted, None)

        self.app.push_screen(ConfirmScreen("Delete profile", question, "Delete"), confirmed)

    def action_set_default(self) -> None:
        if self._writable() is None:
            return
        profile = self._selected()
        if profile is not None:
            done = f"{profile.name!r} is the default profile."
            self._write(lambda config: config.set_default(profile.name), done, profile.name)

    def _write(self, change: Callable[[Config], None], done: str, select: str | None) -> None:
        try:
            config = update_config(self.path, change)
        except ConfigError as exc:
            self.notify(f"Not saved: {exc}", severity="error", markup=False)
            self.reload()
            return
        self.reload(config, select=select)
        self.notify(done, markup=False)

    def action_back(self) -> None:
        self.dismiss(None)
