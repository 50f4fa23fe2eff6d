"""Keys belong to the widgets that act: the footer, the help, the palette and read-only.

No Redis: the app polls nothing (``poll=False``) and is fed the messages its thread workers
would post, as in tests/test_tui_snapshots.py. No key pressed here reaches Redis: a refused key
opens no dialog, and every dialog opened is cancelled.
"""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
from collections.abc import Awaitable, Callable, Iterator

import pytest
from rich.text import Text
from textual.binding import Binding
from textual.dom import DOMNode
from textual.pilot import Pilot
from textual.widgets._footer import FooterKey

import celery_morgue.tui
from celery_morgue.tui.app import MorgueApp
from celery_morgue.tui.dialogs import ConfirmScreen, RevokeConfirmScreen
from celery_morgue.tui.profiles import Profile
from celery_morgue.tui.screens.dashboard import DashboardScreen
from celery_morgue.tui.screens.entry import EntryScreen
from celery_morgue.tui.screens.help import HelpScreen
from celery_morgue.tui.widgets.dead_letters import DeadLetters
from celery_morgue.tui.widgets.tasks_pane import TasksPane
from tests.helpers import PROFILE, feed_dashboard, frozen_clock, make_app, notices, screen_text

DLQ_KEYS = {"d", "e", "E", "c"}
TASK_KEYS = {"r", "R"}
# Packages without widgets, whose modules start processes or Celery apps when imported.
NOT_UI = ("celery_morgue.tui.cli", "celery_morgue.tui.demo")

Scenario = Callable[[Pilot[None], MorgueApp], Awaitable[None]]


def run(app: MorgueApp, scenario: Scenario, size: tuple[int, int] = (80, 24)) -> None:
    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await feed_dashboard(pilot)
            await scenario(pilot, app)

    asyncio.run(main())


async def settle(pilot: Pilot[None]) -> None:
    """Let a focus change reach the footer: it recomposes after the refresh that follows."""
    for _ in range(3):
        await pilot.pause()


def footer_keys(app: MorgueApp) -> set[str]:
    return {key.key for key in app.screen.query(FooterKey)}


def active_keys(app: MorgueApp) -> set[str]:
    return set(app.screen.active_bindings)


# -- the footer shows the focused widget's keys ---------------------------------------------


def test_the_footer_shows_the_keys_of_the_focused_pane() -> None:
    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        board = app.dashboard
        celery = board.pane("celery")
        assert celery is not None
        assert app.focused is celery.table, "the first failures take the focus"
        await settle(pilot)
        # E is active but, like today, not drawn: the footer of 80 columns is full.
        assert active_keys(app) >= DLQ_KEYS
        assert {"d", "e", "c"} <= footer_keys(app)
        assert not TASK_KEYS & active_keys(app)

        await pilot.press("tab")
        await settle(pilot)
        assert app.focused is board.tasks_pane.table
        assert footer_keys(app) >= TASK_KEYS
        assert not DLQ_KEYS & active_keys(app)

        # The queue list is part of the dead letters: their keys apply to the queue shown.
        board.queue_list.focus()
        await settle(pilot)
        assert active_keys(app) >= DLQ_KEYS
        assert not TASK_KEYS & active_keys(app)

    run(make_app(), scenario)


def test_each_key_is_bound_by_the_widget_that_acts() -> None:
    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        await settle(pilot)
        owners = {key: type(active.node) for key, active in app.screen.active_bindings.items()}
        assert {owners[key] for key in DLQ_KEYS} == {DeadLetters}
        app.dashboard.tasks_pane.table.focus()
        await settle(pilot)
        owners = {key: type(active.node) for key, active in app.screen.active_bindings.items()}
        assert {owners[key] for key in TASK_KEYS} == {TasksPane}

    run(make_app(), scenario)


