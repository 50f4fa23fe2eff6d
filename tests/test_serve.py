"""`morgue serve`: the dashboard in a browser, its access rules and its app processes.

The server runs as the real `morgue serve` subprocess; every browser tab (a websocket here, a
headless Chromium in the last test) gets a real `morgue ui` process on the same profile.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis

from celery_morgue.core import DeadLetterQueue
from celery_morgue.tui.demo.processes import (
    ManagedProcess,
    RedisServer,
    child_pids,
    free_port,
    group_pids,
    pid_alive,
)
from tests.helpers import (
    REPO,
    Morgue,
    Worker,
    add_entries,
    child_env,
    one_error_line,
    profile_for,
    wait_for,
    write_config,
)

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = REPO / "screenshots" / "browser.png"
TOKEN = "s3cret-token-for-the-test"  # noqa: S105 - the test's own server


def app_pids(server_pid: int) -> list[int]:
    """The tabs' app processes: the server's children (each leads its own session)."""
    return child_pids(server_pid)


class Served:
    """A running `morgue serve` and every app process seen under it, all stopped by pid."""

    def __init__(self, config: Path, *args: str, log_dir: Path) -> None:
        self.port = free_port()
        self.log_path = log_dir / f"serve-{self.port}.log"
        argv = Morgue(config).argv(["--profile", "test", "serve", "--port", str(self.port)])
        self.process = ManagedProcess(
            [*argv, *args], env=child_env(config), cwd=REPO, log_path=self.log_path
        )
        self.seen: set[int] = set()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process.start()
        wait_for(lambda: "morgue serve: http" in self.log() or not self.process.running())
        assert self.process.running(), self.log()

    def log(self) -> str:
        return self.process.log_tail(20000)

    def apps(self) -> list[int]:
        pids = app_pids(self.process.pid)
        self.seen.update(pids)
        return pids

    def close(self) -> None:
        self.process.stop()
        for pid in self.seen:  # a failed test's leftovers; a passing one left none
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


@pytest.fixture
def config(tmp_path: Path, redis_server: RedisServer) -> Path:
    path = tmp_path / "config.toml"
    write_config(path, profile_for(redis_server.url), default="test")
    return path


@pytest.fixture
def serve(config: Path, tmp_path: Path) -> Iterator[Callable[..., Served]]:
    started: list[Served] = []

    def start(*args: str) -> Served:
        served = Served(config, *args, log_dir=tmp_path)
        started.append(served)
        served.start()
        return served

    yield start
    for served in started:
        served.close()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def response(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """The status and headers of one request, redirects not followed."""
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - our own server
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=10) as answer:
            return int(answer.status), answer.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers


def status(url: str, headers: dict[str, str] | None = None) -> int:
    return response(url, headers)[0]


async def first_screen(url: str, headers: dict[str, str] | None = None) -> str:
    """Open a websocket like a tab does and return the text of its first frames."""
    separator = "&" if "?" in url else "?"
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{url}{separator}width=120&height=40", headers=headers) as websocket,
    ):
        drawn = b""
        while b"connected" not in drawn:
            message = await asyncio.wait_for(websocket.receive(), 20)
            assert message.type == aiohttp.WSMsgType.BINARY, message
            drawn += message.data
        return drawn.decode(errors="replace")


async def handshake_status(url: str, headers: dict[str, str] | None = None) -> int:
    """101 for an open websocket, else the refusal's status (0: the port is closed)."""
    async with aiohttp.ClientSession() as session:
        try:
            async with session.ws_connect(url, headers=headers):
                return 101
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status
        except aiohttp.ClientConnectorError:
            return 0


async def open_tab(session: aiohttp.ClientSession, ws: str) -> aiohttp.ClientWebSocketResponse:
    """A tab whose app has drawn its first frame."""
    tab = await session.ws_connect(f"{ws}?width=100&height=30")
    await asyncio.wait_for(tab.receive(), 20)
    return tab


