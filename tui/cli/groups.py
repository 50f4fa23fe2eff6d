"""The two roots of the same commands: `morgue` and `celery -A proj morgue`."""

from __future__ import annotations

import inspect
import sys
from collections.abc import Sequence
from typing import Any

import click

from celery_morgue.tui.cli.cluster_commands import tasks, zombies
from celery_morgue.tui.cli.dlq_commands import dlq, queues
from celery_morgue.tui.cli.group_commands import failure_groups, regroup
from celery_morgue.tui.cli.metrics_command import metrics
from celery_morgue.tui.cli.profile_commands import profiles
from celery_morgue.tui.cli.serve_command import serve
from celery_morgue.tui.cli.session import (
    BadUsage,
    CelerySession,
    Failure,
    MorgueGroup,
    ProfileSession,
    Session,
)

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

theme_option = click.option("--theme", help="UI theme, e.g. ansi-dark on a plain terminal.")
no_mouse_option = click.option("--no-mouse", is_flag=True, help="Leave the mouse to the terminal.")


def open_ui(session: Session, theme: str | None, mouse: bool) -> None:
    profile = session.profile()
    try:
        # Imported here: textual is heavy, and `celery` loads this module for every command.
        from celery_morgue.tui.app import UnknownThemeError, run_ui
    except ImportError as exc:
        raise Failure(f"the UI is not available: {exc}") from None
    options: dict[str, Any] = {"theme": theme or session.theme(), "mouse": mouse}
    keymap = session.keymap()
    if keymap and "keymap" in inspect.signature(run_ui).parameters:
        options["keymap"] = keymap
    if "config_path" in inspect.signature(run_ui).parameters:  # the profiles screen's file
        options["config_path"] = getattr(session, "config_path", None)
    try:
        run_ui(profile, **options)
    except UnknownThemeError as exc:
        raise BadUsage(str(exc)) from None


@click.command("ui")
@theme_option
@no_mouse_option
@click.pass_context
def ui(ctx: click.Context, theme: str | None, no_mouse: bool) -> None:
    """Open the terminal UI (the same as no command)."""
    parent = ctx.parent.params if ctx.parent is not None else {}
    session = ctx.find_object(Session)
    assert session is not None
    open_ui(session, theme or parent.get("theme"), not (no_mouse or parent.get("no_mouse")))


@click.command("demo", short_help="A local demo cluster under the UI.")
@click.option("--headless", is_flag=True, help="No UI: print the demo's URL and pids as JSON.")
@theme_option
@no_mouse_option
def demo(headless: bool, theme: str | None, no_mouse: bool) -> None:
    """A private Redis, a worker and failing tasks, with the UI on top (Ctrl+C ends it)."""
    try:
        from celery_morgue.tui.demo.runner import run_demo
    except ImportError as exc:
        raise Failure(f"the demo is not available: {exc}") from None
    from celery_morgue.tui.demo.processes import ServiceError

    try:
        run_demo(theme=theme, mouse=not no_mouse, headless=headless)
    except ServiceError as exc:
        raise Failure(f"the demo could not start: {exc}") from None


@click.group(cls=MorgueGroup, invoke_without_command=True, context_settings=CONTEXT)
@click.option("--profile", "profile_name", envvar="MORGUE_PROFILE", help="Profile to use.")
@click.option(
    "--url", envvar="MORGUE_URL", help="Redis holding the DLQ; works without any config file."
)
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    help="Config file (default: $MORGUE_CONFIG, else the user config folder).",
)
@theme_option
@no_mouse_option
@click.version_option(package_name="celery-morgue", prog_name="morgue")
@click.pass_context
def cli(
    ctx: click.Context,
    profile_name: str | None,
    url: str | None,
    config: str | None,
    theme: str | None,
    no_mouse: bool,
) -> None:
    """Dead-lettered and zombie Celery tasks: with no command, the terminal UI.

    Exit status: 0 done, 1 the work could not be done (one line on stderr), 2 usage error.
    """
    session = ProfileSession(config, profile_name, url)
    ctx.obj = session
    ctx.call_on_close(session.close)
    if ctx.invoked_subcommand is None:
        open_ui(session, theme, not no_mouse)


@click.group("morgue", cls=MorgueGroup, invoke_without_command=True, context_settings=CONTEXT)
@theme_option
@no_mouse_option
@click.pass_context
def celery_morgue(ctx: click.Context, theme: str | None, no_mouse: bool) -> None:
    """celery-morgue on this app: its DLQ Redis and its broker. No command: the UI."""
    app = getattr(ctx.obj, "app", None)
    if app is None:
        from celery import current_app

        app = current_app
    session = CelerySession(app)
    ctx.obj = session
    ctx.call_on_close(session.close)
    if ctx.invoked_subcommand is None:
        open_ui(session, theme, not no_mouse)


for _subcommand in (failure_groups, regroup):
    dlq.add_command(_subcommand)
for _command in (queues, dlq, tasks, zombies, metrics, ui):
    cli.add_command(_command)
    celery_morgue.add_command(_command)
cli.add_command(profiles)
cli.add_command(demo)
cli.add_command(serve)


def main(argv: Sequence[str] | None = None) -> None:
    """The `morgue` console script."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    cli.main(args=list(argv) if argv is not None else None, prog_name="morgue")
