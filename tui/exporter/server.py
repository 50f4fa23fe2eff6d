"""The exporter's HTTP side: ``/metrics`` in the Prometheus text format, and ``/healthz``.

prometheus_client's WSGI app does the exposition (content negotiation, gzip, ``name[]``
filters); this adds the health check and answers 404 elsewhere. A thread per request, so a
slow scrape does not hold up the health check.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, generate_latest, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from celery_morgue.tui.exporter.collector import MorgueCollector

StartResponse = Callable[..., Any]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No line per request: Prometheus scrapes every few seconds."""


def registry_for(collector: MorgueCollector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def scrape_text(collector: MorgueCollector) -> str:
    """One scrape, as ``/metrics`` would serve it (``--once``)."""
    return generate_latest(registry_for(collector)).decode()


def health_app(
    collector: MorgueCollector, check: Callable[[], str | None], scrub: Callable[[str], str]
) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    """``check`` pings Redis: None when it answered, else why not."""
    metrics = make_wsgi_app(registry_for(collector))

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            served: Iterable[bytes] = metrics(environ, start_response)
            return served
        if path == "/healthz":
            problem = check()
            collector.health.up = problem is None
            collector.health.error = problem
            status = "200 OK" if problem is None else "503 Service Unavailable"
            body = b"ok\n" if problem is None else f"Redis: {scrub(problem)}\n".encode()
            start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
            return [body]
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found: try /metrics or /healthz\n"]

    return app


class MetricsServer:
    """The HTTP server on ``host:port``, serving in a thread until :meth:`close`."""

    def __init__(self, host: str, port: int, app: Any) -> None:
        self.httpd = make_server(
            host, port, app, server_class=ThreadingWSGIServer, handler_class=_QuietHandler
        )
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, name="morgue-metrics", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)
