"""What the profile editor's boxes mean: a checked profile, or a message per refused field.

Every value goes through the validators of :mod:`tui.profiles` (the same as the config file's
and `morgue profiles add`'s). Passwords go into the file (inside the URL) only when the user
chooses to store them; otherwise the profile names the environment variable that holds the
password, and the typed one is kept in memory for this session only. No textual here: the
screen is :mod:`tui.screens.profile_form`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from celery_morgue.core.urls import is_url_list
from celery_morgue.tui.connection import with_password
from celery_morgue.tui.profiles import (
    PROFILE_FIELDS,
    Profile,
    ProfileError,
    check_profile_name,
    validate_field,
    validate_profile_fields,
)

# A stand-in for a field already refused, so that checking goes on and every other bad field
# gets its own message in the same pass.
_CHECKED_NAME = "profile"
_CHECKED_URL = "redis://localhost:6379/0"


@dataclass(frozen=True)
class TextField:
    key: str  # a Profile field, or "name", "password", "broker_password"
    label: str
    help: str
    password: bool = False


_DEFAULTS = {spec.name: spec.default for spec in dataclasses.fields(Profile)}


def _number_help(key: str) -> str:
    return f"{_DEFAULTS[key]:g} when empty: {PROFILE_FIELDS[key][1]}"


TEXT_FIELDS = (
    TextField("name", "Name", "letters, digits, '_', '.', '-'"),
    TextField("url", "Redis URL", PROFILE_FIELDS["url"][1]),
    TextField("password", "Password", "typed masked; empty: none", password=True),
    TextField("password_env", "Password env var", PROFILE_FIELDS["password_env"][1]),
    TextField("broker_url", "Broker URL", "empty: the Redis URL is the broker"),
    TextField("broker_password", "Broker password", "typed masked; empty: none", password=True),
    TextField(
        "broker_password_env", "Broker password env", PROFILE_FIELDS["broker_password_env"][1]
    ),
    TextField("prefix", "Key prefix", f"{_DEFAULTS['prefix']} when empty"),
    TextField("refresh", "Refresh, s", _number_help("refresh")),
    TextField("inspect_timeout", "Inspect timeout, s", _number_help("inspect_timeout")),
    TextField("hard_limit", "Hard limit, s", _number_help("hard_limit")),
    TextField("grace", "Grace, s", _number_help("grace")),
    TextField("timeout", "Connect timeout, s", _number_help("timeout")),
)
# The fields that are Profile settings as typed (the rest are the name and the passwords).
SETTINGS = tuple(
    field.key for field in TEXT_FIELDS if field.key not in ("name", "password", "broker_password")
)
# Which URL each password belongs to, and the variable that holds it when it is not stored.
PASSWORDS = {
    "password": ("url", "password_env"),
    "broker_password": ("broker_url", "broker_password_env"),
}


@dataclass(frozen=True)
class ProfileDraft:
    """A checked profile, ready to be written."""

    profile: Profile
    replaces: str | None  # the name the profile had before this edit; None for a new one
    session_passwords: Mapping[str, str]  # env var -> password, kept in memory only


def split_password(url: str | None) -> tuple[str, str]:
    """``url`` without its password, and the password (empty if none): for the masked box.

    A ``url;url`` failover list loses the password of every element; the box holds the first
    one, and saving puts it back into each (hosts of one failover list share one password).
    """
    if not url:
        return "", ""
    if is_url_list(url):
        pieces = [_split_one(part) for part in url.split(";") if part]
        password = next((secret for _, secret in pieces if secret), "")
        return ";".join(bare for bare, _ in pieces), password
    return _split_one(url)


def _split_one(url: str) -> tuple[str, str]:
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url, ""
    if password is None:
        return url, ""
    user = quote(unquote(parts.username or ""), safe="")
    host = parts.netloc.rsplit("@", 1)[-1]
    netloc = f"{user}@{host}" if user else host
    bare = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return bare, unquote(password)


def _url_password(url: str) -> str | None:
    """The password ``url`` holds (any element of a failover list), or None."""
    return split_password(url)[1] or None


@dataclass
class FormValues:
    """What the user typed: every text box as a string, and the two switches."""

    text: dict[str, str]
    store_passwords: bool
    readonly: bool


def check_form(
    values: FormValues, *, replaces: str | None, taken: Collection[str]
) -> tuple[ProfileDraft | None, dict[str, str]]:
    """The draft, or the message for each refused field (``{}`` when there is a draft)."""
    text = {key: value.strip() for key, value in values.text.items()}
    errors: dict[str, str] = {}
    name = text["name"]
    try:
        check_profile_name(name)
    except ProfileError as exc:
        errors["name"] = exc.message
    if "name" not in errors and name != replaces and name in taken:
        errors["name"] = f"a profile named {name!r} exists already"

    fields: dict[str, object] = {key: text[key] for key in SETTINGS}
    fields["readonly"] = values.readonly
    session: dict[str, str] = {}
    for password_key, (url_key, env_key) in PASSWORDS.items():
        url, password = text[url_key], values.text[password_key]  # a password keeps its spaces
        if url:
            try:
                validate_field(url_key, url)
            except ProfileError as exc:
                errors[url_key] = exc.message
                continue
        if not password:
            if url and _url_password(url) is not None and not values.store_passwords:
                errors[url_key] = (
                    "holds a password: type it in the password box, or switch on storing "
                    "passwords in the file"
                )
            continue
        if not url:
            errors[password_key] = f"needs the {url_key.replace('_', ' ')} it is the password of"
        elif _url_password(url) is not None:
            errors[password_key] = "the URL holds a password too: keep it in one place"
        elif values.store_passwords:
            fields[url_key] = with_password(url, password)
        elif not text[env_key]:
            errors[env_key] = (
                "name the environment variable that holds this password, or switch on storing "
                "passwords in the file"
            )
        else:
            session[text[env_key]] = password

    profile = _checked_profile(fields, name if "name" not in errors else _CHECKED_NAME, errors)
    if errors or profile is None:
        return None, errors
    return ProfileDraft(profile, replaces, session), {}


def _checked_profile(
    fields: dict[str, object], name: str, errors: dict[str, str]
) -> Profile | None:
    """Validate ``fields``, adding every refused field to ``errors`` (the first message wins)."""
    remaining = {key: value for key, value in fields.items() if key not in errors}
    if "url" in errors:
        remaining["url"] = _CHECKED_URL
    for _attempt in range(len(fields) + 1):
        try:
            return validate_profile_fields(remaining, name=name, from_text=True)
        except ProfileError as exc:
            if exc.field not in remaining:
                errors.setdefault(exc.field, exc.message)
                return None
            errors.setdefault(exc.field, exc.message)
            if exc.field == "url":
                if remaining["url"] == _CHECKED_URL:
                    return None
                remaining["url"] = _CHECKED_URL
            else:
                del remaining[exc.field]
    return None


def _shown(value: object) -> str:
    if isinstance(value, float):
        # Every digit (a value saved unchanged must stay the same), without a bare ".0".
        return repr(value).removesuffix(".0")
    return "" if value is None else str(value)


def initial_values(profile: Profile | None, passwords: Mapping[str, str]) -> FormValues:
    """The form for ``profile`` (empty for a new one); defaults stay empty, as placeholders."""
    text = {field.key: "" for field in TEXT_FIELDS}
    if profile is None:
        return FormValues(text, store_passwords=False, readonly=False)
    table = profile.to_table()
    for key in SETTINGS:
        text[key] = _shown(table.get(key))
    text["name"] = profile.name
    stored = False
    for password_key, (url_key, env_key) in PASSWORDS.items():
        bare, password = split_password(getattr(profile, url_key))
        if password:
            stored = True
            text[url_key], text[password_key] = bare, password
        else:
            text[password_key] = passwords.get(getattr(profile, env_key) or "", "")
    return FormValues(text, store_passwords=stored, readonly=profile.readonly)
