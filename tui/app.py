"""The morgue terminal UI: ``run_ui(profile)`` or ``MorgueApp(profile_or_connection)``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import ClassVar

from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.theme import BUILTIN_THEMES, Theme

from tui.cells import SYSTEM_CLOCK, Clock
from tui.connection import Connection
from tui.monitor import DEFAULT_CONNECT, ConnectionFactory, Monitor
from tui.profiles import Profile
from tui.screens.confirm import ConfirmScreen, RevokeConfirmScreen
from tui.screens.dashboard import DashboardScreen
from tui.screens.entry import EntryScreen
from tui.screens.help import HelpScreen, HelpSection
from tui.widgets.pane import TablePane
from tui.widgets.tables import LiveTable


class UnknownThemeError(ValueError):
    """``--theme`` names no theme Textual has."""


class MorgueApp(App[None]):
    """The dashboard for one profile.

    ``source`` is a ``Profile`` (connected with ``connect``) or an already open ``Connection``.
    ``poll=False`` starts no I/O at all: tests then feed the dashboard through
    :mod:`tui.messages`, with ``clock`` frozen.
    """

    CSS_PATH = "app.tcss"
    TITLE = "morgue"

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
        self.monitor = Monitor(connection)
        self._owns_connection = isinstance(source, Profile)
        self.clock = clock
        self.poll = poll
        self.keymap: dict[str, str] = {}
        if keymap:
            self.set_keymap(keymap)

    def set_keymap(self, keymap: Mapping[str, str]) -> None:
        # Kept in public so the help screen can show the keys as remapped.
        self.keymap = dict(keymap)
        super().set_keymap(keymap)

    def update_keymap(self, keymap: Mapping[str, str]) -> None:
        self.keymap.update(keymap)
        super().update_keymap(keymap)

    def get_default_screen(self) -> Screen[None]:
        return DashboardScreen(self.profile, self.monitor, clock=self.clock, poll=self.poll)

    @property
    def dashboard(self) -> DashboardScreen:
        screen = self.screen_stack[0]
        assert isinstance(screen, DashboardScreen)
        return screen

    def on_unmount(self) -> None:
        if self._owns_connection:
            self.monitor.close()

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        if isinstance(screen, DashboardScreen):
            yield from screen.palette_commands()
        yield SystemCommand("Help", "Show every key", self.action_help)

    def help_sections(self) -> list[HelpSection]:
        return [
            ("Everywhere", _bindings(self.BINDINGS)),
            (
                "Panes",
                [
                    *_bindings(DashboardScreen.BINDINGS, "next_pane", "prev_pane"),
                    *_bindings(LiveTable.BINDINGS, "cursor_down_j", "cursor_up_k"),
                    *_bindings(DashboardScreen.BINDINGS, "filter"),
                    *_bindings(TablePane.BINDINGS),
                ],
            ),
            (
                "Dead-letter queue",
                [
                    *_bindings(LiveTable.BINDINGS, "open_row"),
                    *_bindings(
                        DashboardScreen.BINDINGS,
                        "delete_entry",
                        "requeue_entry",
                        "requeue_queue",
                        "clear_queue",
                    ),
                ],
            ),
            ("Active tasks", _bindings(DashboardScreen.BINDINGS, "revoke", "revoke_zombies")),
            ("Entry detail", _bindings(EntryScreen.BINDINGS, "entry_back")),
            (
                "Confirmation",
                [*_bindings(ConfirmScreen.BINDINGS), *_bindings(RevokeConfirmScreen.BINDINGS)],
            ),
        ]

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.help_sections(), self.keymap))


def _bindings(source: Iterable[BindingType], *ids: str) -> list[Binding]:
    """The Bindings of ``source`` with an id (those named in ``ids``, in that order, if any)."""
    found = [b for b in source if isinstance(b, Binding) and b.id]
    if not ids:
        return found
    by_id = {b.id: b for b in found}
    return [by_id[i] for i in ids]


def run_ui(
    profile: Profile,
    *,
    theme: str | None = None,
    mouse: bool = True,
    keymap: Mapping[str, str] | None = None,
) -> None:
    """Run the dashboard for ``profile`` until the user quits.

    ``keymap`` maps binding ids (see the help screen) to keys, e.g. ``{"clear_queue": "x"}``.
    """
    app = MorgueApp(profile, keymap=keymap, theme=theme)
    app.run(mouse=mouse)


def _builtin_theme(name: str | None) -> Theme | None:
    if name is None:
        return None
    theme = BUILTIN_THEMES.get(name)
    if theme is None:
        known = ", ".join(sorted(BUILTIN_THEMES))
        raise UnknownThemeError(f"unknown theme {name!r}; choose one of: {known}")
    return theme
