"""The config edits `morgue profiles` and the profiles screen share: ``Config.save_profile``,
``remove_profile`` and ``set_default``, written by ``update_config``.

Real files in tmp_path. The last tests make the same edits through the command line (click's
CliRunner) and through the screen (Textual's Pilot, against a real Redis) and compare the two
files byte for byte.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from textual.pilot import Pilot

from celery_morgue.tui.app import MorgueApp
from celery_morgue.tui.cli.groups import cli
from celery_morgue.tui.config_file import (
    Config,
    ConfigError,
    ConfigSyntaxError,
    NoProfileError,
    ProfileExistsError,
    UnknownProfileError,
    load_config,
    update_config,
)
from celery_morgue.tui.demo.processes import RedisServer
from celery_morgue.tui.dialogs import ConfirmScreen
from celery_morgue.tui.profiles import Profile
from celery_morgue.tui.screens.profiles import ProfilesScreen
from tests.helpers import (
    fill,
    mode,
    open_form,
    open_profiles,
    profile_for,
    read_config,
    saved,
    select,
    until,
    with_profiles_app,
    write_config,
)

Edit = Callable[[Config], None]


def profile(name: str, **settings: Any) -> Profile:
    return Profile(name=name, url=f"redis://{name}.example:6379/0", **settings)


def unchanged(path: Path, before: bytes, inode: int) -> bool:
    """The very same file: same bytes, and not replaced by a rewrite of them."""
    return path.read_bytes() == before and path.stat().st_ino == inode


# -- how the file is written ------------------------------------------------------------------


def test_an_edit_leaves_the_file_readable_by_its_owner_alone(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[profiles.a]\nurl = "redis://a.example:6379/0"\n')
    path.chmod(0o644)
    update_config(path, lambda config: config.set_default("a"))
    assert mode(path) == 0o600
    assert read_config(path) == {
        "default": "a",
        "profiles": {"a": {"url": "redis://a.example:6379/0"}},
    }

    fresh = tmp_path / "new-folder" / "config.toml"
    update_config(fresh, lambda config: config.save_profile(profile("b")))
    assert mode(fresh) == 0o600
    assert mode(fresh.parent) == 0o700


def test_an_edit_replaces_the_file_whole_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    before = write_config(path, profile("a"), profile("b"), default="a")
    with path.open("rb") as reader:  # opened before the edit, as a concurrent `morgue` would
        update_config(path, lambda config: config.remove_profile("b"))
        # Written in place, the file this reader holds would now say something else (or half).
        assert reader.read() == before
    assert list(read_config(path)["profiles"]) == ["a"]
    assert [entry.name for entry in tmp_path.iterdir()] == ["config.toml"]


# -- the edits ----------------------------------------------------------------------------------


def test_removing_the_default_profile_leaves_no_default(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    write_config(path, profile("a"), profile("b"), profile("c"), default="a")
    config = update_config(path, lambda config: config.remove_profile("a"))
    assert config.default is None
    stored = read_config(path)
    assert "default" not in stored
    assert list(stored["profiles"]) == ["b", "c"]
    # Not a default naming a profile that is gone: the next command asks which one to use.
    with pytest.raises(NoProfileError, match="sets no default profile"):
        load_config(path).resolve()


def test_removing_another_profile_keeps_the_default(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    write_config(path, profile("a"), profile("b"), default="a")
    update_config(path, lambda config: config.remove_profile("b"))
    assert read_config(path) == {
        "default": "a",
        "profiles": {"a": {"url": "redis://a.example:6379/0"}},
    }


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda config: config.set_default("nope"), id="set-default"),
        pytest.param(lambda config: config.remove_profile("nope"), id="remove"),
    ],
)
def test_an_unknown_profile_is_refused_in_one_line_and_nothing_is_written(
    tmp_path: Path, edit: Edit
) -> None:
    path = tmp_path / "config.toml"
    before = write_config(path, profile("a"), profile("b"), default="a")
    inode = path.stat().st_ino
    with pytest.raises(UnknownProfileError) as refused:
        update_config(path, edit)
    assert str(refused.value) == f"no profile 'nope' in {path} (known profiles: a, b)"
    assert unchanged(path, before, inode)


def test_the_first_profile_saved_becomes_the_default(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    update_config(path, lambda config: config.save_profile(profile("a")))
    update_config(path, lambda config: config.save_profile(profile("b")))
    assert read_config(path)["default"] == "a"
    update_config(path, lambda config: config.save_profile(profile("c"), make_default=True))
    assert read_config(path)["default"] == "c"


def test_saving_a_profile_over_itself_changes_it_and_keeps_the_default(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    write_config(path, profile("a"), profile("b"), default="a")
    changed = profile("a", grace=5.0)
    update_config(path, lambda config: config.save_profile(changed, replaces="a"))
    assert load_config(path).profiles == {"a": changed, "b": profile("b")}
    assert read_config(path)["default"] == "a"


def test_a_renamed_default_stays_the_default(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    write_config(path, profile("a"), profile("b"), default="a")
    update_config(path, lambda config: config.save_profile(profile("c"), replaces="a"))
    stored = read_config(path)
    assert list(stored["profiles"]) == ["b", "c"]
    assert stored["default"] == "c"


@pytest.mark.parametrize("replaces", [None, "a"], ids=["new", "renamed"])
def test_a_profile_may_not_take_the_name_of_another(tmp_path: Path, replaces: str | None) -> None:
    path = tmp_path / "config.toml"
    before = write_config(path, profile("a"), profile("b"), default="a")
    inode = path.stat().st_ino
    with pytest.raises(ProfileExistsError) as refused:
        update_config(path, lambda config: config.save_profile(profile("b"), replaces=replaces))
    assert str(refused.value) == f"profile 'b' already exists in {path}"
    assert unchanged(path, before, inode)


# -- a file that does not load ----------------------------------------------------------------

CORRUPT = {
    "not-toml": b'default = "a"\n[profiles.a\nurl = "redis://a.example:6379/0"\n',
    "bad-value": b'default = "a"\n[profiles.a]\nurl = "redis://a.example:6379/0"\ngrace = -1\n',
    "unknown-key": b'defualt = "a"\n[profiles.a]\nurl = "redis://a.example:6379/0"\n',
}
EDITS: dict[str, Edit] = {
    "save": lambda config: config.save_profile(profile("b")),
    "remove": lambda config: config.remove_profile("a"),
    "set-default": lambda config: config.set_default("a"),
}


@pytest.mark.parametrize("edit", list(EDITS))
@pytest.mark.parametrize("corruption", list(CORRUPT))
def test_a_config_that_does_not_load_is_never_written(
    tmp_path: Path, corruption: str, edit: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(CORRUPT[corruption])
    inode = path.stat().st_ino
    with pytest.raises(ConfigError) as refused:
        update_config(path, EDITS[edit])
    message = str(refused.value)
    assert message.startswith(str(path)) and "\n" not in message
    assert isinstance(refused.value, ConfigSyntaxError) == (corruption == "not-toml")
    assert unchanged(path, CORRUPT[corruption], inode)


@pytest.mark.parametrize(
    "command",
    [
        ["profiles", "add", "b", "--url", "redis://b.example:6379/0"],
        ["profiles", "remove", "a", "--yes"],
        ["profiles", "default", "a"],
    ],
    ids=["add", "remove", "default"],
)
def test_the_cli_leaves_a_corrupt_config_as_it_is(tmp_path: Path, command: list[str]) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(CORRUPT["not-toml"])
    inode = path.stat().st_ino
    result = CliRunner().invoke(cli, ["--config", str(path), *command])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"Error: {path}:2:12: ")
    assert result.stderr.count("\n") == 1
    assert unchanged(path, CORRUPT["not-toml"], inode)


def test_the_cli_names_the_option_that_overwrites_a_taken_name(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    before = write_config(path, profile("a"))
    inode = path.stat().st_ino
    result = CliRunner().invoke(
        cli, ["--config", str(path), "profiles", "add", "a", "--url", "redis://x:6379/0"]
    )
    assert result.exit_code == 1, result.output
    assert result.stderr == (
        f"Error: profile 'a' already exists in {path}; pass --replace to overwrite it\n"
    )
    assert unchanged(path, before, inode)


# -- one edit, two callers: the same file ------------------------------------------------------


def test_the_cli_and_the_profiles_screen_write_the_same_file(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    by_cli = tmp_path / "cli" / "config.toml"
    by_screen = tmp_path / "screen" / "config.toml"
    shown = profile_for(redis_server.url, name="alpha")
    beta = profile_for(redis_server.url, name="beta")
    gamma_url = "redis://gamma.example:6379/2"
    for path in (by_cli, by_screen):
        write_config(path, shown, beta, default="alpha")
    runner = CliRunner()

    def morgue(*args: str) -> None:
        result = runner.invoke(cli, ["--config", str(by_cli), "profiles", *args])
        assert result.exit_code == 0, result.output

    def same_file() -> bool:
        return by_cli.read_bytes() == by_screen.read_bytes()

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        await open_profiles(pilot, app)

        morgue("default", "beta")
        await select(pilot, app, "beta")
        await pilot.press("asterisk")
        await until(pilot, same_file, what="the same default")
        assert read_config(by_screen)["default"] == "beta"

        morgue("add", "gamma", "--url", gamma_url, "--refresh", "0.5")
        await open_form(pilot, app, "a")
        await fill(pilot, app, name="gamma", url=gamma_url, refresh="0.5")
        await saved(pilot, app)
        assert same_file()

        morgue("add", "gamma", "--url", gamma_url, "--grace", "5", "--replace")
        await select(pilot, app, "gamma")
        await open_form(pilot, app, "e")
        await fill(pilot, app, refresh="", grace="5")
        await saved(pilot, app)
        assert same_file()

        morgue("remove", "beta", "--yes")
        await select(pilot, app, "beta")
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirmation")
        await pilot.press("y")
        await until(pilot, lambda: isinstance(app.screen, ProfilesScreen), what="confirmed")
        await until(pilot, same_file, what="the same removal")

    with_profiles_app(shown, by_screen, scenario)

    assert read_config(by_screen) == {
        "profiles": {
            "alpha": {"url": redis_server.url, "refresh": 0.5, "inspect_timeout": 0.5},
            "gamma": {"url": gamma_url, "grace": 5.0},
        }
    }
    assert mode(by_cli) == mode(by_screen) == 0o600