def listening_addresses(port: int) -> set[str]:
    """The local addresses with a listening TCP socket on ``port`` (/proc/net/tcp{,6})."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as rows:
            for row in list(rows)[1:]:
                local, state = row.split()[1], row.split()[3]
                address, _, hex_port = local.partition(":")
                if state == "0A" and int(hex_port, 16) == port:
                    found.add(address)
    return found


# -- access -------------------------------------------------------------------------------------


def test_serve_listens_on_loopback_only_by_default(serve: Callable[..., Served]) -> None:
    served = serve()
    assert listening_addresses(served.port) == {"0100007F"}  # 127.0.0.1
    assert status(f"{served.base}/") == 200
    assert status(f"http://localhost:{served.port}/") == 200
    # A page elsewhere whose name resolves to 127.0.0.1 (DNS rebinding) is refused.
    assert status(f"{served.base}/", {"Host": f"attacker.example:{served.port}"}) == 403
    ws = f"ws://127.0.0.1:{served.port}/ws"
    assert asyncio.run(handshake_status(ws, {"Origin": "http://attacker.example"})) == 403


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.1", "::"])
def test_a_host_beyond_loopback_needs_a_token_or_the_explicit_flag(
    morgue: Morgue, host: str
) -> None:
    result = morgue("--url", "redis://127.0.0.1:1/0", "serve", "--host", host)
    assert result.returncode == 2
    line = one_error_line(result)
    assert "not loopback" in line and "--token" in line


def own_address() -> str | None:
    """This machine's address on its default route, if it has one (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") else address


def test_the_explicit_flag_serves_any_host_but_not_another_sites_page(
    serve: Callable[..., Served],
) -> None:
    served = serve("--host", "0.0.0.0", "--i-know-this-is-unauthenticated")
    elsewhere = f"192.0.2.1:{served.port}"
    assert status(f"{served.base}/", {"Host": elsewhere}) == 200
    address = own_address()
    if address is not None:
        assert status(f"http://{address}:{served.port}/") == 200
    ws = f"ws://127.0.0.1:{served.port}/ws"
    attacker = {"Host": elsewhere, "Origin": "http://attacker.example"}
    assert asyncio.run(handshake_status(ws, attacker)) == 403
    own_page = {"Host": elsewhere, "Origin": f"http://{elsewhere}"}
    assert asyncio.run(handshake_status(ws, own_page)) == 101


def test_loopback_is_all_of_127_and_any_spelling_of_localhost(
    serve: Callable[..., Served],
) -> None:
    served = serve("--host", "127.0.0.2")
    page = f"http://127.0.0.2:{served.port}/"
    assert status(page) == 200
    assert status(page, {"Host": f"LocalHost.:{served.port}"}) == 200
    assert status(page, {"Host": f"localhost.attacker.example:{served.port}"}) == 403


def test_the_token_guards_the_page_and_the_websocket(serve: Callable[..., Served]) -> None:
    served = serve("--host", "0.0.0.0", "--token", TOKEN)
    ws = f"ws://127.0.0.1:{served.port}/ws"
    assert status(f"{served.base}/") == 403
    assert status(f"{served.base}/?token=wrong") == 403
    assert asyncio.run(handshake_status(ws)) == 403
    assert asyncio.run(handshake_status(f"{ws}?token=wrong")) == 403
    # The token buys a cookie and leaves the address bar; the cookie is not the token.
    code, headers = response(f"{served.base}/?token={TOKEN}", {"Host": f"192.0.2.1:{served.port}"})
    assert code == 303 and headers["Location"] == "/"
    cookie = headers["Set-Cookie"].split(";")[0]
    name, _, value = cookie.partition("=")
    assert name == f"morgue_serve_session_{served.port}" and value and TOKEN not in value
    code, headers = response(f"{served.base}/", {"Cookie": cookie})
    assert code == 200
    assert headers["Referrer-Policy"] == "no-referrer" and headers["Cache-Control"] == "no-store"
    assert status(f"{served.base}/", {"Cookie": f"{name}={TOKEN}"}) == 403
    # The page's websocket carries the cookie; a client may pass the token instead.
    assert "connected" in asyncio.run(first_screen(ws, {"Cookie": cookie}))
    assert "connected" in asyncio.run(first_screen(f"{ws}?token={TOKEN}"))
    # The address it prints says where the token goes without printing it.
    assert "/?token=... " in served.log() and TOKEN not in served.log()


