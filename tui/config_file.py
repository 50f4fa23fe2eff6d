"""The TOML config file: ``default = "NAME"``, ``[profiles.NAME]`` tables and a ``[keymap]``.

A file this code cannot fully read is never overwritten, so nothing a user typed is lost; writes
are atomic (a temporary file in the same folder, fsync, rename) and mode 0600.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs
import tomli_w

from celery_morgue.tui.profiles import (
    Profile,
    ProfileError,
    validate_keymap,
    validate_profile_fields,
)

APP_NAME = "celery-morgue"
CONFIG_ENV = "MORGUE_CONFIG"
CONFIG_FILE = "config.toml"
_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_TOML_AT_END = re.compile(r"\s*\(at end of document\)$")


class ConfigError(Exception):
    """The config file cannot be used as asked; the message is one line for the user."""


class ConfigSyntaxError(ConfigError):
    """The file is not TOML (or not UTF-8). It is never overwritten."""

    def __init__(self, path: Path, line: int, column: int, reason: str) -> None:
        super().__init__(f"{path}:{line}:{column}: {reason} (line {line}, column {column})")
        self.path = path
        self.line = line
        self.column = column
        self.reason = reason


class NoProfileError(ConfigError):
    """Nothing says what to connect to."""


class UnknownProfileError(ConfigError):
    def __init__(self, name: str, known: list[str], path: Path) -> None:
        listed = ", ".join(known) if known else "none"
        super().__init__(f"no profile {name!r} in {path} (known profiles: {listed})")
        self.name = name
        self.known = known


class ProfileExistsError(ConfigError):
    """A new profile, or a renamed one, would take the name of another."""

    def __init__(self, name: str, path: Path) -> None:
        super().__init__(f"profile {name!r} already exists in {path}")
        self.name = name


def config_path(
    explicit: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Path:
    """``--config``, else ``$MORGUE_CONFIG``, else the user's config folder."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ if environ is None else environ
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV]).expanduser()
    return platformdirs.user_config_path(APP_NAME) / CONFIG_FILE


HOW_TO_ADD = "morgue profiles add NAME --url redis://HOST:6379/0"


@dataclass
class Config:
    path: Path
    profiles: dict[str, Profile] = field(default_factory=dict)
    default: str | None = None
    keymap: dict[str, str] = field(default_factory=dict)
    theme: str | None = None
    exists: bool = False

    def names(self) -> list[str]:
        return sorted(self.profiles)

    def get(self, name: str) -> Profile:
        try:
            return self.profiles[name]
        except KeyError:
            raise UnknownProfileError(name, self.names(), self.path) from None

    def resolve(self, name: str | None = None) -> Profile:
        """The named profile, else the default one, else the only one."""
        if name is not None:
            return self.get(name)
        if not self.profiles:
            where = f"{self.path} has no profiles" if self.exists else f"no config at {self.path}"
            raise NoProfileError(f"{where}; add one with `{HOW_TO_ADD}`, or pass --url")
        if self.default is not None:
            if self.default not in self.profiles:
                raise ConfigError(
                    f"{self.path}: default profile {self.default!r} does not exist "
                    f"(known profiles: {', '.join(self.names())}); "
                    "set one with `morgue profiles default NAME`"
                )
            return self.profiles[self.default]
        if len(self.profiles) == 1:
            return next(iter(self.profiles.values()))
        raise NoProfileError(
            f"{self.path} sets no default profile; pass --profile "
            f"({', '.join(self.names())}) or run `morgue profiles default NAME`"
        )

    # The edits `morgue profiles` and the profiles screen make, in memory: write them with
    # update_config, which never writes over a file that does not load.

    def save_profile(
        self, profile: Profile, *, replaces: str | None = None, make_default: bool = False
    ) -> None:
        """Add ``profile``, or put it in place of the profile named ``replaces``.

        ``replaces`` is the name the profile had before this edit: its own name to change it,
        another to rename it (the default follows the rename), None for a new profile. Taking
        the name of another profile is a ``ProfileExistsError``. The first profile of a file
        becomes its default, as ``make_default`` makes any.
        """
        if profile.name in self.profiles and profile.name != replaces:
            raise ProfileExistsError(profile.name, self.path)
        if replaces is not None and replaces != profile.name:
            self.profiles.pop(replaces, None)  # gone already: someone else removed it
            if self.default == replaces:
                self.default = profile.name
        first = not self.profiles
        self.profiles[profile.name] = profile
        if make_default or first:
            self.default = profile.name

    def remove_profile(self, name: str) -> None:
        """Remove profile ``name``; removing the default leaves the file without one."""
        self.get(name)
        del self.profiles[name]
        if self.default == name:
            self.default = None

    def set_default(self, name: str) -> None:
        self.get(name)
        self.default = name

    def to_toml(self) -> str:
        data: dict[str, Any] = {}
        if self.default is not None:
            data["default"] = self.default
        if self.theme is not None:
            data["theme"] = self.theme
        data["profiles"] = {name: self.profiles[name].to_table() for name in self.names()}
        if self.keymap:
            data["keymap"] = dict(self.keymap)
        return tomli_w.dumps(data)


