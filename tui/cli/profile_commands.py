"""`morgue profiles ...`: the connection profiles in the config file."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from celery_morgue.tui.cli.output import Column, emit_json, key_values, render_table
from celery_morgue.tui.cli.session import BadUsage, Failure, ProfileSession, confirm
from celery_morgue.tui.config_file import (
    Config,
    ConfigError,
    ProfileExistsError,
    UnknownProfileError,
    update_config,
)
from celery_morgue.tui.literal import printable
from celery_morgue.tui.profiles import Profile, ProfileError, has_password, validate_profile_fields

pass_profiles = click.make_pass_decorator(ProfileSession)

# Profile field -> the `profiles add` option that sets it, for error messages.
FIELD_OPTIONS = {
    "name": "NAME",
    "url": "--url",
    "broker_url": "--broker-url",
    "prefix": "--prefix",
    "refresh": "--refresh",
    "inspect_timeout": "--inspect-timeout",
    "hard_limit": "--hard-limit",
    "grace": "--grace",
    "readonly": "--readonly",
    "password_env": "--password-env",
    "username": "--username",
    "broker_password_env": "--broker-password-env",
    "timeout": "--timeout",
}


def _config(session: ProfileSession) -> Config:
    try:
        return session.config()
    except ConfigError as exc:
        raise Failure(str(exc)) from None


def _update(session: ProfileSession, change: Callable[[Config], None]) -> Config:
    try:
        return update_config(session.config_path, change)
    except UnknownProfileError as exc:
        raise BadUsage(str(exc)) from None
    except ProfileExistsError as exc:  # only `profiles add` saves a profile
        raise Failure(f"{exc}; pass --replace to overwrite it") from None
    except ConfigError as exc:
        raise Failure(str(exc)) from None


def profile_as_dict(profile: Profile, config: Config) -> dict[str, Any]:
    return {**profile.as_dict(), "default": config.default == profile.name}


@click.group(short_help="Connection profiles in the config file.")
def profiles() -> None:
    """Connection profiles in the config file (--config, $MORGUE_CONFIG)."""


@profiles.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_profiles
def list_profiles(session: ProfileSession, as_json: bool) -> None:
    """Every profile; * marks the default."""
    config = _config(session)
    found = [config.profiles[name] for name in config.names()]
    if as_json:
        emit_json([profile_as_dict(profile, config) for profile in found])
        return
    if not found:
        where = str(config.path) if config.exists else f"{config.path} (no file yet)"
        click.echo(f"no profiles in {where}; add one with `morgue profiles add NAME --url URL`")
        return
    columns = [
        Column(""),
        Column("name", flexible=True),
        Column("url", flexible=True, minimum=12),
        Column("broker", flexible=True, minimum=8),
        Column("mode"),
    ]
    rows = [
        [
            "*" if config.default == profile.name else "",
            profile.name,
            profile.as_dict()["url"],
            profile.as_dict()["broker_url"] or "-",
            "readonly" if profile.readonly else "",
        ]
        for profile in found
    ]
    click.echo(render_table(columns, rows))


@profiles.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_profiles
def show_profile(session: ProfileSession, name: str, as_json: bool) -> None:
    """One profile's settings (passwords never shown)."""
    config = _config(session)
    try:
        profile = config.get(name)
    except UnknownProfileError as exc:
        raise BadUsage(str(exc)) from None
    data = profile_as_dict(profile, config)
    if as_json:
        emit_json(data)
        return
    pairs = [
        (
            key,
            "-" if value is None else str(value).lower() if isinstance(value, bool) else str(value),
        )
        for key, value in data.items()
    ]
    click.echo(key_values([(key, printable(value)) for key, value in pairs]))


@profiles.command("add")
@click.argument("name")
@click.option(
    "--url", required=True, help="The Redis holding the DLQ (redis://, rediss://, unix://)."
)
@click.option("--broker-url", help="The Celery broker, when it is not that Redis.")
@click.option("--prefix", help="Key prefix of the DLQ streams, ending in ':' (default dlq:).")
@click.option("--refresh", type=float, help="Seconds between UI refreshes.")
@click.option("--inspect-timeout", type=float, help="Seconds to wait for worker replies.")
@click.option("--hard-limit", type=float, help="Assumed hard time limit of tasks, seconds.")
@click.option("--grace", type=float, help="Seconds past the limit before a task is a zombie.")
@click.option("--timeout", type=float, help="Seconds a connection attempt may take.")
@click.option("--readonly/--no-readonly", default=None, help="Refuse destructive actions.")
@click.option("--password-env", help="Environment variable holding the Redis password.")
@click.option("--username", help="The Redis ACL user (Redis 6+), when not the URL's.")
@click.option("--broker-password-env", help="Environment variable holding the broker password.")
@click.option("--default", "make_default", is_flag=True, help="Make it the default profile.")
@click.option("--replace", is_flag=True, help="Overwrite a profile of the same name.")
@pass_profiles
def add_profile(
    session: ProfileSession, /, name: str, make_default: bool, replace: bool, **settings: Any
) -> None:
    """Add profile NAME (the first profile becomes the default)."""
    fields = {key: value for key, value in settings.items() if value is not None}
    try:
        profile = validate_profile_fields(fields, name=name)
    except ProfileError as exc:
        raise BadUsage(f"{FIELD_OPTIONS.get(exc.field, exc.field)}: {exc.message}") from None

    def change(config: Config) -> None:
        config.save_profile(profile, replaces=name if replace else None, make_default=make_default)

    config = _update(session, change)
    note = "; it is the default" if config.default == name else ""
    click.echo(f"saved profile {name!r} ({profile.as_dict()['url']}) in {config.path}{note}")
    for option, url in (("--url", profile.url), ("--broker-url", profile.broker_url)):
        if url and has_password(url):
            click.echo(
                f"warning: the password in {option} is stored in the file; "
                "--password-env / --broker-password-env keep it out",
                err=True,
            )


@profiles.command("remove")
@click.argument("name")
@click.option(
    "--yes", "-y", is_flag=True, help="Do not ask; required when stdin is not a terminal."
)
@pass_profiles
def remove_profile(session: ProfileSession, name: str, yes: bool) -> None:
    """Remove profile NAME."""
    try:
        _config(session).get(name)
    except UnknownProfileError as exc:
        raise BadUsage(str(exc)) from None
    confirm(yes, f"Remove profile {name!r} from {session.config_path}?")
    _update(session, lambda config: config.remove_profile(name))
    click.echo(f"removed profile {name!r}")


@profiles.command("default")
@click.argument("name")
@pass_profiles
def default_profile(session: ProfileSession, name: str) -> None:
    """Make NAME the default profile."""
    _update(session, lambda config: config.set_default(name))
    click.echo(f"default profile: {name!r}")
