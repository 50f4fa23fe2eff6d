"""The morgue terminal UI: ``run_ui(profile)`` or ``MorgueApp(profile_or_connection)``."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePath
from typing import ClassVar

from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.dom import DOMNode
from textual.screen import Screen
from textual.theme import BUILTIN_THEMES, Theme

from celery_morgue.tui.actions import ActionOwner
from celery_morgue.tui.cells import SYSTEM_CLOCK, Clock
from celery_morgue.tui.config_file import config_path as default_config_path
from celery_morgue.tui.connection import Connection
from celery_morgue.tui.dialogs import Confirmation, RevokeConfirmScreen
from celery_morgue.tui.monitor import DEFAULT_CONNECT, ConnectionFactory, Monitor
from celery_morgue.tui.profiles import Profile
from celery_morgue.tui.screens.dashboard import DashboardScreen
from celery_morgue.tui.screens.entry import EntryScreen
from celery_morgue.tui.screens.help import HelpScreen, HelpSection
from celery_morgue.tui.screens.profile_form import ProfileForm
from celery_morgue.tui.screens.profiles import ProfilesScreen, Switch
from celery_morgue.tui.widgets.dead_letters import DeadLetters
from celery_morgue.tui.widgets.dlq_pane import DLQPane
from celery_morgue.tui.widgets.groups_pane import GroupsPane
from celery_morgue.tui.widgets.pane import FilterInput, TablePane
from celery_morgue.tui.widgets.queue_list import QueueList
from celery_morgue.tui.widgets.tables import LiveTable
from celery_morgue.tui.widgets.tasks_pane import TasksPane


class UnknownThemeError(ValueError):
    """``--theme`` names no theme Textual has."""


class MorgueApp(App[None]):
    """The dashboard for one profile.

    ``source`` is a ``Profile`` (connected with ``connect``) or an already open ``Connection``.
    ``poll=False`` starts no I/O at all: tests then feed the dashboard through
    :mod:`tui.messages`, with ``clock`` frozen. ``config_path`` is the config file the profiles
    screen reads and writes (None: ``$MORGUE_CONFIG``, else the user's config folder).
    """

    CSS_PATH: ClassVar[list[str | PurePath]] = [
        "app.tcss",
        "dialogs.tcss",
        "widgets/panes.tcss",
        "widgets/status.tcss",
    ]
    TITLE = "morgue"
    # Each dashboard is the base screen of its own mode: switching profiles starts a new mode
    # and removes the old one, screens, polls and all (Textual cannot replace a base screen).
    DEFAULT_MODE = "dashboard-1"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit", id="quit_app"),
        Binding("question_mark", "help", "Help", id="help", key_display="?"),
        # Textual adds this binding itself unless the app has one: ours carries an id.
        Binding(
            "ctrl+p",
            "command_palette",
            "palette",
            show=False,
            priority=True,
            id="command_palette",
            tooltip="Command palette: every action by name",
        ),
    ]

    def __init__(
        self,
        source: Profile | Connection,
        *,
        clock: Clock = SYSTEM_CLOCK,
        poll: bool = True,
        keymap: Mapping[str, str] | None = None,
        theme: str | None = None,
        connect: ConnectionFactory = DEFAULT_CONNECT,
        config_path: Path | None = None,
        requeue_rate: float | None = None,
    ) -> None:
        chosen = _builtin_theme(theme)
        # Textual picks its NO_COLOR filter while constructing the app, from the theme it has
        # then: an ANSI theme set afterwards would be greyed by the truecolor filter (black on
        # black). Saying up front that colours are ANSI picks the right one.
        super().__init__(ansi_color=True if chosen is not None and chosen.ansi else None)
        if chosen is not None:
            self.theme = chosen.name
        connection = connect(source) if isinstance(source, Profile) else source
        self.profile = connection.profile
        # Messages a second a requeue of many entries (E) publishes at most; None: as fast as
        # the broker takes them.
        self.requeue_rate = requeue_rate
        self.monitor = Monitor(connection, requeue_rate=requeue_rate)
        self._owns_connection = isinstance(source, Profile)
        self.clock = clock
        self.poll = poll
        self.connection_factory = connect
        self.config_path = config_path
        # Passwords typed in the profile editor but not stored: env var name -> password.
        self.session_passwords: dict[str, str] = {}
        self.keymap: dict[str, str] = {}
        if keymap:
            self.set_keymap(keymap)
        self._dashboards = 1
        self.add_mode(self.DEFAULT_MODE, self._new_dashboard)

    def set_keymap(self, keymap: Mapping[str, str]) -> None:
        # Kept in public so the help screen can show the keys as remapped.
        self.keymap = dict(keymap)
        super().set_keymap(keymap)

    def update_keymap(self, keymap: Mapping[str, str]) -> None:
        self.keymap.update(keymap)
        super().update_keymap(keymap)

    def _new_dashboard(self) -> DashboardScreen:
        # The monitor's profile: the one connected, which may carry a session password.
        return DashboardScreen(self.monitor.profile, self.monitor, clock=self.clock, poll=self.poll)

    @property
    def dashboard(self) -> DashboardScreen:
        screen = self.screen_stack[0]
        assert isinstance(screen, DashboardScreen)
        return screen

    def on_unmount(self) -> None:
        if self._owns_connection:
            # Off the UI thread: closing a broker connection to a stalled Redis can block.
            threading.Thread(target=self.monitor.close, name="morgue-close", daemon=True).start()

    # -- profiles --------------------------------------------------------------------------

    def action_profiles(self) -> None:
        if not isinstance(self.screen, DashboardScreen):
            return  # from the palette over another screen: profiles switch the dashboard
        path = self.config_path if self.config_path is not None else default_config_path()
        screen = ProfilesScreen(
            path,
            shown=self.profile,
            connect=self.connection_factory,
            passwords=self.session_passwords,
        )
        self.push_screen(screen, self._switch_profile)

    def _switch_profile(self, switch: Switch | None) -> None:
        """A new dashboard on ``switch``'s connection; the old one closes with its screen."""
        if switch is None:
            return
        old_monitor, owned = self.monitor, self._owns_connection
        self.profile = switch.profile
        self.monitor = Monitor(switch.connection, requeue_rate=self.requeue_rate)
        self._owns_connection = True
        # The old dashboard stops polling when its mode is removed; a poll still running posts
        # its result to a screen that is gone, where it is dropped.
        old_mode = self.current_mode
        self._dashboards += 1
        new_mode = f"dashboard-{self._dashboards}"
        self.add_mode(new_mode, self._new_dashboard)
        self.switch_mode(new_mode)
        self.remove_mode(old_mode)
        if owned:
            self.run_worker(
                old_monitor.close, thread=True, group="close-connection", exit_on_error=False
            )
        self.notify(f"Switched to profile {switch.profile.name!r}.", markup=False)

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        # The actions of the widgets on the screen, whichever has the focus.
        for node in screen.walk_children():
            if isinstance(node, ActionOwner):  # a mixin: not a CSS type that query() matches
                yield from node.palette_commands()
        if isinstance(screen, DashboardScreen):
            yield SystemCommand(
                "Profiles", "Switch to, add, edit or delete a profile", self.action_profiles
            )
        yield SystemCommand("Help", "Show every key", self.action_help)

    def help_sections(self) -> list[HelpSection]:
        """Every binding of every part of the UI, by where it works."""
        # A binding is listed once, under the first place it works: one row per keymap id.
        sections: list[tuple[str, list[type[DOMNode]]]] = [
            ("Everywhere", [MorgueApp]),
            ("Dashboard", [DashboardScreen]),
            ("Panes", [LiveTable, QueueList, TablePane, FilterInput]),
            ("Dead-letter queue", [DeadLetters, DLQPane]),
            ("Failure groups", [GroupsPane]),
            ("Active tasks", [TasksPane]),
            ("Entry detail", [EntryScreen]),
            ("Profiles", [ProfilesScreen, ProfileForm]),
            ("Confirmation", [Confirmation, RevokeConfirmScreen]),
            ("Help", [HelpScreen]),
        ]
        listed: set[str] = set()
        help_sections: list[HelpSection] = []
        for title, owners in sections:
            bindings = [b for b in declared_bindings(*owners) if (b.id or b.key) not in listed]
            listed.update(b.id or b.key for b in bindings)
            help_sections.append((title, bindings))
        return help_sections

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.help_sections(), self.keymap))


