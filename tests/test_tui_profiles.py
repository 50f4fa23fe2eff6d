"""The profiles screen (``p``) driven with Textual's Pilot, against real Redis servers.

Every test points the app at a config file in its own tmp_path: the developer's own config is
never read or written.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from textual.pilot import Pilot
from textual.widgets import Checkbox, Input, Static

from celery_morgue.core import DeadLetterQueue
from celery_morgue.tui.app import MorgueApp
from celery_morgue.tui.connection import Connection, connect_profile, with_password
from celery_morgue.tui.demo.processes import RedisServer
from celery_morgue.tui.dialogs import ConfirmScreen
from celery_morgue.tui.profiles import Profile
from celery_morgue.tui.screens.dashboard import DashboardScreen
from celery_morgue.tui.screens.profile_draft import check_form, initial_values
from celery_morgue.tui.screens.profile_form import ProfileForm
from celery_morgue.tui.screens.profiles import ProfilesScreen
from tests.helpers import (
    field_error,
    fill,
    form,
    listed,
    make_entry,
    mode,
    notices,
    open_form,
    open_profiles,
    palette_offers,
    profile_for,
    profiles_screen,
    read_config,
    save,
    saved,
    screen_text,
    select,
    type_into,
    until,
    with_profiles_app,
    write_config,
)

# A password no test environment holds: it must never reach the screen or, unless chosen, a file.
TYPED_PASSWORD = "Typed-Pw-7319"  # noqa: S105 - the test password
UNSET_VARIABLE = "MORGUE_TEST_NEVER_SET_7319"


@pytest.fixture(autouse=True)
def home_above_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The screen shows the config's path from ~ when it is under home: with tmp_path as home
    it fits on the screen, however long the folder pytest (or an xdist worker) chose."""
    monkeypatch.setenv("HOME", str(tmp_path))


@pytest.fixture
def second_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.close()


@pytest.fixture
def locked_redis() -> Iterator[RedisServer]:
    """A Redis that wants TYPED_PASSWORD: connecting proves the typed password was used."""
    server = RedisServer(password=TYPED_PASSWORD)
    server.start()
    yield server
    server.close()


# -- the round trip ----------------------------------------------------------------------


