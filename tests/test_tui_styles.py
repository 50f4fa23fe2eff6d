"""The looks are declared once, in .tcss files the package ships, with theme variables."""

from __future__ import annotations

import ast
import asyncio
import os
import tomllib
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path

from textual.pilot import Pilot

from celery_morgue.tui.app import MorgueApp
from tests.helpers import feed_dashboard, make_app

REPO = Path(__file__).resolve().parent.parent
TUI = REPO / "tui"


def test_every_stylesheet_ships_in_the_wheel_and_the_app_loads_them_all() -> None:
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]
    sheets = sorted(TUI.rglob("*.tcss"))
    assert sheets
    for sheet in sheets:
        folder = sheet.parent.relative_to(TUI)
        package = ".".join(("celery_morgue.tui", *folder.parts))
        globs = package_data.get(package, [])
        assert any(fnmatch(sheet.name, glob) for glob in globs), f"{sheet} is not package data"
    loaded = {(TUI / path).resolve() for path in MorgueApp.CSS_PATH}
    assert loaded == {sheet.resolve() for sheet in sheets}


def default_css() -> Iterator[tuple[str, str]]:
    """(class, its DEFAULT_CSS) for every class of the UI's sources that declares one."""
    for source in sorted(TUI.rglob("*.py")):
        for node in ast.walk(ast.parse(source.read_text(), filename=str(source))):
            if not isinstance(node, ast.ClassDef):
                continue
            for statement in node.body:
                if (
                    isinstance(statement, ast.Assign)
                    and [ast.unparse(target) for target in statement.targets] == ["DEFAULT_CSS"]
                    and isinstance(statement.value, ast.Constant)
                ):
                    yield node.name, str(statement.value.value)


def test_no_widget_or_screen_carries_its_own_frame() -> None:
    """Borders, the focus border and the dialog box: in the .tcss, not in DEFAULT_CSS copies."""
    declared = dict(default_css())
    assert {"EntryScreen", "ProfileForm", "ProfilesScreen"} <= declared.keys()  # the walk works
    for name, css in declared.items():
        assert "border" not in css, f"{name} declares a border in DEFAULT_CSS"
        assert "align: center middle" not in css, f"{name} is a dialog of its own"


async def settle(pilot: Pilot[None]) -> None:
    """Let a focus change reach the styles: they are applied after the next refresh."""
    for _ in range(3):
        await pilot.pause()


def test_without_colour_the_focused_pane_has_a_heavy_border() -> None:
    os.environ["NO_COLOR"] = "1"
    try:
        app = make_app()  # Textual reads (and removes) NO_COLOR while constructing the app
    finally:
        os.environ.pop("NO_COLOR", None)

    async def main() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            await feed_dashboard(pilot)
            await settle(pilot)
            board = app.dashboard
            celery = board.pane("celery")
            assert celery is not None and app.focused is celery.table
            assert celery.styles.border_top[0] == "heavy"
            assert board.queue_list.styles.border_top[0] == "round"
            assert board.tasks_pane.styles.border_top[0] == "round"
            await pilot.press("tab")
            await settle(pilot)
            assert board.tasks_pane.styles.border_top[0] == "heavy"
            assert celery.styles.border_top[0] == "round"

    asyncio.run(main())