def test_a_read_only_profile_stays_read_only_in_the_browser(
    tmp_path: Path, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    dlq = DeadLetterQueue(redis_client)
    add_entries(dlq, "celery", 3)
    config = tmp_path / "config.toml"
    write_config(config, profile_for(redis_server.url, readonly=True), default="test")
    served = Served(config, log_dir=tmp_path)

    async def press_clear_then_yes() -> str:
        ws = f"ws://127.0.0.1:{served.port}/ws?width=120&height=40"
        async with aiohttp.ClientSession() as session, session.ws_connect(ws) as tab:
            drawn = ""
            while "3 loaded" not in drawn:
                drawn += (await asyncio.wait_for(tab.receive(), 20)).data.decode(errors="replace")
            await tab.send_json(["stdin", "c"])
            refused = ""
            while "is disabled" not in refused:
                frame = await asyncio.wait_for(tab.receive(), 20)
                refused += frame.data.decode(errors="replace")
            await tab.send_json(["stdin", "y"])  # no dialog to confirm
            return drawn + refused

    try:
        served.start()
        drawn = asyncio.run(press_clear_then_yes())
        assert "test (read-only)" in drawn and "Read-only profile" in drawn
    finally:
        served.close()
    assert dlq.size("celery") == 3


def test_a_port_in_use_is_one_line_and_status_1(morgue: Morgue, redis_server: RedisServer) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = morgue("--url", redis_server.url, "serve", "--port", str(port))
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in one_error_line(result)


# -- app processes ------------------------------------------------------------------------------


def test_closing_the_tab_ends_its_app_process(serve: Callable[..., Served]) -> None:
    served = serve()

    async def one_tab() -> None:
        async with aiohttp.ClientSession() as session:
            tab = await open_tab(session, f"ws://127.0.0.1:{served.port}/ws")
            await asyncio.to_thread(wait_for, lambda: len(served.apps()) == 1)
            await tab.close()

    asyncio.run(one_tab())
    wait_for(lambda: not served.apps(), timeout=15)
    assert len(served.seen) == 1
    assert not [pid for pid in served.seen if pid_alive(pid) or group_pids(pid)]


def test_tabs_beyond_max_tabs_are_refused_and_start_nothing(
    serve: Callable[..., Served],
) -> None:
    served = serve("--max-tabs", "1")
    ws = f"ws://127.0.0.1:{served.port}/ws"

    async def two_tabs() -> None:
        async with aiohttp.ClientSession() as session:
            tab = await open_tab(session, ws)
            await asyncio.to_thread(wait_for, lambda: len(served.apps()) == 1)
            assert await handshake_status(ws) == 503
            assert len(served.apps()) == 1
            await tab.close()
        await asyncio.to_thread(wait_for, lambda: not served.apps(), 15)
        # Its place is free again.
        assert "connected" in await first_screen(ws)

    asyncio.run(two_tabs())
    assert len(served.seen) <= 2


def test_a_malformed_message_ends_that_tab_only(serve: Callable[..., Served]) -> None:
    served = serve()

    async def send_garbage() -> None:
        ws = f"ws://127.0.0.1:{served.port}/ws"
        async with aiohttp.ClientSession() as session, session.ws_connect(ws) as tab:
            await asyncio.wait_for(tab.receive(), 20)
            await tab.send_str('{"not": "an envelope"}')
            while not tab.closed:
                await asyncio.wait_for(tab.receive(), 20)

    asyncio.run(send_garbage())
    wait_for(lambda: not served.apps(), timeout=15)
    assert status(f"{served.base}/") == 200
    assert "Traceback" not in served.log()


def test_sigterm_ends_every_tab_within_ten_seconds(serve: Callable[..., Served]) -> None:
    served = serve()
    ws = f"ws://127.0.0.1:{served.port}/ws"

    async def two_tabs_one_hung_then_sigterm() -> None:
        async with aiohttp.ClientSession() as session, aiohttp.ClientSession() as late:
            tabs = [await open_tab(session, ws) for _ in range(2)]
            await asyncio.to_thread(wait_for, lambda: len(served.apps()) == len(tabs))
            os.kill(served.apps()[0], signal.SIGSTOP)  # an app that answers nothing
            async with late.get(f"{served.base}/") as page:  # a kept-alive connection
                await page.read()
            assert served.process.process is not None
            served.process.process.send_signal(signal.SIGTERM)
            # While the apps end, no tab opens: the port is closed, and a request on a
            # connection already open is refused.
            await asyncio.to_thread(wait_for, lambda: not listening_addresses(served.port))
            assert await handshake_status(ws) == 0
            async with late.get(f"{served.base}/ws", headers=upgrade_headers()) as refused:
                assert refused.status == 503
            assert set(served.apps()) <= served.seen
            await asyncio.to_thread(served.process.process.wait, 10)

    asyncio.run(two_tabs_one_hung_then_sigterm())
    assert len(served.seen) == 2
    left = [pid for pid in served.seen if pid_alive(pid) or group_pids(pid)]
    assert not left, f"app processes left behind: {left}"
    assert not group_pids(served.process.pid)


def upgrade_headers() -> dict[str, str]:
    return {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }


# -- a real browser -----------------------------------------------------------------------------

XTERM_TEXT = """() => {
  const rows = document.querySelector('.xterm-rows');
  if (rows && rows.innerText.trim()) return rows.innerText;
  const core = document.querySelector('#terminal');
  const term = core && (core.terminal || (window.textual && window.textual.terminal));
  if (!term) return '';
  const buffer = term.buffer.active, lines = [];
  for (let y = 0; y < buffer.length; y++) lines.push(buffer.getLine(y).translateToString(true));
  return lines.join('\\n');
}"""

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][0-9A-Za-z]|\x1b[=>]")