def test_add_switch_edit_delete_round_trip(
    tmp_path: Path,
    redis_server: RedisServer,
    redis_client: redis.Redis,
    second_redis: RedisServer,
) -> None:
    DeadLetterQueue(redis_client).add(make_entry("on-first", "first-queue"))
    second_client = redis.Redis.from_url(second_redis.url)
    DeadLetterQueue(second_client).add(make_entry("on-second", "second-queue"))
    second_client.close()
    path = tmp_path / "config.toml"
    first = profile_for(redis_server.url, name="first")
    write_config(path, first, default="first")
    closed: list[str] = []

    def connect(profile: Profile) -> Connection:
        """The real connection, noting when it is closed."""
        connection = connect_profile(profile)
        close = connection.close

        def noted_close() -> None:
            closed.append(profile.name)
            close()

        connection.close = noted_close  # type: ignore[method-assign]
        return connection

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        old = app.dashboard
        await until(pilot, lambda: "first-queue" in old.queue_list.names, what="first Redis")
        await open_profiles(pilot, app)
        assert listed(app) == {"first": "*▶"}
        text = screen_text(app)
        assert "config.toml" in text and redis_server.url in text

        # Add.
        await open_form(pilot, app, "a")
        await fill(pilot, app, name="second", url=second_redis.url, refresh="0.5")
        await fill(pilot, app, inspect_timeout="0.5")
        await saved(pilot, app)
        stored = read_config(path)
        assert stored["default"] == "first"
        assert stored["profiles"]["second"] == {
            "url": second_redis.url,
            "refresh": 0.5,
            "inspect_timeout": 0.5,
        }
        assert mode(path) == 0o600
        assert listed(app) == {"first": "*▶", "second": ""}

        # Switch: a new dashboard on the second Redis, the first one's panes gone.
        await select(pilot, app, "second")
        await pilot.press("enter")
        await until(pilot, lambda: app.dashboard is not old, what="dashboard replaced")
        new = app.dashboard
        assert app.screen is new
        await until(pilot, lambda: not old.is_attached, what="old dashboard removed")
        await until(pilot, lambda: closed == ["first"], what="old connection closed")
        await until(pilot, lambda: "second-queue" in new.queue_list.names, what="second Redis")
        assert "first-queue" not in new.queue_list.names
        assert new.pane("second-queue") is not None and new.pane("first-queue") is None
        assert new.status_line.status.profile == "second"
        assert "second │" in screen_text(app).splitlines()[0]
        assert app.profile.name == "second" and not new.readonly

        # Edit: the ▶ follows the switch; readonly on and a new refresh are written.
        await open_profiles(pilot, app)
        assert listed(app) == {"first": "*", "second": "▶"}
        await select(pilot, app, "second")
        editor = await open_form(pilot, app, "e")
        assert editor.query_one("#url", Input).value == second_redis.url
        assert editor.query_one("#refresh", Input).value == "0.5"
        editor.query_one("#readonly", Checkbox).value = True
        await fill(pilot, app, refresh="1")
        await saved(pilot, app)
        assert read_config(path)["profiles"]["second"] == {
            "url": second_redis.url,
            "refresh": 1.0,
            "inspect_timeout": 0.5,
            "readonly": True,
        }
        assert mode(path) == 0o600
        # Edited, it is no longer what the dashboard connected with.
        assert listed(app) == {"first": "*", "second": ""}

        # Delete: confirmed, with the safe button focused.
        await select(pilot, app, "second")
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirmation")
        assert app.focused is not None and app.focused.id == "cancel"
        assert "second" in screen_text(app)
        await pilot.press("y")
        await until(pilot, lambda: isinstance(app.screen, ProfilesScreen), what="confirmed")
        assert "second" not in read_config(path)["profiles"]
        assert read_config(path)["default"] == "first"
        assert mode(path) == 0o600
        assert listed(app) == {"first": "*"}

        await pilot.press("escape")
        await until(pilot, lambda: app.screen is new, what="back on the dashboard")

    with_profiles_app(first, path, scenario, connect=connect)
    assert closed == ["first", "second"]  # the app closes the one it shows when it quits


def test_delete_cancelled_keeps_the_file(tmp_path: Path, redis_server: RedisServer) -> None:
    path = tmp_path / "config.toml"
    first = profile_for(redis_server.url, name="first")
    before = write_config(path, first, profile_for(redis_server.url, name="other"))

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        await open_profiles(pilot, app)
        await select(pilot, app, "other")
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirmation")
        await pilot.press("enter")  # on the focused Cancel button
        await until(pilot, lambda: isinstance(app.screen, ProfilesScreen), what="cancelled")
        assert path.read_bytes() == before
        assert set(listed(app)) == {"first", "other"}

    with_profiles_app(first, path, scenario)


def test_set_default_with_star_and_shift_d(tmp_path: Path, redis_server: RedisServer) -> None:
    path = tmp_path / "config.toml"
    alpha = profile_for(redis_server.url, name="alpha")
    write_config(path, alpha, profile_for(redis_server.url, name="beta"), default="alpha")

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        await open_profiles(pilot, app)
        assert listed(app) == {"alpha": "*▶", "beta": ""}
        await select(pilot, app, "beta")
        await pilot.press("asterisk")
        await until(pilot, lambda: read_config(path)["default"] == "beta", what="default")
        assert listed(app) == {"alpha": "▶", "beta": "*"}
        assert mode(path) == 0o600
        await select(pilot, app, "alpha")
        await pilot.press("D")
        await until(pilot, lambda: read_config(path)["default"] == "alpha", what="default")
        assert listed(app) == {"alpha": "*▶", "beta": ""}

    with_profiles_app(alpha, path, scenario)


def test_the_command_palette_opens_the_profiles(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    # Polling off: the palette and the screen need no Redis behind the profile.
    alpha = profile_for("redis://127.0.0.1:1/0", name="alpha")
    write_config(path, alpha, default="alpha")

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        await until(pilot, lambda: isinstance(app.screen, DashboardScreen), what="dashboard")
        await palette_offers(pilot, app, "Profiles")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ProfilesScreen), what="profiles")
        assert listed(app) == {"alpha": "*▶"}

    with_profiles_app(alpha, path, scenario, poll=False)


