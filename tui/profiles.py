"""Connection profiles: what a `morgue` command or the UI connects to.

One TOML file (``config_path()``) holds a ``default = "NAME"``, ``[profiles.NAME]`` tables and an
optional ``[keymap]`` (binding id -> key) for the UI. ``Profile`` is the resolved, validated
settings of one profile; ``connect_profile`` turns one into live clients, so the CLI and the UI
connect the same way.

Two promises shape this module: a config file this code cannot fully read is never overwritten
(so nothing a user typed is lost), and no password ever leaves it in text meant for people:
URLs are shown through ``redact_url`` and error text through ``Connection.scrub``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import tempfile
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote, urlsplit, urlunsplit

import platformdirs
import redis
import tomli_w
from celery import Celery
from kombu.transport import TRANSPORT_ALIASES

from core.dlq import DEFAULT_PREFIX, DeadLetterQueue
from core.urls import REDIS_SCHEMES, connect, redact_url

APP_NAME = "celery-morgue"
CONFIG_ENV = "MORGUE_CONFIG"
CONFIG_FILE = "config.toml"

DEFAULT_REFRESH = 2.0
DEFAULT_INSPECT_TIMEOUT = 1.0
DEFAULT_HARD_LIMIT = 300.0
DEFAULT_GRACE = 30.0
DEFAULT_TIMEOUT = 3.0

_PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_TOML_AT_END = re.compile(r"\s*\(at end of document\)$")


@dataclass(frozen=True)
class Profile:
    name: str
    url: str  # the Redis holding the DLQ (redis://, rediss://, unix://)
    broker_url: str | None = None  # the Celery broker when it is not that Redis
    prefix: str = DEFAULT_PREFIX
    refresh: float = DEFAULT_REFRESH
    inspect_timeout: float = DEFAULT_INSPECT_TIMEOUT
    hard_limit: float = DEFAULT_HARD_LIMIT
    grace: float = DEFAULT_GRACE
    readonly: bool = False
    password_env: str | None = None
    # The broker's own password when ``broker_url`` is another server (RabbitMQ, say).
    broker_password_env: str | None = None
    # Seconds a Redis or broker connection attempt may take before the command gives up.
    timeout: float = DEFAULT_TIMEOUT

    def as_dict(self) -> dict[str, Any]:
        """Every setting, URLs redacted: safe to print."""
        data = dataclasses.asdict(self)
        data["url"] = redact_url(self.url)
        data["broker_url"] = redact_url(self.broker_url) if self.broker_url else None
        return data

    def to_table(self) -> dict[str, Any]:
        """The TOML table for this profile: ``url`` plus every setting that is not a default."""
        table: dict[str, Any] = {}
        for spec in dataclasses.fields(self):
            if spec.name == "name":
                continue
            value = getattr(self, spec.name)
            if spec.name == "url" or (value is not None and value != spec.default):
                table[spec.name] = value
        return table


# -- validation ------------------------------------------------------------------------------


class ProfileError(ValueError):
    """One profile setting is wrong; ``field`` names it so an editor can point at it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _text(field: str, value: object) -> str:
    if not isinstance(value, str):
        raise ProfileError(field, f"must be a string, got {type(value).__name__}")
    return value


def _check_url(field: str, value: object) -> str:
    url = _text(field, value).strip()
    if not url:
        raise ProfileError(field, "must not be empty")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port raises for a bad one
    except ValueError as exc:
        raise ProfileError(field, f"{redact_url(url)!r} is not a valid URL ({exc})") from None
    if parts.scheme not in REDIS_SCHEMES:
        raise ProfileError(
            field,
            f"{redact_url(url)!r} is not a Redis URL (expected "
            f"{', '.join(sorted(s + '://' for s in REDIS_SCHEMES))})",
        )
    if parts.scheme == "unix" and not parts.path:
        raise ProfileError(field, "a unix:// URL needs a socket path, e.g. unix:///run/redis.sock")
    if parts.scheme != "unix" and not parts.hostname:
        raise ProfileError(field, f"{redact_url(url)!r} names no host")
    return url


def _check_broker_url(field: str, value: object) -> str:
    url = _text(field, value).strip()
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018
    except ValueError as exc:
        raise ProfileError(field, f"{redact_url(url)!r} is not a valid URL ({exc})") from None
    transport = parts.scheme.split("+", 1)[0]
    if not parts.scheme or "://" not in url or transport not in TRANSPORT_ALIASES:
        raise ProfileError(
            field,
            f"{redact_url(url)!r} is not a broker URL kombu knows "
            "(e.g. amqp://, redis://, rediss://, sqs://)",
        )
    return url


def _check_prefix(field: str, value: object) -> str:
    prefix = _text(field, value)
    if not prefix or any(ch.isspace() for ch in prefix):
        raise ProfileError(field, f"must be a non-empty string without spaces, got {prefix!r}")
    return prefix


