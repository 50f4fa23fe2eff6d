"""The HTTP and WebSocket server: the page, the token, and every tab's app process.

The page and the websocket need the token when one is set: ``/?token=`` trades it for a
same-site cookie holding this server's random session value, and sends the browser on to ``/``
so the token leaves the address bar. Without a token (and without
--i-know-this-is-unauthenticated) the server refuses Host headers other than loopback, so a web
page elsewhere cannot reach it by DNS rebinding. The websocket always refuses another site's
Origin.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from urllib.parse import urlsplit

import aiohttp_jinja2
from aiohttp import web
from textual_serve.server import Server

from celery_morgue.core.wording import one_line
from celery_morgue.tui.cli.serve_command import is_loopback
from celery_morgue.tui.serve.app_process import STEP_SECONDS, AppProcess

# Cookies are shared by every port of a host: the port in the name keeps two servers apart.
SESSION_COOKIE = "morgue_serve_session_{port}"
# What the page must not leak or keep: its address may have carried the token.
PAGE_HEADERS = {"Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def host_name(host_header: str) -> str:
    """``[::1]:8000`` -> ``::1``; ``localhost:8000`` -> ``localhost``."""
    return urlsplit(f"//{host_header}").hostname or ""


class MorgueServer(Server):
    """textual-serve's server, with its app processes and its access under our control."""

    def __init__(
        self,
        argv: Sequence[str],
        extra_env: Mapping[str, str],
        *,
        host: str,
        port: int,
        token: str | None,
        unauthenticated: bool,
        max_tabs: int,
        title: str,
        on_ready: Callable[[int], None],
    ) -> None:
        super().__init__(" ".join(argv), host=host, port=port, title=title)
        self.argv = list(argv)
        self.extra_env = dict(extra_env)
        self.token = token
        self.unauthenticated = unauthenticated
        self.max_tabs = max_tabs
        self.on_ready = on_ready
        self.apps: set[AppProcess] = set()
        self.stopping = False
        # The cookie carries this, never the token: it dies with the server.
        self.session_value = secrets.token_urlsafe(32)
        self.cookie_name = SESSION_COOKIE.format(port=port)

    # -- access -----------------------------------------------------------------------------

    def _allowed(self, request: web.Request) -> bool:
        if self.token is None:
            return self.unauthenticated or is_loopback(host_name(request.host))
        return self._offers_token(request) or _same(
            request.cookies.get(self.cookie_name, ""), self.session_value
        )

    def _offers_token(self, request: web.Request) -> bool:
        return self.token is not None and _same(request.query.get("token", ""), self.token)

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        # The static files are textual-serve's own scripts and fonts: nothing to protect.
        if not request.path.startswith("/static/") and not self._allowed(request):
            raise web.HTTPForbidden(text="forbidden: this server needs its token (?token=)\n")
        origin = request.headers.get("Origin")
        if request.path == "/ws" and origin and urlsplit(origin).netloc != request.host:
            raise web.HTTPForbidden(text="forbidden: another site's page\n")
        return await handler(request)

    async def _make_app(self) -> web.Application:
        app = await super()._make_app()
        app.middlewares.append(self._guard)
        return app

    async def handle_index(self, request: web.Request) -> web.StreamResponse:
        secure = request.secure
        if self._offers_token(request):
            # The cookie from here on; the token leaves the address bar (and its history).
            redirect = web.Response(status=303, headers={"Location": "/", **PAGE_HEADERS})
            redirect.set_cookie(
                self.cookie_name,
                self.session_value,
                httponly=True,
                samesite="Strict",
                secure=secure,
            )
            return redirect
        # URLs from the Host the browser used, so an SSH tunnel on another local port (or a
        # server bound to 0.0.0.0) hands out addresses the browser can reach.
        origin = f"{'https' if secure else 'http'}://{request.host}"
        context = {
            "font_size": 16,
            "app_websocket_url": f"{'wss' if secure else 'ws'}://{request.host}/ws",
            "config": {"static": {"url": f"{origin}/static/"}},
            "application": {"name": self.title},
        }
        response = aiohttp_jinja2.render_template("app_index.html", request, context)
        response.headers.update(PAGE_HEADERS)
        return response

    # -- app processes ----------------------------------------------------------------------

    async def handle_websocket(self, request: web.Request) -> web.WebSocketResponse:
        # Refused before the upgrade: no app process starts for these tabs.
        if self.stopping:
            raise web.HTTPServiceUnavailable(text="the server is stopping\n")
        if len(self.apps) >= self.max_tabs:
            raise web.HTTPServiceUnavailable(
                text=f"too many tabs: this server runs at most {self.max_tabs} (--max-tabs)\n"
            )
        websocket = web.WebSocketResponse(heartbeat=15)
        width = _size(request.query.get("width"), 80)
        height = _size(request.query.get("height"), 24)
        await websocket.prepare(request)
        app = AppProcess(
            self.argv,
            self.extra_env,
            self.apps.discard,
            write_bytes=websocket.send_bytes,
            write_str=websocket.send_str,
            close=websocket.close,
            download_manager=self.download_manager,
        )
        self.apps.add(app)
        try:
            await app.start(width, height)
            await self._process_messages(websocket, app)
        except (asyncio.CancelledError, ConnectionError):
            pass
        except Exception as exc:  # a malformed message from the page: that tab ends, not us
            logging.getLogger("celery_morgue.serve").warning(
                "a browser session ended on an error: %s", one_line(str(exc)) or type(exc).__name__
            )
        finally:
            await app.stop()  # the tab closed, or the server is stopping
        return websocket

    async def stop_apps(self) -> None:
        await asyncio.gather(*(app.stop() for app in list(self.apps)), return_exceptions=True)

    # -- running ----------------------------------------------------------------------------

    async def on_startup(self, app: web.Application) -> None:
        """Nothing: the command prints its one line once the port is bound."""

    def initialize_logging(self) -> None:
        # No access log: a page request's URL carries the token.
        logging.basicConfig(level=logging.WARNING, format="morgue serve: %(message)s")

    async def run(self) -> None:
        """Serve until SIGINT or SIGTERM, then end every app process and return."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        runner = web.AppRunner(
            await self._make_app(), access_log=None, shutdown_timeout=STEP_SECONDS / 2
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
            addresses = runner.addresses  # with --port 0, the port the system picked
            bound_port = int(addresses[0][1]) if addresses else self.port
            self.cookie_name = SESSION_COOKIE.format(port=bound_port)
            self.on_ready(bound_port)
            await stop.wait()
        finally:
            # No new tab while the open ones end: the port closes, and a request already on a
            # kept-alive connection meets `stopping`.
            self.stopping = True
            with contextlib.suppress(Exception):
                await site.stop()
            await self.stop_apps()
            with contextlib.suppress(Exception):
                await runner.cleanup()

    def serve(self, debug: bool = False) -> None:
        self.initialize_logging()
        asyncio.run(self.run())


def _same(offered: str, expected: str) -> bool:
    return hmac.compare_digest(offered.encode(), expected.encode())


def _size(value: str | None, default: int) -> int:
    try:
        return max(1, min(int(value or default), 1000))
    except ValueError:
        return default