def browser_missing() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is not installed (apt-get install -y chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed"
    return None


def wait_in_page(page: Any, predicate: Callable[[], object], timeout: float) -> None:
    """``wait_for`` for Playwright's sync API, which only delivers events while it is called."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"the page did not show it within {timeout}s: {predicate}")
        page.wait_for_timeout(100)


class Screen:
    """What the app has drawn in the page: the text of the websocket frames the tab got."""

    def __init__(self) -> None:
        self.frames: list[str] = []

    def received(self, payload: str | bytes) -> None:
        if isinstance(payload, bytes):
            self.frames.append(ANSI.sub("", payload.decode(errors="replace")))

    def mark(self) -> int:
        return len(self.frames)

    def since(self, mark: int = 0) -> str:
        return "".join(self.frames[mark:])


@pytest.mark.redis
@pytest.mark.worker
@pytest.mark.slow
def test_the_dashboard_in_headless_chromium(
    redis_server: RedisServer,
    redis_client: redis.Redis,
    start_worker: Callable[..., Worker],
    tmp_path: Path,
) -> None:
    missing = browser_missing()
    if missing:
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    dlq = DeadLetterQueue(redis_client)
    add_entries(dlq, "celery", 5)
    add_entries(dlq, "other", 2)
    worker = start_worker(
        redis_server.url,
        queues="serve-zombies",
        env={"MORGUE_TEST_HARD_LIMIT": "2", "MORGUE_TEST_GRACE": "0"},
    )
    worker.send("sleep", 60, queue="serve-zombies")
    config = tmp_path / "config.toml"
    write_config(config, profile_for(redis_server.url, hard_limit=2, grace=0), default="test")
    served = Served(config, log_dir=tmp_path)
    screen = Screen()
    try:
        served.start()
        with (
            tempfile.TemporaryDirectory() as profile_dir,
            sync_playwright() as playwright,
        ):
            # A fresh profile folder: the closed network refuses Chromium's own background
            # connections, and the flags keep it from trying.
            browser = playwright.chromium.launch_persistent_context(
                profile_dir,
                executable_path=str(CHROMIUM),
                args=CHROMIUM_FLAGS,
                headless=True,
                viewport={"width": 1400, "height": 800},
            )
            try:
                page = browser.new_page()
                page.on("websocket", lambda ws: ws.on("framereceived", screen.received))
                page.goto(f"{served.base}/")
                wait_in_page(page, lambda: "connected" in screen.since(), timeout=30)
                wait_in_page(page, lambda: "ZOMBIE" in screen.since(), timeout=40)
                # The highlighted queue's pane has its entries: `c` has something to clear.
                wait_in_page(page, lambda: "5 loaded" in screen.since(), timeout=20)
                drawn = screen.since()
                assert "celery" in drawn and "other" in drawn
                page.locator(".xterm-helper-textarea").focus()  # xterm.js takes keys here
                mark = screen.mark()
                page.keyboard.press("c")
                # The clear confirmation, with its question.
                wait_in_page(page, lambda: "Clear queue celery?" in screen.since(mark), timeout=15)
                mark = screen.mark()
                page.keyboard.press("n")
                # Declined: the dashboard is drawn again over the dialog.
                wait_in_page(page, lambda: "Queues" in screen.since(mark), timeout=15)
                page.wait_for_timeout(300)  # the last frame painted on the canvas
                page.screenshot(path=str(tmp_path / "browser.png"))
                # Its clock, ports and task ids differ each run: README's copy is only
                # rewritten on request, so a test run leaves the checkout clean.
                if os.environ.get("MORGUE_WRITE_SCREENSHOTS"):
                    shutil.copyfile(tmp_path / "browser.png", SCREENSHOT)
            finally:
                browser.close()
        assert dlq.size("celery") == 5 and dlq.size("other") == 2
        wait_for(lambda: not served.apps(), timeout=15)  # the tab closed with the browser
    finally:
        served.close()
    assert not [pid for pid in served.seen if pid_alive(pid) or group_pids(pid)]