def _seconds(*, allow_zero: bool) -> Callable[[str, object], float]:
    def check(field: str, value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ProfileError(field, f"must be a number of seconds, got {value!r}")
        seconds = float(value)
        if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
            wanted = "zero or more" if allow_zero else "more than zero"
            raise ProfileError(field, f"must be {wanted} seconds, got {value!r}")
        return seconds

    return check


def _check_bool(field: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ProfileError(field, f"must be true or false, got {value!r}")
    return value


def _check_env_name(field: str, value: object) -> str:
    name = _text(field, value)
    if not _ENV_NAME.fullmatch(name):
        raise ProfileError(field, f"must be an environment variable name, got {name!r}")
    return name


def check_profile_name(name: object) -> str:
    if not isinstance(name, str) or not _PROFILE_NAME.fullmatch(name):
        raise ProfileError(
            "name",
            f"{name!r} is not a profile name (letters, digits, '_', '.', '-'; "
            "starting with a letter or digit; at most 64 characters)",
        )
    return name


# Field -> (validator, help). The order is the order an editor shows them in.
PROFILE_FIELDS: dict[str, tuple[Callable[[str, object], Any], str]] = {
    "url": (_check_url, "the Redis holding the DLQ: redis://, rediss:// or unix://"),
    "broker_url": (_check_broker_url, "the Celery broker, when it is not that Redis"),
    "prefix": (_check_prefix, "key prefix of the DLQ streams"),
    "refresh": (_seconds(allow_zero=False), "seconds between UI refreshes"),
    "inspect_timeout": (_seconds(allow_zero=False), "seconds to wait for worker replies"),
    "hard_limit": (_seconds(allow_zero=False), "assumed hard time limit of a task, seconds"),
    "grace": (_seconds(allow_zero=True), "seconds past the hard limit before a task is a zombie"),
    "readonly": (_check_bool, "refuse every destructive action"),
    "password_env": (_check_env_name, "environment variable holding the Redis password"),
    "broker_password_env": (_check_env_name, "environment variable holding the broker password"),
    "timeout": (_seconds(allow_zero=False), "seconds a connection attempt may take"),
}
_NUMBER_FIELDS = frozenset(
    {"refresh", "inspect_timeout", "hard_limit", "grace", "timeout"},
)


def validate_field(field: str, value: object) -> Any:
    """The checked value of one setting, or ``ProfileError`` naming the field."""
    try:
        check, _help = PROFILE_FIELDS[field]
    except KeyError:
        raise ProfileError(field, f"unknown setting (known: {', '.join(PROFILE_FIELDS)})") from None
    return check(field, value)


def _from_text(field: str, value: object) -> object:
    """What an editor's text box means for ``field``: numbers and booleans parsed."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if field in _NUMBER_FIELDS:
        try:
            return float(text)
        except ValueError:
            raise ProfileError(field, f"must be a number of seconds, got {text!r}") from None
    if field == "readonly":
        lowered = text.lower()
        if lowered in ("true", "yes", "on", "1"):
            return True
        if lowered in ("false", "no", "off", "0"):
            return False
        raise ProfileError(field, f"must be true or false, got {text!r}")
    return text


def validate_profile_fields(
    fields: Mapping[str, object], *, name: str | None = None, from_text: bool = False
) -> Profile:
    """A ``Profile`` from a TOML table or an editor's fields, or ``ProfileError``.

    ``name`` may come as an argument or as a ``"name"`` field. With ``from_text``, values are
    the strings of text inputs: numbers and booleans are parsed and an empty string means "not
    set" (the default).
    """
    values = dict(fields)
    profile_name = check_profile_name(name if name is not None else values.pop("name", None))
    values.pop("name", None)
    if from_text:
        values = {
            key: _from_text(key, value)
            for key, value in values.items()
            if not (isinstance(value, str) and not value.strip())
        }
    if "url" not in values:
        raise ProfileError(
            "url", "is required (the Redis holding the DLQ, e.g. redis://host:6379/0)"
        )
    checked = {key: validate_field(key, value) for key, value in values.items()}
    if checked.get("password_env") and urlsplit(checked["url"]).password is not None:
        raise ProfileError(
            "password_env", "is set but url holds a password too; keep the password in one place"
        )
    broker = checked.get("broker_url")
    if checked.get("broker_password_env"):
        if broker is None:
            raise ProfileError(
                "broker_password_env",
                "needs broker_url (without it the broker is url, whose password is password_env)",
            )
        if urlsplit(broker).password is not None:
            raise ProfileError(
                "broker_password_env",
                "is set but broker_url holds a password too; keep the password in one place",
            )
    return Profile(name=profile_name, **checked)


def validate_keymap(value: object) -> dict[str, str]:
    """The ``[keymap]`` table: binding id -> key, both non-empty strings."""
    if not isinstance(value, dict):
        raise ProfileError("keymap", f"must be a table of binding id = key, got {value!r}")
    keymap: dict[str, str] = {}
    for binding, key in value.items():
        if not isinstance(key, str) or not key.strip():
            raise ProfileError(f"keymap.{binding}", f"must be a key name string, got {key!r}")
        keymap[binding] = key
    return keymap


# -- the config file -------------------------------------------------------------------------


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


# -- connecting ------------------------------------------------------------------------------


def _password(profile: Profile, field: str, environ: Mapping[str, str]) -> str | None:
    variable = getattr(profile, field)
    if variable is None:
        return None
    value = environ.get(variable)
    if value is None:
        raise ProfileError(
            field, f"environment variable {variable} is not set (profile {profile.name!r})"
        )
    if not value:
        raise ProfileError(field, f"environment variable {variable} is empty")
    return value


def with_password(url: str, password: str) -> str:
    """``url`` carrying ``password``. For clients that only take URLs; never print the result."""
    parts = urlsplit(url)
    user = quote(parts.username or "", safe="")
    host = parts.netloc.rsplit("@", 1)[-1]
    netloc = f"{user}:{quote(password, safe='')}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _kombu_url(url: str) -> str:
    # redis-py says unix://, kombu says redis+socket://.
    return "redis+socket" + url[len("unix") :] if url.startswith("unix://") else url


def control_app(broker_url: str, timeout: float) -> Celery:
    """A Celery app for control commands and requeue that fails fast on a dead broker.

    JSON only. Connection and publish retries are off: a monitor should say "unreachable" in a
    few seconds, not retry for minutes.
    """
    app = Celery("celery-morgue", broker=broker_url, set_as_current=False)
    transport_options: dict[str, Any] = {"max_retries": 1}
    if urlsplit(broker_url).scheme.split("+", 1)[0] in ("redis", "rediss"):
        transport_options["socket_connect_timeout"] = timeout
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        result_backend=None,
        broker_connection_retry=False,
        broker_connection_retry_on_startup=False,
        broker_connection_max_retries=1,
        broker_connection_timeout=timeout,
        broker_transport_options=transport_options,
        task_publish_retry=False,
        broker_pool_limit=2,
    )
    return app


@dataclass
class Connection:
    """Live clients for one profile. Nothing connects until first used."""

    profile: Profile
    client: redis.Redis
    dlq: DeadLetterQueue
    app: Any  # a Celery app: ours, or the user's under `celery -A proj morgue`
    secrets: tuple[str, ...] = ()
    owns_app: bool = True

    @property
    def url(self) -> str:
        """The DLQ Redis, redacted."""
        return redact_url(self.profile.url)

    @property
    def broker(self) -> str:
        """The broker, redacted."""
        if not self.owns_app:
            return redact_url(first_url(self.app.conf.broker_url) or "")
        return redact_url(self.profile.broker_url or self.profile.url)

    def scrub(self, text: str) -> str:
        """``text`` with every password this connection knows replaced by ``***``."""
        for secret in self.secrets:
            for form in {secret, quote(secret, safe="")}:
                text = text.replace(form, "***")
        return text

    def close(self) -> None:
        self.client.close()
        if self.owns_app:
            self.app.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def connect_profile(
    profile: Profile, *, app: Any = None, environ: Mapping[str, str] | None = None
) -> Connection:
    """The DLQ client and the Celery app ``profile`` describes.

    Passwords come from ``password_env`` / ``broker_password_env``; a missing variable is a
    ``ProfileError``. With ``app`` (``celery -A proj morgue``) control and requeue use that app.
    """
    env = os.environ if environ is None else environ
    password = _password(profile, "password_env", env)
    broker_password = _password(profile, "broker_password_env", env)
    app_broker = first_url(app.conf.broker_url) if app is not None else None
    secrets = tuple(
        dict.fromkeys(
            secret
            for secret in (
                password,
                broker_password,
                _url_password(profile.url),
                _url_password(profile.broker_url),
                _url_password(app_broker),
            )
            if secret
        )
    )
    client = connect(profile.url, profile.timeout, password=password)
    dlq = DeadLetterQueue(client, prefix=profile.prefix)
    if app is not None:
        return Connection(profile, client, dlq, app, secrets, owns_app=False)
    if profile.broker_url is not None:
        broker = profile.broker_url
        if broker_password:
            broker = with_password(broker, broker_password)
    else:
        broker = with_password(profile.url, password) if password else profile.url
    return Connection(
        profile, client, dlq, control_app(_kombu_url(broker), profile.timeout), secrets
    )


def first_url(value: Any) -> str | None:
    """Celery's broker_url: a string, or a list of failover URLs."""
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    return value if isinstance(value, str) and value else None


def _url_password(url: str | None) -> str | None:
    if not url:
        return None
    try:
        return urlsplit(url).password
    except ValueError:
        return None
