"""`morgue metrics`: a Prometheus exporter for the DLQ and the cluster."""

from __future__ import annotations

import signal
import threading
from importlib.resources import files
from typing import Any

import click

from celery_morgue.tui.cli.cluster_commands import cluster_snapshot, grace_option, hard_limit_option
from celery_morgue.tui.cli.session import Failure, Session, pass_session

DEFAULT_PORT = 9808
DEFAULT_INSPECT_INTERVAL = 15.0


def alert_rules() -> str:
    return files("celery_morgue.tui.exporter").joinpath("rules.yml").read_text()


@click.command(short_help="Serve Prometheus metrics (/metrics, /healthz).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(0, 65535))
@hard_limit_option
@grace_option
@click.option(
    "--inspect-interval",
    type=click.FloatRange(min=1),
    default=DEFAULT_INSPECT_INTERVAL,
    show_default=True,
    help="Seconds between asking the workers what they run; scrapes read the latest answer.",
)
@click.option("--once", is_flag=True, help="Print one scrape to stdout and exit.")
@click.option("--rules", is_flag=True, help="Print the alert rules (Prometheus YAML) and exit.")
@pass_session
def metrics(
    session: Session,
    host: str,
    port: int,
    hard_limit: tuple[float | None, bool],
    grace: float | None,
    inspect_interval: float,
    once: bool,
    rules: bool,
) -> None:
    """Serve the DLQ and the workers as Prometheus metrics, or print one scrape (--once).

    The DLQ is read at every scrape; the workers are asked every --inspect-interval seconds
    in the background. A read-only profile (and a read-only ACL user) is enough.
    """
    if rules:
        click.echo(alert_rules(), nl=False)
        return
    # Imported here: prometheus_client is only needed by this command.
    from celery_morgue.tui.exporter.collector import MorgueCollector, RedisHealth
    from celery_morgue.tui.exporter.readings import REDIS_ERRORS, ClusterWatch, read_dlq
    from celery_morgue.tui.exporter.server import MetricsServer, health_app, scrape_text

    connection = session.connection()

    def take() -> Any:
        return cluster_snapshot(session, *hard_limit, grace)

    def check() -> str | None:
        try:
            connection.client.ping()
        except REDIS_ERRORS as exc:
            return str(exc) or type(exc).__name__
        return None

    watch = ClusterWatch(take, inspect_interval)
    collector = MorgueCollector(lambda: read_dlq(connection.dlq), watch, RedisHealth())
    if once:
        watch.refresh()
        click.echo(scrape_text(collector), nl=False)
        return
    try:
        server = MetricsServer(host, port, health_app(collector, check, connection.scrub))
    except OSError as exc:
        raise Failure(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    watch.start()
    server.start()
    click.echo(f"serving http://{host}:{server.port}/metrics (Ctrl+C ends it)", err=True)
    try:
        stop.wait()
    finally:
        server.close()
        watch.stop()