# -- refused values --------------------------------------------------------------------------


def test_a_bad_field_is_refused_at_the_field_and_nothing_is_written(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    path = tmp_path / "config.toml"
    first = profile_for(redis_server.url, name="first")
    # A comment: any rewrite of the file, even with the same profiles, would drop it.
    before = b"# mine\n" + write_config(path, first, default="first")
    path.write_bytes(before)
    path.chmod(0o600)

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        await open_profiles(pilot, app)
        await open_form(pilot, app, "a")
        await fill(pilot, app, name="new", url="http://example.com:6379/0", refresh="-1")
        await save(pilot, app)
        assert isinstance(app.screen, ProfileForm), "the form stays open"
        assert "is not a Redis URL" in field_error(app, "url")
        assert "more than zero seconds" in field_error(app, "refresh")
        assert field_error(app, "name") == ""
        assert form(app).query_one("#url", Input).has_class("-invalid")
        # Each message right under its own field.
        lines = [line for line in screen_text(app).splitlines() if line.strip()]
        url_line = next(i for i, line in enumerate(lines) if "Redis URL" in line)
        assert "is not a Redis URL" in lines[url_line + 1]
        refresh_line = next(i for i, line in enumerate(lines) if "Refresh, s" in line)
        assert "more than zero seconds" in lines[refresh_line + 1]
        assert path.read_bytes() == before

        # A bad name, and a name already taken; fixing the rest is not enough.
        await fill(pilot, app, name="bad name", url=redis_server.url, refresh="")
        await save(pilot, app)
        assert "is not a profile name" in field_error(app, "name")
        assert field_error(app, "url") == "" and field_error(app, "refresh") == ""
        await fill(pilot, app, name="first", grace="soon")
        await save(pilot, app)
        assert "exists already" in field_error(app, "name")
        assert "number of seconds" in field_error(app, "grace")
        assert path.read_bytes() == before

        # Editing: a bad value leaves the file as it was too.
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, ProfilesScreen), what="cancelled")
        await select(pilot, app, "first")
        await open_form(pilot, app, "e")
        await fill(pilot, app, url="amqp://guest@rabbit//", timeout="-3")
        await save(pilot, app)
        assert "is not a Redis URL" in field_error(app, "url")
        assert "more than zero seconds" in field_error(app, "timeout")
        assert path.read_bytes() == before
        assert mode(path) == 0o600

    with_profiles_app(first, path, scenario, size=(80, 30))