def test_a_terminal_too_small_hides_the_destructive_keys_and_the_palette_refuses_them() -> None:
    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        await settle(pilot)
        assert active_keys(app) >= DLQ_KEYS
        await pilot.resize_terminal(50, 12)
        await settle(pilot)
        assert app.dashboard.has_class("-too-narrow")
        assert not DLQ_KEYS & active_keys(app)
        app.dashboard.dead_letters.run_from_palette("clear_queue")
        await settle(pilot)
        assert isinstance(app.screen, DashboardScreen)
        assert any("terminal is too small" in n for n in notices(app))

    run(make_app(), scenario)


# -- help -------------------------------------------------------------------------------------


def ui_classes() -> Iterator[type[DOMNode]]:
    """Every widget, screen and app class the UI defines, module by module."""
    for module in pkgutil.walk_packages(celery_morgue.tui.__path__, "celery_morgue.tui."):
        if module.name.startswith(NOT_UI) or module.name.endswith("__main__"):
            continue
        loaded = importlib.import_module(module.name)
        for value in vars(loaded).values():
            if isinstance(value, type) and value.__module__ == module.name:
                yield value


def declared(cls: type) -> list[Binding]:
    bindings = cls.__dict__.get("BINDINGS", [])
    assert all(isinstance(b, Binding) for b in bindings), f"{cls.__name__}: a tuple binding"
    return list(bindings)


def test_help_lists_every_binding_of_every_widget() -> None:
    every = [(cls, binding) for cls in ui_classes() for binding in declared(cls)]
    owners = {cls for cls, _ in every}
    # The walk found the UI: a walk that found nothing would pass whatever the help lists.
    assert {MorgueApp, DashboardScreen, DeadLetters, TasksPane, EntryScreen, HelpScreen} <= owners
    assert len(every) > 40

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        listed = {b.id: b for _, bindings in app.help_sections() for b in bindings}
        for cls, binding in every:
            assert binding.id, f"{cls.__name__} binds {binding.key!r} without an id"
            shown = listed.get(binding.id)
            assert shown is not None, f"{cls.__name__}'s {binding.id} is not in the help"
            # One row per id: bindings that share an id share the keys a keymap gives them.
            assert shown.key == binding.key, (cls.__name__, binding.id)
        await pilot.press("question_mark")
        await settle(pilot)
        assert isinstance(app.screen, HelpScreen)
        text = screen_text(app)
        for binding_id in listed:
            assert binding_id in text, f"{binding_id} is not on the help screen"

    run(make_app(), scenario, size=(100, 120))


def test_help_shows_the_keys_as_the_keymap_remaps_them() -> None:
    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        await pilot.press("question_mark")
        await settle(pilot)
        rows = [line for line in screen_text(app).splitlines() if "revoke_zombies" in line]
        # The help's box starts with "│ " and the key: Z as remapped, not the R it replaces.
        assert len(rows) == 1 and "│ Z " in rows[0] and "│ R " not in rows[0], rows

    run(make_app(keymap={"revoke_zombies": "Z"}), scenario, size=(100, 120))


# -- the dialogs return what was chosen ----------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "expected"),
    [(["y"], "SIGTERM"), (["K"], "SIGKILL"), (["n"], None), (["escape"], None)],
)
def test_the_revoke_dialog_returns_the_signal_chosen(keys: list[str], expected: str | None) -> None:
    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        results: list[str | None] = []
        app.push_screen(RevokeConfirmScreen("Revoke task", Text("Revoke?")), results.append)
        await settle(pilot)
        # A plain k is "up": it chooses nothing and the dialog stays.
        await pilot.press("k")
        await settle(pilot)
        assert isinstance(app.screen, RevokeConfirmScreen) and results == []
        await pilot.press(*keys)
        await settle(pilot)
        assert results == [expected]
        assert isinstance(app.screen, DashboardScreen)

    run(make_app(), scenario)


@pytest.mark.parametrize(("key", "expected"), [("y", True), ("n", False), ("enter", False)])
def test_a_confirmation_is_true_only_on_yes(key: str, expected: bool) -> None:
    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        results: list[bool | None] = []
        app.push_screen(ConfirmScreen("Delete entry", Text("Delete?"), "Delete"), results.append)
        await settle(pilot)
        await pilot.press(key)  # enter presses the focused button: Cancel
        await settle(pilot)
        assert results == [expected]

    run(make_app(), scenario)


