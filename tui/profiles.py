"""Connection profiles: the validated settings of one cluster a `morgue` command or the UI uses.

``Profile`` is one profile, resolved and checked; the validators here are shared by the config
file (``tui.config_file``), ``morgue profiles add`` and the UI's profile editor, so a bad value
gets the same one-line message, naming its field, wherever it was typed.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from kombu.transport import TRANSPORT_ALIASES

from celery_morgue.core.dlq import DEFAULT_PREFIX
from celery_morgue.core.options import DEFAULT_GRACE, DEFAULT_HARD_LIMIT, DEFAULT_INSPECT_TIMEOUT
from celery_morgue.core.sentinel import (
    SentinelURLError,
    is_sentinel_url,
    parse_sentinel_url,
    with_sentinel_options,
)
from celery_morgue.core.urls import REDIS_SCHEMES, is_url_list, redact_url, url_passwords

DEFAULT_REFRESH = 2.0
DEFAULT_TIMEOUT = 3.0

_PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Profile:
    name: str
    url: str  # the Redis holding the DLQ (redis://, rediss://, unix://, sentinel://;...)
    broker_url: str | None = None  # the Celery broker when it is not that Redis
    prefix: str = DEFAULT_PREFIX
    refresh: float = DEFAULT_REFRESH
    inspect_timeout: float = DEFAULT_INSPECT_TIMEOUT
    hard_limit: float = DEFAULT_HARD_LIMIT
    grace: float = DEFAULT_GRACE
    readonly: bool = False
    password_env: str | None = None
    # The Redis ACL user (Redis 6+); without it, the ``default`` user or the URL's user.
    username: str | None = None
    # The broker's own password when ``broker_url`` is another server (RabbitMQ, say).
    broker_password_env: str | None = None
    # Seconds a Redis or broker connection attempt may take before the command gives up.
    timeout: float = DEFAULT_TIMEOUT
    cluster: bool = False  # url is a node of a Redis Cluster (see core.redis_cluster)
    # The Sentinel-monitored master's name, for a sentinel:// url without ?master_name=.
    master_name: str | None = None

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


def _reason(error: ValueError) -> str:
    """Why urlsplit refused a URL, without the text it refused (``redis://:pw`` reads pw as a
    port)."""
    text = str(error)
    return "its port is not a number" if text.startswith("Port could not be cast") else text


def _check_url(field: str, value: object) -> str:
    url = _text(field, value).strip()
    if not url:
        raise ProfileError(field, "must not be empty")
    if is_sentinel_url(url):
        _check_sentinel_url(field, url)
        return url
    if is_url_list(url):
        raise ProfileError(
            field,
            f"{redact_url(url)!r} is a list of URLs; the DLQ is one Redis "
            "(write a ';' in a password as %3B)",
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port raises for a bad one
    except ValueError as exc:
        raise ProfileError(
            field, f"{redact_url(url)!r} is not a valid URL ({_reason(exc)})"
        ) from None
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


def _check_sentinel_url(field: str, url: str) -> None:
    """The Sentinels' addresses; the master name may come from the ``master_name`` field."""
    try:
        parse_sentinel_url(with_sentinel_options(url, {"master_name": "-"}))
    except SentinelURLError as exc:
        raise ProfileError(field, str(exc)) from None


def _check_master_name(field: str, value: object) -> str:
    name = _text(field, value).strip()
    if not name or any(ch.isspace() for ch in name):
        raise ProfileError(field, f"must be a Sentinel master name without spaces, got {name!r}")
    return name


def _check_broker_url(field: str, value: object) -> str:
    """One broker URL, or kombu's failover list ``url;url``: each one a URL kombu knows."""
    url = _text(field, value).strip()
    parts = url.split(";")
    for part in parts:
        _check_one_broker_url(field, part.strip(), listed=len(parts) > 1)
    return url


def _check_one_broker_url(field: str, url: str, *, listed: bool) -> None:
    if listed and not url:
        raise ProfileError(field, "has an empty URL in its ';'-separated list")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018
    except ValueError as exc:
        raise ProfileError(
            field, f"{redact_url(url)!r} is not a valid URL ({_reason(exc)})"
        ) from None
    transport = parts.scheme.split("+", 1)[0]
    if not parts.scheme or "://" not in url or transport not in TRANSPORT_ALIASES:
        raise ProfileError(
            field,
            f"{redact_url(url)!r} is not a broker URL kombu knows "
            "(e.g. amqp://, redis://, rediss://, sqs://)",
        )


def _check_prefix(field: str, value: object) -> str:
    prefix = _text(field, value)
    if not prefix or any(ch.isspace() for ch in prefix):
        raise ProfileError(field, f"must be a non-empty string without spaces, got {prefix!r}")
    # What core.install accepts: the DLQ keeps its own keys beside the streams under the prefix
    # with '@' for its final ':' (dlq@queues beside dlq:celery).
    if len(prefix) < 2 or not prefix.endswith(":"):
        raise ProfileError(field, f"must end with ':' (like 'dlq:'), got {prefix!r}")
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


def _check_username(field: str, value: object) -> str:
    name = _text(field, value)
    if not name or any(ch.isspace() or ch in ":@/" for ch in name):
        raise ProfileError(
            field, f"must be an ACL user name without spaces, ':', '@' or '/', got {name!r}"
        )
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
    "url": (
        _check_url,
        "the Redis holding the DLQ: redis://, rediss://, unix:// or sentinel://h:p;sentinel://...",
    ),
    "broker_url": (_check_broker_url, "the Celery broker, when it is not that Redis"),
    "prefix": (_check_prefix, "key prefix of the DLQ streams, ending in ':'"),
    "refresh": (_seconds(allow_zero=False), "seconds between UI refreshes"),
    "inspect_timeout": (_seconds(allow_zero=False), "seconds to wait for worker replies"),
    "hard_limit": (_seconds(allow_zero=False), "assumed hard time limit of a task, seconds"),
    "grace": (_seconds(allow_zero=True), "seconds past the hard limit before a task is a zombie"),
    "readonly": (_check_bool, "refuse every destructive action"),
    "password_env": (_check_env_name, "environment variable holding the Redis password"),
    "username": (_check_username, "the Redis ACL user (Redis 6+), when not the URL's"),
    "broker_password_env": (_check_env_name, "environment variable holding the broker password"),
    "timeout": (_seconds(allow_zero=False), "seconds a connection attempt may take"),
    "cluster": (_check_bool, "url is a node of a Redis Cluster (needs broker_url)"),
    "master_name": (_check_master_name, "the Sentinel master name, for a sentinel:// url"),
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
    if checked.get("password_env") and has_password(checked["url"]):
        raise ProfileError(
            "password_env", "is set but url holds a password too; keep the password in one place"
        )
    if is_sentinel_url(checked["url"]):
        try:
            parse_sentinel_url(with_sentinel_options(checked["url"], checked))
        except SentinelURLError as exc:
            raise ProfileError("url", str(exc)) from None
    broker = checked.get("broker_url")
    if checked.get("broker_password_env"):
        if broker is None:
            raise ProfileError(
                "broker_password_env",
                "needs broker_url (without it the broker is url, whose password is password_env)",
            )
        if has_password(broker):
            raise ProfileError(
                "broker_password_env",
                "is set but broker_url holds a password too; keep the password in one place",
            )
    return Profile(name=profile_name, **checked)


def has_password(url: str) -> bool:
    """Whether ``url``, or any URL of a ``url;url`` list, holds a password (the user info's or
    a ``password=`` parameter)."""
    return bool(url_passwords(url))


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