def test_a_config_that_does_not_load_is_shown_and_never_written(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    before = b'[profiles.x]\nurl = "redis://h\n'
    path.write_bytes(before)

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        await open_profiles(pilot, app)
        # The whole path and line, shown; on screen a long path wraps at any character.
        error = profiles_screen(app).query_one("#config-error", Static)
        assert error.region.height > 0 and f"{path}:2:" in str(error.content)
        await pilot.press("a")
        await pilot.pause()
        assert isinstance(app.screen, ProfilesScreen)
        await until(pilot, lambda: any("does not load" in n for n in notices(app)))
        assert path.read_bytes() == before

    # Polling off: the profiles screen needs no Redis behind the profile.
    with_profiles_app(profile_for("redis://127.0.0.1:1/0"), path, scenario, poll=False)


# -- passwords -------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_typed_password_is_masked_and_stored_only_when_chosen(
    tmp_path: Path, locked_redis: RedisServer, redis_server: RedisServer
) -> None:
    locked = redis.Redis.from_url(locked_redis.url, password=TYPED_PASSWORD)
    DeadLetterQueue(locked).add(make_entry("behind-a-password", "locked-queue"))
    locked.close()
    path = tmp_path / "config.toml"
    start = profile_for(redis_server.url, name="start")
    needs_env = profile_for(redis_server.url, name="needs-env", password_env=UNSET_VARIABLE)
    write_config(path, start, needs_env, default="start")

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        await open_profiles(pilot, app)

        # A profile whose variable is not set cannot be switched to, and says why.
        await select(pilot, app, "needs-env")
        await pilot.press("enter")
        await until(pilot, lambda: any(UNSET_VARIABLE in n for n in notices(app)))
        assert isinstance(app.screen, ProfilesScreen)

        await open_form(pilot, app, "a")
        await fill(pilot, app, name="locked", url=locked_redis.url, refresh="0.5")
        await type_into(pilot, app, "password", TYPED_PASSWORD)
        box = form(app).query_one("#password", Input)
        assert box.password and box.value == TYPED_PASSWORD
        svg = app.export_screenshot()
        assert TYPED_PASSWORD not in svg and TYPED_PASSWORD not in screen_text(app)
        assert "•" * len(TYPED_PASSWORD) in screen_text(app)
        assert not form(app).query_one("#store_passwords", Checkbox).value  # off by default

        # Not stored, and no variable named: refused at the variable's field.
        before = path.read_bytes()
        await save(pilot, app)
        assert "environment variable" in field_error(app, "password_env")
        assert path.read_bytes() == before

        await fill(pilot, app, password_env="LOCKED_REDIS_PASSWORD")  # noqa: S106 - a name
        await saved(pilot, app)
        raw = path.read_bytes()
        assert TYPED_PASSWORD.encode() not in raw
        assert read_config(path)["profiles"]["locked"] == {
            "url": locked_redis.url,
            "refresh": 0.5,
            "password_env": "LOCKED_REDIS_PASSWORD",
        }
        assert any("this session only" in n for n in notices(app))

        # The typed password, kept in memory, opens the locked Redis for this session.
        await select(pilot, app, "locked")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, DashboardScreen), what="switched")
        dashboard = app.dashboard
        await until(pilot, lambda: "locked-queue" in dashboard.queue_list.names, what="AUTH ok")
        assert TYPED_PASSWORD not in app.export_screenshot()

        # Chosen: stored in the file, inside the URL, and still never on screen.
        await open_profiles(pilot, app)
        await select(pilot, app, "locked")
        editor = await open_form(pilot, app, "e")
        assert editor.query_one("#password", Input).value == TYPED_PASSWORD  # from the session
        editor.query_one("#store_passwords", Checkbox).value = True
        await fill(pilot, app, password_env="")
        await pilot.pause()
        assert TYPED_PASSWORD not in app.export_screenshot()
        await saved(pilot, app)
        url = read_config(path)["profiles"]["locked"]["url"]
        assert url == locked_redis.url.replace("redis://", f"redis://:{TYPED_PASSWORD}@")
        assert "password_env" not in read_config(path)["profiles"]["locked"]
        assert mode(path) == 0o600
        assert TYPED_PASSWORD not in app.export_screenshot()

        # Editing it again: the URL box shows the URL without it; the password box has it.
        await select(pilot, app, "locked")
        editor = await open_form(pilot, app, "e")
        assert editor.query_one("#url", Input).value == locked_redis.url
        assert editor.query_one("#store_passwords", Checkbox).value
        assert TYPED_PASSWORD not in app.export_screenshot()

    with_profiles_app(start, path, scenario, size=(80, 30))


# -- what is and is not written ------------------------------------------------------------


def test_started_with_url_alone_the_first_add_creates_the_file(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    path = tmp_path / "not-yet" / "config.toml"
    from_url = profile_for(redis_server.url, name="url")

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        await open_profiles(pilot, app)
        text = screen_text(app)
        assert "no file yet" in text and "not in the config file" in text
        assert listed(app) == {}
        await pilot.press("escape")
        await open_profiles(pilot, app)
        assert not path.exists(), "browsing wrote the file"

        await open_form(pilot, app, "a")
        await fill(pilot, app, name="mine", url=redis_server.url)
        await saved(pilot, app)
        assert read_config(path) == {
            "default": "mine",
            "profiles": {"mine": {"url": redis_server.url}},
        }
        assert mode(path) == 0o600
        assert listed(app) == {"mine": "*"}

    with_profiles_app(from_url, path, scenario)


def test_browsing_and_switching_leave_the_file_untouched(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Like the demo's: the profile on the dashboard is not in the file, and is never saved."""
    path = tmp_path / "config.toml"
    demo = profile_for(redis_server.url, name="demo")
    before = b"# the user's own\n" + write_config(
        path, profile_for(redis_server.url, name="theirs")
    )
    path.write_bytes(before)

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        await open_profiles(pilot, app)
        assert listed(app) == {"theirs": ""}
        await select(pilot, app, "theirs")
        await pilot.press("enter")
        await until(pilot, lambda: app.profile.name == "theirs", what="switched")
        await open_profiles(pilot, app)
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, DashboardScreen))
        assert path.read_bytes() == before

    with_profiles_app(demo, path, scenario)