# -- read-only profiles ------------------------------------------------------------------------


def readonly_app() -> MorgueApp:
    profile = Profile(name="ro", url=PROFILE.url, readonly=True)
    return MorgueApp(profile, clock=frozen_clock, poll=False)


def test_readonly_shows_the_destructive_keys_disabled_and_refuses_them() -> None:
    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        await settle(pilot)
        bindings = app.screen.active_bindings
        assert all(not bindings[key].enabled for key in DLQ_KEYS)
        for key in ("d", "e", "E", "c"):
            await pilot.press(key)
            await settle(pilot)
            assert isinstance(app.screen, DashboardScreen), f"{key} opened a dialog"
        refused = [n for n in notices(app) if n.startswith("Read-only profile")]
        assert refused == [
            "Read-only profile: delete entry is disabled.",
            "Read-only profile: requeue entry is disabled.",
            "Read-only profile: requeue queue is disabled.",
            "Read-only profile: clear queue is disabled.",
        ]

        app.dashboard.tasks_pane.table.focus()
        await settle(pilot)
        assert not app.screen.active_bindings["r"].enabled
        await pilot.press("r")
        await settle(pilot)
        assert isinstance(app.screen, DashboardScreen)
        assert "Read-only profile: revoke is disabled." in notices(app)

        # The palette's entries say so, and refuse as the keys do.
        commands = {c.title: c for c in app.get_system_commands(app.screen)}
        assert commands["Revoke zombies"].help.endswith("(disabled: read-only profile)")
        commands["Requeue whole queue"].callback()
        await settle(pilot)
        assert isinstance(app.screen, DashboardScreen)
        assert notices(app).count("Read-only profile: requeue queue is disabled.") == 2

    run(readonly_app(), scenario)


def test_readonly_entry_detail_refuses_delete_and_requeue() -> None:
    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, EntryScreen)
        for key in ("d", "e"):
            await pilot.press(key)
            await settle(pilot)
            assert isinstance(app.screen, EntryScreen), f"{key} left the detail"
        assert "Read-only profile: delete entry is disabled." in notices(app)
        assert "Read-only profile: requeue entry is disabled." in notices(app)

    run(readonly_app(), scenario)


def test_a_writable_profile_asks_first_from_keys_detail_and_palette() -> None:
    """The same keys on a profile that may write: each opens its dialog (cancelled here)."""

    async def asked(pilot: Pilot[None], app: MorgueApp, dialog: type[object]) -> None:
        await settle(pilot)
        assert isinstance(app.screen, dialog), app.screen
        await pilot.press("n")
        await settle(pilot)

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        for key in ("d", "e", "E", "c"):
            await pilot.press(key)
            await asked(pilot, app, ConfirmScreen)
        app.dashboard.tasks_pane.table.focus()
        await settle(pilot)
        await pilot.press("r")
        await asked(pilot, app, RevokeConfirmScreen)
        await pilot.press("R")
        await asked(pilot, app, RevokeConfirmScreen)

        celery = app.dashboard.pane("celery")
        assert celery is not None
        celery.table.focus()
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, EntryScreen)
        await pilot.press("d")
        await asked(pilot, app, ConfirmScreen)
        assert isinstance(app.screen, DashboardScreen)

        commands = {c.title: c for c in app.get_system_commands(app.screen)}
        for title in ("Clear queue", "Delete entry", "Requeue entry", "Requeue whole queue"):
            commands[title].callback()
            await asked(pilot, app, ConfirmScreen)
        commands["Revoke zombies"].callback()
        await asked(pilot, app, RevokeConfirmScreen)
        assert isinstance(app.screen, DashboardScreen)
        assert not any("failed" in n for n in notices(app))

    run(make_app(), scenario)
