"""What a command works on, and how failures become one line and an exit status.

``ProfileSession`` serves `morgue` (a profile from the config file, or ``--url``);
``CelerySession`` serves `celery -A proj morgue` (the loaded app's broker and DLQ). Commands
only see the shared interface, so the same command objects sit in both groups.

Exit statuses: 0 done; 1 the work could not be done (a server unreachable, a queue or entry
unknown, a read-only profile, a config file that does not load); 2 the command line is wrong
(including a destructive command without ``--yes`` when stdin is not a terminal).
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import redis
from kombu.exceptions import OperationalError as KombuOperationalError

from celery_morgue.core.errors import DLQError, acl_refusal, certificate_refusal
from celery_morgue.core.urls import RedisURLError, redact_url, resolve_redis_url
from celery_morgue.core.wording import one_line
from celery_morgue.core.zombies import ClusterUnavailable
from celery_morgue.tui.config_file import (
    Config,
    ConfigError,
    NoProfileError,
    UnknownProfileError,
    config_path,
    load_config,
)
from celery_morgue.tui.connection import Connection, connect_profile, first_url, scrub
from celery_morgue.tui.profiles import (
    Profile,
    ProfileError,
    validate_field,
    validate_profile_fields,
)

# The `--url` alone profile's name, shown in messages.
URL_PROFILE = "url"


class Failure(click.ClickException):
    """The command could not do its work: exit 1, one line on stderr."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


class BadUsage(click.ClickException):
    """The command line is wrong: exit 2, one line on stderr (no usage dump)."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


class Session:
    """The profile, the connection made from it lazily, and the rules around destruction."""

    def __init__(self) -> None:
        self._connection: Connection | None = None

    def profile(self) -> Profile:
        raise NotImplementedError

    def _connect(self) -> Connection:
        raise NotImplementedError

    def connection(self) -> Connection:
        if self._connection is None:
            self._connection = self._connect()
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def theme(self) -> str | None:
        return None

    def keymap(self) -> dict[str, str]:
        return {}

    def scrub(self, text: str) -> str:
        """``text`` with the passwords of this session's URLs (every URL of a failover list)
        replaced by ``***``, whether or not it connected."""
        if self._connection is not None:
            return self._connection.scrub(text)
        return scrub(text, self.known_urls())

    def known_urls(self) -> list[Any]:
        """The URLs whose passwords must not be shown; none when no profile can be read."""
        try:
            profile = self.profile()
        except Exception:  # a profile that does not load holds no URL to hide
            return []
        return [profile.url, profile.broker_url]

    def require_writable(self, action: str) -> None:
        profile = self.profile()
        if profile.readonly:
            raise Failure(f"profile {profile.name!r} is read-only: refusing to {action}")

    def redis_url(self) -> str:
        if self._connection is not None:
            return self._connection.url
        try:
            return redact_url(self.profile().url)
        except click.ClickException:
            return "the DLQ Redis"

    def broker_url(self) -> str:
        if self._connection is not None:
            return self._connection.broker
        return "the broker"


class ProfileSession(Session):
    """`morgue`: ``--url``, else ``--profile``, else the config's default profile."""

    def __init__(self, config: str | None, profile_name: str | None, url: str | None) -> None:
        super().__init__()
        self.config_path: Path = config_path(config)
        self.profile_name = profile_name
        self.url = url
        self._config: Config | None = None
        self._profile: Profile | None = None

    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config

    def profile(self) -> Profile:
        if self._profile is None:
            self._profile = self._resolve()
        return self._profile

    def _resolve(self) -> Profile:
        if self.url is not None and self.profile_name is None:
            # --url alone needs no config file at all.
            try:
                return validate_profile_fields(
                    {"url": validate_field("url", self.url)}, name=URL_PROFILE
                )
            except ProfileError as exc:
                raise BadUsage(f"--url: {exc.message}") from None
        try:
            profile = self.config().resolve(self.profile_name)
        except (NoProfileError, UnknownProfileError) as exc:
            raise BadUsage(str(exc)) from None
        except ConfigError as exc:
            raise Failure(str(exc)) from None
        if self.url is None:
            return profile
        try:
            return validate_profile_fields(
                {**profile.to_table(), "url": self.url}, name=profile.name
            )
        except ProfileError as exc:
            raise BadUsage(f"--url with profile {profile.name!r}: {exc}") from None

    def _connect(self) -> Connection:
        profile = self.profile()
        try:
            return connect_profile(profile)
        except ProfileError as exc:
            raise Failure(str(exc)) from None

    def _settings(self) -> Config | None:
        """The config for UI settings; none with `--url` alone, which needs no file."""
        if self.url is not None and self.profile_name is None:
            return None
        try:
            return self.config()
        except ConfigError as exc:
            raise Failure(str(exc)) from None

    def theme(self) -> str | None:
        config = self._settings()
        return config.theme if config else None

    def keymap(self) -> dict[str, str]:
        config = self._settings()
        return dict(config.keymap) if config else {}