def test_switching_to_a_readonly_profile_makes_the_dashboard_readonly(
    tmp_path: Path, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    DeadLetterQueue(redis_client).add(make_entry("kept", "celery"))
    path = tmp_path / "config.toml"
    writable = profile_for(redis_server.url, name="rw")
    write_config(path, writable, profile_for(redis_server.url, name="ro", readonly=True))

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        assert not app.dashboard.readonly
        await open_profiles(pilot, app)
        await select(pilot, app, "ro")
        await pilot.press("enter")
        await until(pilot, lambda: app.profile.name == "ro", what="switched")
        dashboard = app.dashboard
        assert dashboard.readonly
        await until(pilot, lambda: "celery" in dashboard.queue_list.names, what="queues")
        assert "ro (read-only)" in screen_text(app).splitlines()[0]

        # Read-only guards the cluster, not the config file.
        await open_profiles(pilot, app)
        await open_form(pilot, app, "a")
        await fill(pilot, app, name="added", url=redis_server.url)
        await saved(pilot, app)
        assert "added" in read_config(path)["profiles"]

    with_profiles_app(writable, path, scenario)


def test_the_cli_hands_the_ui_its_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only the UI's entry point is replaced: this checks what `morgue --config` hands it.
    from celery_morgue.tui import app as ui_app
    from celery_morgue.tui.cli.groups import cli

    handed: list[Path | None] = []

    def run_ui(profile: Profile, *, config_path: Path | None = None, **options: Any) -> None:
        handed.append(config_path)

    monkeypatch.setattr(ui_app, "run_ui", run_ui)
    monkeypatch.delenv("MORGUE_CONFIG", raising=False)
    path = tmp_path / "elsewhere.toml"
    runner = CliRunner()
    assert runner.invoke(cli, ["--config", str(path), "--url", "redis://h"]).exit_code == 0
    monkeypatch.setenv("MORGUE_CONFIG", str(tmp_path / "from-env.toml"))
    assert runner.invoke(cli, ["--url", "redis://h", "ui"]).exit_code == 0
    assert handed == [path, tmp_path / "from-env.toml"]
    assert not path.exists() and not (tmp_path / "from-env.toml").exists()


# -- the form's checks, without the UI ---------------------------------------------------------

seconds = st.floats(min_value=0.001, max_value=1e9, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(
    password=st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20),
    user=st.from_regex(r"[a-z]{0,8}", fullmatch=True),
    refresh=seconds,
    hard_limit=seconds,
    grace=st.one_of(st.just(0.0), seconds),
    readonly=st.booleans(),
)
def test_a_profile_saved_unchanged_from_the_form_is_the_same_profile(
    password: str, user: str, refresh: float, hard_limit: float, grace: float, readonly: bool
) -> None:
    profile = Profile(
        name="p",
        url=with_password(f"redis://{user}@redis.internal:6379/3", password),
        refresh=refresh,
        hard_limit=hard_limit,
        grace=grace,
        readonly=readonly,
    )
    values = initial_values(profile, {})
    assert values.text["url"] == f"redis://{user + '@' if user else ''}redis.internal:6379/3"
    assert values.text["password"] == password and values.store_passwords
    draft, errors = check_form(values, replaces="p", taken={"p"})
    assert errors == {}
    assert draft is not None and draft.profile == profile