def declared_bindings(*owners: type[DOMNode]) -> list[Binding]:
    """The bindings the ``owners`` classes declare themselves, in order, one per id.

    Only each class's own ``BINDINGS``: what it inherits from Textual is Textual's to document,
    and what it inherits from a class of ours is listed under that class.
    """
    found: dict[str, Binding] = {}
    for owner in owners:
        for binding in owner.__dict__.get("BINDINGS", []):
            if isinstance(binding, Binding):
                found.setdefault(binding.id or binding.key, binding)
    return list(found.values())


def run_ui(
    profile: Profile,
    *,
    theme: str | None = None,
    mouse: bool = True,
    keymap: Mapping[str, str] | None = None,
    config_path: Path | None = None,
    requeue_rate: float | None = None,
) -> None:
    """Run the dashboard for ``profile`` until the user quits.

    ``keymap`` maps binding ids (see the help screen) to keys, e.g. ``{"clear_queue": "x"}``.
    ``config_path`` is the config file of the profiles screen (``--config``).
    ``requeue_rate`` paces the bulk requeues (messages a second; None: unpaced).
    """
    app = MorgueApp(
        profile,
        keymap=keymap,
        theme=theme,
        config_path=config_path,
        requeue_rate=requeue_rate,
    )
    app.run(mouse=mouse)


def _builtin_theme(name: str | None) -> Theme | None:
    if name is None:
        return None
    theme = BUILTIN_THEMES.get(name)
    if theme is None:
        known = ", ".join(sorted(BUILTIN_THEMES))
        raise UnknownThemeError(f"unknown theme {name!r}; choose one of: {known}")
    return theme
