"""`morgue serve`: the dashboard in a browser, one app process per tab on the same profile."""

from __future__ import annotations

import ipaddress
import sys

import click

from celery_morgue.tui.cli.session import BadUsage, Failure, ProfileSession, Session, pass_session

# The served app reads a `--url` from here: a password in it stays off every command line.
URL_ENV = "MORGUE_URL"
TOKEN_ENV = "MORGUE_SERVE_TOKEN"  # noqa: S105 - the variable's name, not a secret


def is_loopback(host: str) -> bool:
    """An address or name only this machine reaches: ``--host`` and the Host header alike."""
    name = host.rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def app_command(session: ProfileSession, theme: str | None, mouse: bool) -> list[str]:
    """The `morgue` UI on this session's config file and profile, for one browser tab."""
    argv = [sys.executable, "-m", "celery_morgue.tui.cli", "--config", str(session.config_path)]
    if session.profile_name is not None or session.url is None:
        argv += ["--profile", session.profile().name]
    if theme:
        argv += ["--theme", theme]
    if not mouse:
        argv.append("--no-mouse")
    return [*argv, "ui"]


def app_environment(session: ProfileSession) -> dict[str, str]:
    env = {TOKEN_ENV: ""}  # the app has no use for the server's token
    if session.url is not None:
        env[URL_ENV] = session.url
    return env


@click.command(short_help="The dashboard in a browser (HTTP and WebSocket).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--token",
    envvar=TOKEN_ENV,
    help=(
        f"A secret the page must carry (?token=). On the command line it shows in `ps`:"
        f" prefer ${TOKEN_ENV}."
    ),
)
@click.option(
    "--i-know-this-is-unauthenticated",
    "unauthenticated",
    is_flag=True,
    help="Listen beyond loopback without a token: anyone who reaches the port drives the UI.",
)
@click.option(
    "--max-tabs",
    default=8,
    show_default=True,
    type=click.IntRange(1),
    help="Tabs open at once (each runs a `morgue ui`); more are refused.",
)
@click.option("--theme", help="UI theme, e.g. ansi-dark.")
@click.option("--no-mouse", is_flag=True, help="Leave the mouse to the browser.")
@pass_session
def serve(
    session: Session,
    host: str,
    port: int,
    token: str | None,
    unauthenticated: bool,
    max_tabs: int,
    theme: str | None,
    no_mouse: bool,
) -> None:
    """Serve the dashboard to browsers; each tab runs its own `morgue` UI on this profile.

    Listens on loopback: reach it from elsewhere through `ssh -L 8000:localhost:8000 HOST`.
    Any other address needs --token (the page opens as /?token=...) or
    --i-know-this-is-unauthenticated. Ctrl+C or SIGTERM ends every tab's app.
    """
    if not isinstance(session, ProfileSession):
        raise BadUsage("serve runs from `morgue`, not from `celery morgue`")
    token = token or None
    if not is_loopback(host) and token is None and not unauthenticated:
        raise BadUsage(
            f"--host {host} is not loopback: pass --token, or --i-know-this-is-unauthenticated"
        )
    argv = app_command(session, theme or session.theme(), not no_mouse)
    try:
        from celery_morgue.tui.serve.web_server import MorgueServer
    except ImportError as exc:
        raise Failure(f"serving is not available: {exc}") from None

    def ready(bound_port: int) -> None:
        shown = f"[{host}]" if ":" in host else host
        query = "?token=..." if token else ""
        click.echo(f"morgue serve: http://{shown}:{bound_port}/{query} (Ctrl+C to stop)")

    server = MorgueServer(
        argv,
        app_environment(session),
        host=host,
        port=port,
        token=token,
        unauthenticated=unauthenticated,
        max_tabs=max_tabs,
        title=f"morgue: {session.profile().name}",
        on_ready=ready,
    )
    try:
        server.serve()
    except OSError as exc:
        raise Failure(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