_TOP_LEVEL_KEYS = ("default", "theme", "profiles", "keymap")


def _syntax_error(path: Path, text: str, error: tomllib.TOMLDecodeError) -> ConfigSyntaxError:
    message = str(error)
    position = _TOML_POSITION.search(message)
    if position:
        line, column = int(position.group(1)), int(position.group(2))
        return ConfigSyntaxError(path, line, column, message[: position.start()])
    lines = text.split("\n")
    reason = _TOML_AT_END.sub("", message) + " at the end of the file"
    return ConfigSyntaxError(path, len(lines), len(lines[-1]) + 1, reason)


def _decode(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        column = exc.start - (before.rfind(b"\n") + 1) + 1
        raise ConfigSyntaxError(path, line, column, "not UTF-8 text") from None


def parse_config(path: Path, raw: bytes) -> Config:
    """Check everything in the file; any problem is a one-line ``ConfigError`` naming it."""
    text = _decode(path, raw)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _syntax_error(path, text, exc) from None
    unknown = sorted(set(data) - set(_TOP_LEVEL_KEYS))
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {', '.join(unknown)} "
            f"(known: {', '.join(_TOP_LEVEL_KEYS)}; profiles go under [profiles.NAME])"
        )
    default = data.get("default")
    if default is not None and not isinstance(default, str):
        raise ConfigError(f"{path}: default must be a profile name string, got {default!r}")
    theme = data.get("theme")
    if theme is not None and (not isinstance(theme, str) or not theme):
        raise ConfigError(f"{path}: theme must be a theme name string, got {theme!r}")
    tables = data.get("profiles", {})
    if not isinstance(tables, dict):
        raise ConfigError(f"{path}: profiles must be tables like [profiles.NAME]")
    profiles: dict[str, Profile] = {}
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: profiles.{name} must be a table [profiles.{name}]")
        try:
            profiles[name] = validate_profile_fields(table, name=name)
        except ProfileError as exc:
            raise ConfigError(f"{path}: profile {name!r}: {exc}") from None
    try:
        keymap = validate_keymap(data.get("keymap", {}))
    except ProfileError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return Config(
        path=path, profiles=profiles, default=default, keymap=keymap, theme=theme, exists=True
    )


def load_config(path: Path) -> Config:
    """The config at ``path``; an empty one if there is no file yet."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Config(path=path)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    return parse_config(path, raw)


def save_config(config: Config) -> None:
    """Write atomically: a temporary file in the same folder, fsync, rename. Mode 0600."""
    path = config.path
    text = config.to_toml()
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkstemp creates the file 0600, so the profile is never readable by others, not even
        # for the moment before the rename.
        descriptor, temporary = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
        )
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
    with contextlib.suppress(OSError):
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)  # the rename itself survives a crash
        finally:
            os.close(folder)
    config.exists = True


def update_config(path: Path, change: Callable[[Config], None]) -> Config:
    """Load, apply ``change``, save. A file that does not load is left exactly as it is."""
    config = load_config(path)
    change(config)
    save_config(config)
    return config