class CelerySession(Session):
    """`celery -A proj morgue`: the app's broker for control and requeue, its Redis for the DLQ.

    The DLQ Redis and prefix are what ``core.install(app, ...)`` chose when the app module ran
    it on import, else the app's Redis broker or result backend with the default prefix.
    """

    def __init__(self, app: Any) -> None:
        super().__init__()
        self.app = app
        self._profile: Profile | None = None

    def profile(self) -> Profile:
        if self._profile is None:
            from celery_morgue.core.install import installation_of

            installation = installation_of(self.app)
            try:
                url = installation.redis_url if installation else resolve_redis_url(self.app)
            except RedisURLError as exc:
                raise Failure(str(exc)) from None
            self._profile = Profile(
                name=self.app.main or "celery",
                url=url,
                broker_url=first_url(self.app.conf.broker_url),
                prefix=installation.options.prefix if installation else Profile.prefix,
            )
        return self._profile

    def _connect(self) -> Connection:
        return connect_profile(self.profile(), app=self.app)

    def known_urls(self) -> list[Any]:
        return [*super().known_urls(), self.app.conf.broker_url]


def translate(session: Session, error: BaseException) -> click.ClickException | None:
    """The one-line failure for an error from Redis, the broker or the DLQ; None if unknown."""
    detail = one_line(session.scrub(str(error))) or type(error).__name__
    on_broker = isinstance(error, KombuOperationalError)
    if isinstance(error, redis.RedisError | KombuOperationalError | ConnectionError):
        where = (
            f"the broker at {session.broker_url()}"
            if on_broker
            else f"Redis at {session.redis_url()}"
        )
        refusal = acl_refusal(detail)
        if refusal is not None:
            return Failure(f"{where} refused: {refusal}")
        certificate = certificate_refusal(detail)
        if certificate is not None:
            return Failure(f"cannot reach {where}: {certificate}; check ssl_ca_certs")
    if isinstance(error, redis.AuthenticationError):
        return Failure(f"Redis at {session.redis_url()} refused the credentials: {detail}")
    if isinstance(error, redis.ConnectionError | redis.TimeoutError):
        return Failure(f"cannot reach Redis at {session.redis_url()}: {detail}")
    if isinstance(error, redis.RedisError):
        return Failure(f"Redis at {session.redis_url()} answered with an error: {detail}")
    if isinstance(error, ClusterUnavailable):
        return Failure(detail)  # it names the broker, redacted, itself
    if isinstance(error, KombuOperationalError):
        return Failure(f"cannot reach the broker at {session.broker_url()}: {detail}")
    if isinstance(error, DLQError | RedisURLError | ConfigError):
        return Failure(detail)
    if isinstance(error, ProfileError):
        return Failure(detail)
    if isinstance(error, ConnectionError | TimeoutError):
        return Failure(f"cannot reach the broker at {session.broker_url()}: {detail}")
    return None


class MorgueGroup(click.Group):
    """A root group whose commands fail with one line and a status, never a traceback."""

    def main(
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        # click's own usage errors print the usage, a hint and a blank line: scripts reading
        # stderr get one line here, like every other failure.
        try:
            result = super().main(args, prog_name, complete_var, False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            # A group without its command (`morgue dlq`): its help, as click lays it out.
            click.echo(exc.ctx.get_help() if exc.ctx is not None else exc.format_message())
            sys.exit(0)
        except click.UsageError as exc:
            name = prog_name or self.name or "morgue"
            click.echo(f"Error: {one_line(exc.format_message())} (see {name} --help)", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted.", err=True)
            sys.exit(1)
        except Exception as exc:
            # A bug: its traceback, as Python would print it, but scrubbed of passwords.
            text = "".join(traceback.format_exception(exc))
            sys.stderr.write(self._scrub(text))
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)

    _scrub: Callable[[str], str] = staticmethod(lambda text: text)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            session = ctx.find_object(Session) or Session()
            failure = translate(session, exc)
            if failure is None:
                self._scrub = session.scrub
                raise
            raise failure from None


def confirm(yes: bool, question: str) -> None:
    """Ask on a terminal; without one, refuse unless ``--yes`` was given (exit 2)."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise BadUsage(
            f"{question.rstrip('?')}: not confirmed (stdin is not a terminal); pass --yes"
        )
    click.confirm(question, abort=True, err=True)


pass_session = click.make_pass_decorator(Session)
