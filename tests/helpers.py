"""What the test modules share: waits, entries, workers, the command line and the UI's drivers.

Test modules import from here and from nothing else under tests/ (tests/conftest.py holds the
fixtures; tests/test_layout.py checks that no test module imports another).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import html
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from click.testing import CliRunner
from textual.command import CommandList, CommandPalette
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Static
from textual.worker import WorkerError

from celery_morgue.core import DeadLetterQueue
from celery_morgue.core.capture import FailureCapture
from celery_morgue.core.dlq import Page, QueueInfo
from celery_morgue.core.entry import Entry, build_entry
from celery_morgue.core.options import Options
from celery_morgue.core.reaper import Reaper
from celery_morgue.core.zombies import CLEANUP_TASK, ActiveTask, ClusterSnapshot, active_tasks
from celery_morgue.tui.app import MorgueApp
from celery_morgue.tui.cli import cli
from celery_morgue.tui.config_file import Config, save_config
from celery_morgue.tui.demo.processes import (
    ManagedProcess,
    RedisServer,
    ServiceError,
    celery_argv,
    free_port,
    group_pids,
    wait_for_workers,
)
from celery_morgue.tui.dialogs import ConfirmScreen
from celery_morgue.tui.messages import ClusterRefreshed, DeadLettersRefreshed
from celery_morgue.tui.profiles import Profile
from celery_morgue.tui.screens.dashboard import DashboardScreen
from celery_morgue.tui.screens.profile_form import ProfileForm
from celery_morgue.tui.screens.profiles import ProfilesScreen
from celery_morgue.tui.widgets.dlq_pane import DLQPane

REPO = Path(__file__).resolve().parent.parent


def wait_for(
    predicate: Callable[[], object], timeout: float = 15.0, interval: float = 0.05
) -> object:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s: {predicate}")
        time.sleep(interval)


# -- entries ---------------------------------------------------------------------------------


def make_entry(
    task_id: str | None = None,
    queue: str = "celery",
    *,
    message: str | None = None,
    **overrides: object,
) -> Entry:
    """A failure of ``proj.tasks.example`` as core builds it; any field can be overridden."""
    task_id = task_id or str(uuid.uuid4())
    fields: dict[str, object] = {
        "task_id": task_id,
        "task": "proj.tasks.example",
        "queue": queue,
        "args": [1, "two"],
        "kwargs": {"three": 3},
        "exception": ValueError(f"failure of {task_id}" if message is None else message),
        "traceback": "Traceback (most recent call last):\nValueError",
        "retries": 0,
        "hostname": "w1@host",
        "delivery_info": {"exchange": "", "routing_key": queue, "priority": 0},
        "root_id": None,
        "parent_id": None,
    }
    fields.update(overrides)
    return build_entry(**fields)  # type: ignore[arg-type]


def add_entries(dlq: DeadLetterQueue, queue: str, count: int, prefix: str = "t") -> list[str]:
    """``count`` entries in ``queue``, oldest first, task ids ``{prefix}-{queue}-{n}``."""
    ids = dlq.add_many(make_entry(f"{prefix}-{queue}-{n}", queue) for n in range(count))
    assert all(ids), "an entry was not stored"
    return [str(entry_id) for entry_id in ids]


def stream_ms(entry_id: str | None) -> int:
    """The Redis clock's milliseconds when the entry ``entry_id`` was stored."""
    assert entry_id is not None, "the entry was not stored"
    return int(entry_id.split("-")[0])


def wait_for_redis_clock(client: redis.Redis, past_ms: int) -> None:
    """Wait until the Redis server's clock, which retention reads, is past ``past_ms``."""

    def now_ms() -> int:
        seconds, microseconds = client.time()
        return int(seconds) * 1000 + int(microseconds) // 1000

    wait_for(lambda: now_ms() > past_ms, timeout=10, interval=0.02)


def entries_for(dlq: DeadLetterQueue, queue: str, task_id: str) -> list[Entry]:
    return [
        entry
        for entry in dlq.iter_entries(queue)
        if isinstance(entry, Entry) and entry.task_id == task_id
    ]


def wait_for_entry(dlq: DeadLetterQueue, queue: str, task_id: str, timeout: float = 20) -> Entry:
    found = wait_for(lambda: entries_for(dlq, queue, task_id), timeout=timeout)
    assert isinstance(found, list)
    return found[0]


# -- workers ---------------------------------------------------------------------------------


class Worker:
    """A `celery worker -P <pool>` subprocess for tests/workerapp.py (or another test app:
    ``app="tests.plainworkerapp"``, one without core.install), run from ``project`` with only
    that folder on PYTHONPATH, as `celery -A` runs from a project's root."""

    def __init__(
        self,
        broker_url: str,
        log_dir: Path,
        *,
        pool: str = "prefork",
        concurrency: int = 2,
        queues: str = "celery,other",
        env: dict[str, str] | None = None,
        extra: tuple[str, ...] = (),
        app: str = "tests.workerapp",
        project: Path = REPO,
    ) -> None:
        self.name = f"w{uuid.uuid4().hex[:8]}@localhost"
        self.broker_url = broker_url
        self.log_path = log_dir / f"{self.name}.log"
        self.spool_dir = log_dir / f"spool-{self.name}"
        environment = {
            **os.environ,
            "PYTHONPATH": str(project),
            "MORGUE_TEST_BROKER": broker_url,
            "MORGUE_SPOOL_DIR": str(self.spool_dir),
            **(env or {}),
        }
        argv = celery_argv(
            app,
            "worker",
            "-P",
            pool,
            "-c",
            str(concurrency),
            "-n",
            self.name,
            "-Q",
            queues,
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            *extra,
        )
        self.process = ManagedProcess(argv, env=environment, cwd=project, log_path=self.log_path)
        self._asked_to_stop = False
        self.control_app = Celery("tests-control", broker=broker_url)
        self.control_app.conf.update(task_serializer="json", accept_content=["json"])
        if environment.get("MORGUE_TEST_MASTER_NAME"):  # a sentinel:// broker
            master = {"master_name": environment["MORGUE_TEST_MASTER_NAME"]}
            self.control_app.conf.broker_transport_options = master

    def start(self, timeout: float = 30.0) -> None:
        self.process.start()
        try:
            wait_for_workers(self.control_app, [self.name], [self.process], timeout)
        except ServiceError:
            self.stop()
            raise

    def log(self) -> str:
        return self.process.log_tail(4000)

    def child_pids(self) -> list[int]:
        return [pid for pid in group_pids(self.process.pid) if pid != self.process.pid]

    def ask_to_stop(self) -> None:
        """Start the warm shutdown without waiting for it: several workers stop side by side,
        then ``stop`` waits for each."""
        if self.process.process is not None and self.process.process.poll() is None:
            self.process.process.send_signal(signal.SIGTERM)
            self._asked_to_stop = True

    def stop(self) -> None:
        if self.process.process is None:
            return
        # Signal 0 sends nothing: a worker asked already is only waited for.
        self.process.stop(0 if self._asked_to_stop else signal.SIGTERM, timeout=15)
        self.control_app.close()
        leftover = group_pids(self.process.pid)
        assert not leftover, f"worker processes left behind: {leftover}"

    def send(self, task: str, *args: object, **options: object) -> str:
        result = self.control_app.send_task(f"tests.workerapp.{task}", args=list(args), **options)
        return str(result.id)


# -- zombies and the reaper, on a broker of a module's own -----------------------------------

LAST_REPORT = "dlq@reaper:last"
SIGNALLED = "dlq@reaper:signalled"


@dataclasses.dataclass
class Cluster:
    redis: RedisServer
    client: redis.Redis
    app: Celery
    start_worker: Callable[..., Worker]
    sent: list[tuple[Worker, str]] = dataclasses.field(default_factory=list)

    def worker(self, **options: object) -> Worker:
        return self.start_worker(self.redis.url, **options)

    def send(
        self, worker: Worker, task: str, *args: object, **options: object
    ) -> tuple[str, float]:
        """Send ``tests.workerapp.{task}``; returns its id and the wall-clock time it was sent."""
        sent_at = time.time()
        task_id = worker.send(task, *args, **options)
        self.sent.append((worker, task_id))
        return task_id, sent_at

    def listed(self, task_id: str, **options: float) -> ActiveTask | None:
        for task in active_tasks(self.app, **options).tasks:
            if task.id == task_id:
                return task
        return None

    def wait_older_than(self, task_id: str, seconds: float) -> ActiveTask:
        """Wait until the task runs and is older than ``seconds``; return how it is listed."""

        def old_enough() -> ActiveTask | None:
            task = self.listed(task_id)
            return task if task and task.age is not None and task.age > seconds else None

        found = wait_for(old_enough, timeout=30 + seconds, interval=0.2)
        assert isinstance(found, ActiveTask)
        return found

    def raw_active(self, worker: Worker) -> list[dict[str, object]]:
        replies = self.app.control.inspect(destination=[worker.name], timeout=5).active() or {}
        return list(replies.get(worker.name, []))

    def cleanup(self, **overrides: object) -> dict[str, object]:
        """Run celery_morgue.cleanup_zombie_tasks on a worker; the report it kept in Redis."""
        self.client.delete(LAST_REPORT)
        self.app.send_task(CLEANUP_TASK, kwargs=overrides)
        raw = wait_for(lambda: self.client.get(LAST_REPORT), timeout=30)
        assert isinstance(raw, bytes)
        report = json.loads(raw)
        assert isinstance(report, dict)
        return report


def make_cluster(
    private_redis: RedisServer, start_worker: Callable[..., Worker]
) -> Iterator[Cluster]:
    """The ``cluster`` fixture's body: a control app on the module's own broker."""
    client = redis.Redis.from_url(private_redis.url)
    client.flushall()  # no worker of an earlier test is left: its keys can go
    app = Celery("monitor", broker=private_redis.url)
    app.conf.update(task_serializer="json", accept_content=["json"])
    made = Cluster(private_redis, client, app, start_worker)
    yield made
    # Sleeping tasks would hold each worker's warm shutdown: end them first, and wait for the
    # worker's reply (sent once it has signalled the task), or the SIGTERM that stops it can
    # come first, and the revoke is then never read.
    for worker, task_id in made.sent:
        app.control.revoke(
            task_id,
            destination=[worker.name],
            terminate=True,
            signal="SIGKILL",
            reply=True,
            timeout=2,
        )
    app.close()
    client.close()


def reports(report: dict[str, object], signal: str) -> dict[str, object]:
    signals = report["signals"]
    assert isinstance(signals, dict)
    result = signals[signal]
    assert isinstance(result, dict)
    return result


def zombie_ids(report: dict[str, object]) -> list[str]:
    zombies = report["zombies"]
    assert isinstance(zombies, list)
    return [zombie["id"] for zombie in zombies]


def by_id(snapshot: ClusterSnapshot) -> dict[str, ActiveTask]:
    return {task.id: task for task in snapshot.tasks}


def local_reaper(broker_url: str, dlq_url: str, spool_dir: Path, **options: Any) -> Reaper:
    """A reaper run in this process, as a worker's cleanup task runs one (same code)."""
    app = Celery("reaper-here", broker=broker_url)
    app.conf.update(task_serializer="json", accept_content=["json"])
    parsed = Options(spool_dir=spool_dir, reap_interval=None, **options)
    return Reaper(app, parsed, FailureCapture(app, dlq_url, parsed))


def on_db(url: str, db: int) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{db}"


# -- the command line --------------------------------------------------------------------------


def child_env(config: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a `morgue` subprocess: this config, none of the developer's."""
    env = {
        key: value
        for key, value in os.environ.items()
        # The developer's terminal width and config must not leak in.
        if key not in ("COLUMNS", "LINES", "MORGUE_CONFIG", "MORGUE_PROFILE")
    }
    env.update(
        {
            "MORGUE_CONFIG": str(config),
            "XDG_CONFIG_HOME": str(config.parent / "xdg"),
            "PYTHONPATH": str(REPO),
        }
    )
    env.update(extra or {})
    return env


class Morgue:
    """Runs `morgue ...` in this process with click's CliRunner, the config in a temporary
    folder, stdin not a terminal and stdout 80 columns wide, as under a pipe; keeps a
    transcript. ``argv`` is the same command for a subprocess (the real entry point)."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.transcript: list[str] = []

    def argv(self, args: Sequence[str]) -> list[str]:
        return [sys.executable, "-m", "celery_morgue.tui.cli", *args]

    def __call__(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """The exit status and output, in the record a subprocess run gives."""
        environment: dict[str, str | None] = {
            "MORGUE_CONFIG": str(self.config),
            "XDG_CONFIG_HOME": str(self.config.parent / "xdg"),
            "MORGUE_PROFILE": None,
            "COLUMNS": "80",
            "LINES": None,
            **(env or {}),
        }
        result = CliRunner().invoke(
            cli, list(args), env=environment, prog_name="morgue", catch_exceptions=False
        )
        self.transcript += [result.stdout, result.stderr]
        return subprocess.CompletedProcess(
            ["morgue", *args], result.exit_code, result.stdout, result.stderr
        )

    def json(self, *args: str, env: dict[str, str] | None = None) -> Any:
        result = self(*args, "--json", env=env)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


def celery_morgue(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`celery -A tests.workerapp morgue ARGS` in a subprocess, as a project runs it."""
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tests.workerapp", "morgue", *args],
        env=env,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {result.stderr!r}"
    assert "Traceback" not in result.stderr
    return lines[0]


# -- the UI, against a real Redis ----------------------------------------------------------------

SIZE = (80, 24)


def profile_for(url: str, **overrides: Any) -> Profile:
    settings: dict[str, Any] = {
        "name": "test",
        "url": url,
        "refresh": 0.5,
        "inspect_timeout": 0.5,
    }
    settings.update(overrides)
    return Profile(**settings)


def run(scenario: Coroutine[Any, Any, None]) -> None:
    """No pytest asyncio plugin here: each UI test runs its own event loop."""
    asyncio.run(scenario)


def with_app(
    profile: Profile,
    scenario: Callable[[Pilot[None], MorgueApp], Awaitable[None]],
    size: tuple[int, int] = SIZE,
    **options: Any,
) -> None:
    async def main() -> None:
        app = MorgueApp(profile, **options)
        async with app.run_test(size=size) as pilot:
            await scenario(pilot, app)
            assert app.is_running, "the app stopped on its own"

    run(main())


async def until(
    pilot: Pilot[None], predicate: Callable[[], object], timeout: float = 20.0, what: str = ""
) -> None:
    """Let the app run until ``predicate()`` is true; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout}s: {what or predicate}")
        await pilot.pause(0.05)


async def wait_redis(pilot: Pilot[None], read: Callable[[], Any], timeout: float = 20) -> Any:
    """``until`` for a value read from Redis: returns the first truthy one."""
    found: list[Any] = []

    def check() -> bool:
        value = read()
        if value:
            found.append(value)
        return bool(value)

    await until(pilot, check, timeout=timeout)
    return found[0]


async def workers_done(pilot: Pilot[None], app: MorgueApp) -> None:
    """Wait for every Textual worker started so far (polls, actions), however it ends: what a
    wrongly started action would do to Redis is then done, and a test can look."""
    await pilot.pause()
    for worker in list(app.workers):
        with contextlib.suppress(WorkerError):  # failed or cancelled: it ended all the same
            await app.workers.wait_for_complete([worker])
    await pilot.pause()


async def palette_offers(pilot: Pilot[None], app: MorgueApp, text: str) -> None:
    """Open the command palette, type ``text``, and wait until a match for it is highlighted."""
    await pilot.press("ctrl+p")
    await until(pilot, lambda: isinstance(app.screen, CommandPalette), what="the command palette")
    await pilot.press(*text)

    def highlighted_match() -> bool:
        commands = app.screen.query_one(CommandList)
        if commands.highlighted is None:
            return False
        prompt = commands.get_option_at_index(commands.highlighted).prompt
        return text.lower() in str(prompt).lower()

    await until(pilot, highlighted_match, what=f"{text!r} offered by the palette")


async def accept_if_asked(pilot: Pilot[None], app: MorgueApp) -> None:
    """Confirm a dialog if the key opened one, as a user would; a refused key opens none."""
    await pilot.pause()  # a dialog is pushed while the key is handled
    if isinstance(app.screen, ConfirmScreen):
        await pilot.press("y")
        await until(pilot, lambda: isinstance(app.screen, DashboardScreen), what="dialog closed")


def pane(app: MorgueApp, queue: str) -> DLQPane | None:
    return app.dashboard.pane(queue)


def loaded(app: MorgueApp, queue: str) -> bool:
    found = pane(app, queue)
    return found is not None and found.loaded_once and found.table.row_count > 0


def notices(app: MorgueApp) -> list[str]:
    return [notification.message for notification in app._notifications]


def notice_ids(app: MorgueApp) -> set[str]:
    """The notifications shown now, for ``notices_since``: they expire, so a count of them can
    stay the same while a new one arrives."""
    return {notification.identity for notification in app._notifications}


def notices_since(app: MorgueApp, seen: set[str]) -> list[str]:
    return [n.message for n in app._notifications if n.identity not in seen]


_SVG_TEXT = re.compile(
    r'<text[^>]* x="(?P<x>[0-9.]+)"[^>]*clip-path="url\(#[^)]*-line-(?P<line>\d+)\)">'
    r"(?P<text>[^<]*)</text>"
)
# Rich's SVG export puts each cell 12.2 units to the right of the one before.
_CELL_WIDTH = 12.2


def screen_text(app: MorgueApp) -> str:
    """What the terminal shows, as lines of text, read back from Textual's SVG export."""
    lines: dict[int, dict[int, str]] = {}
    for match in _SVG_TEXT.finditer(app.export_screenshot()):
        column = round(float(match["x"]) / _CELL_WIDTH)
        text = html.unescape(match["text"]).replace("\xa0", " ")
        row = lines.setdefault(int(match["line"]), {})
        for offset, char in enumerate(text):
            row[column + offset] = char
    return "\n".join(
        "".join(row.get(i, " ") for i in range(max(row) + 1)) if row else ""
        for _, row in sorted(lines.items())
    )


async def open_queue(pilot: Pilot[None], app: MorgueApp, queue: str) -> DLQPane:
    """Highlight ``queue`` in the queue list and wait for its pane to fill."""
    queue_list = app.dashboard.queue_list
    await until(pilot, lambda: queue in queue_list.names, what=f"queue {queue} listed")
    queue_list.highlighted = queue_list.names.index(queue)
    await until(pilot, lambda: loaded(app, queue), what=f"pane {queue} loaded")
    found = pane(app, queue)
    assert found is not None
    found.table.focus()
    await pilot.pause()
    return found


async def select_entry(pilot: Pilot[None], found: DLQPane, entry_id: str) -> None:
    await until(pilot, lambda: entry_id in found.entries, what=f"entry {entry_id} loaded")
    found.table.move_cursor(row=found.table.get_row_index(entry_id))
    await pilot.pause()
    assert found.selected_entry is not None and found.selected_entry.id == entry_id


# -- the profiles screen, on a config file of the test's own -----------------------------


def write_config(path: Path, *profiles: Profile, default: str | None = None) -> bytes:
    save_config(Config(path=path, profiles={p.name: p for p in profiles}, default=default))
    return path.read_bytes()


def read_config(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def with_profiles_app(
    profile: Profile,
    config_path: Path,
    scenario: Callable[[Pilot[None], MorgueApp], Awaitable[None]],
    size: tuple[int, int] = SIZE,
    **options: Any,
) -> None:
    async def main() -> None:
        app = MorgueApp(profile, config_path=config_path, **options)
        async with app.run_test(size=size) as pilot:
            await scenario(pilot, app)
            assert app.is_running, "the app stopped on its own"

    run(main())


def profiles_screen(app: MorgueApp) -> ProfilesScreen:
    screen = app.screen
    assert isinstance(screen, ProfilesScreen), f"on {type(screen).__name__}"
    return screen


def form(app: MorgueApp) -> ProfileForm:
    screen = app.screen
    assert isinstance(screen, ProfileForm), f"on {type(screen).__name__}"
    return screen


def listed(app: MorgueApp) -> dict[str, str]:
    """Profile name -> its marks column ("*" default, "▶" on the dashboard)."""
    table: DataTable[Any] = profiles_screen(app).table
    return {
        str(table.get_row_at(index)[1]): str(table.get_row_at(index)[0]).strip()
        for index in range(table.row_count)
    }


async def open_profiles(pilot: Pilot[None], app: MorgueApp) -> ProfilesScreen:
    await until(pilot, lambda: isinstance(app.screen, DashboardScreen), what="dashboard")
    await pilot.press("p")
    await until(pilot, lambda: isinstance(app.screen, ProfilesScreen), what="profiles screen")
    await pilot.pause()
    return profiles_screen(app)


async def select(pilot: Pilot[None], app: MorgueApp, name: str) -> None:
    table = profiles_screen(app).table
    table.move_cursor(row=table.get_row_index(name))
    await pilot.pause()
    assert profiles_screen(app).selected_name == name


async def open_form(pilot: Pilot[None], app: MorgueApp, key: str) -> ProfileForm:
    await pilot.press(key)
    await until(pilot, lambda: isinstance(app.screen, ProfileForm), what="profile form")
    await pilot.pause()
    return form(app)


async def fill(pilot: Pilot[None], app: MorgueApp, **values: str) -> None:
    for field, value in values.items():
        form(app).query_one(f"#{field}", Input).value = value
    await pilot.pause()


async def type_into(pilot: Pilot[None], app: MorgueApp, field: str, text: str) -> None:
    """Type key by key, as a user does."""
    box = form(app).query_one(f"#{field}", Input)
    box.focus()
    box.value = ""
    await pilot.pause()
    await pilot.press(*text)


def field_error(app: MorgueApp, field: str) -> str:
    error = form(app).query_one(f"#{field}-error", Static)
    return str(error.content) if error.display else ""


async def save(pilot: Pilot[None], app: MorgueApp) -> None:
    await pilot.press("ctrl+s")
    await pilot.pause()


async def saved(pilot: Pilot[None], app: MorgueApp) -> None:
    await save(pilot, app)
    await until(pilot, lambda: isinstance(app.screen, ProfilesScreen), what="form closed")


# -- the UI fed as messages: polling off, a frozen clock, no Redis -------------------------------

NOW = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC
# Nothing listens here: with polling off the app never connects.
PROFILE = Profile(name="prod", url="redis://:s3cret@redis.internal:6379/0", grace=30.0)


def frozen_clock() -> float:
    return NOW


def make_app(**options: object) -> MorgueApp:
    """The app with polling off and the clock at NOW: it shows what it is fed, nothing else."""
    return MorgueApp(PROFILE, clock=frozen_clock, poll=False, **options)  # type: ignore[arg-type]


def iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat()


def shop_entry(
    n: int, ago: float, task: str, exception: str, message: str, **extra: object
) -> Entry:
    """Entry ``n`` of the fixed data: ``task`` failed ``ago`` seconds before NOW."""
    failed = NOW - ago
    fields: dict[str, object] = {
        "id": f"{int(failed * 1000)}-0",
        "task_id": f"{n:08x}-1111-4222-8333-444455556666",
        "task": task,
        "queue": "celery",
        "args": [n, "order"],
        "kwargs": {"retry": False},
        "exception": exception,
        "message": message,
        "traceback": (
            "Traceback (most recent call last):\n"
            '  File "/srv/app/tasks.py", line 42, in charge\n'
            "    gateway.charge(order)\n"
            f"{exception}: {message}"
        ),
        "retries": 3,
        "hostname": "celery@worker-1",
        "failed_at": iso(failed),
    }
    fields.update(extra)
    return Entry(**fields)  # type: ignore[arg-type]


ENTRIES = [
    shop_entry(1, 4, "shop.tasks.charge_card", "PaymentDeclined", "card declined for order 1000"),
    shop_entry(2, 65, "shop.tasks.parse_invoice", "ValueError", "[red]unexpected[/red] token"),
    shop_entry(3, 3_700, "shop.tasks.sync_inventory", "ConnectionError", "inventory API timed out"),
    shop_entry(4, 90_000, "shop.tasks.send_receipt", "SMTPError", "421 try again later"),
]

TASKS = [
    ActiveTask(
        id="aaaaaaaa-0000-4000-8000-000000000001",
        name="shop.tasks.generate_report",
        worker="celery@worker-1",
        pid=4242,
        started_at=dt.datetime.fromtimestamp(NOW - 400, dt.UTC),
        age=400.0,
        hard_limit=300.0,
        zombie=True,
        redelivered=False,
        args="(7,)",
        kwargs="{}",
    ),
    ActiveTask(
        id="bbbbbbbb-0000-4000-8000-000000000002",
        name="shop.tasks.rebuild_index",
        worker="celery@worker-2",
        pid=4343,
        started_at=dt.datetime.fromtimestamp(NOW - 250, dt.UTC),
        age=250.0,
        hard_limit=300.0,
        zombie=False,
        redelivered=False,
        args="()",
        kwargs="{}",
    ),
    ActiveTask(
        id="cccccccc-0000-4000-8000-000000000003",
        name="shop.tasks.send_receipt",
        worker="celery@worker-1",
        pid=4244,
        started_at=dt.datetime.fromtimestamp(NOW - 12, dt.UTC),
        age=12.0,
        hard_limit=60.0,
        zombie=False,
        redelivered=True,
        args="(1000,)",
        kwargs="{}",
    ),
]


def dead_letters(
    items: Sequence[Entry] = ENTRIES, queues: Sequence[QueueInfo] | None = None
) -> DeadLettersRefreshed:
    """What a DLQ poll brings: the queues, and the head of the first one (``celery``)."""
    if queues is None:
        queues = [
            QueueInfo("celery", 1204, dt.datetime.fromtimestamp(NOW - 90_000, dt.UTC), None),
            QueueInfo("emails", 3, None, None),
            QueueInfo("reports", 12_345_678, None, None),
        ]
    head = Page(queue="celery", total=queues[0].total, items=list(items), next=None)
    return DeadLettersRefreshed(list(queues), head, taken_at=NOW)


def cluster_refreshed() -> ClusterRefreshed:
    """What a cluster poll brings: TASKS on two workers, a third one unreachable."""
    snapshot = ClusterSnapshot(
        tasks=TASKS,
        workers=["celery@worker-1", "celery@worker-2"],
        unreachable=["celery@worker-3"],
        taken_at=dt.datetime.fromtimestamp(NOW, dt.UTC),
    )
    return ClusterRefreshed(snapshot)


async def feed_dashboard(pilot: Pilot[None], polled: DeadLettersRefreshed | None = None) -> None:
    """Post one DLQ poll's (``polled``, else :func:`dead_letters`) and one cluster poll's
    results, as the poll workers would."""
    app = pilot.app
    assert isinstance(app, MorgueApp)
    app.dashboard.post_message(polled or dead_letters())
    app.dashboard.post_message(cluster_refreshed())
    await pilot.pause()
    await pilot.pause()


def with_fed_app(
    scenario: Callable[[Pilot[None], MorgueApp], Awaitable[None]],
    size: tuple[int, int] = SIZE,
    feed: Callable[[Pilot[None]], Awaitable[None]] | None = feed_dashboard,
    **options: Any,
) -> None:
    """Run ``scenario`` on ``make_app(**options)`` once ``feed`` has fed it (None: the
    scenario feeds it): the UI's own behaviour, with no Redis behind it."""

    async def main() -> None:
        app = make_app(**options)
        async with app.run_test(size=size) as pilot:
            if feed is not None:
                await feed(pilot)
            await scenario(pilot, app)
            assert app.is_running, "the app stopped on its own"

    run(main())


# -- TLS: a CA, certificates, and a redis-server speaking TLS only --------------------------------

TLS_REDIS_CANDIDATES = ("/usr/bin/redis-server", "redis-server")


@dataclasses.dataclass(frozen=True)
class Certificates:
    """A CA and the server and client certificates it signed, as PEM files in ``directory``."""

    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def server_cert(self) -> Path:
        return self.directory / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.directory / "server.key"

    @property
    def client_cert(self) -> Path:
        return self.directory / "client.crt"

    @property
    def client_key(self) -> Path:
        return self.directory / "client.key"


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_certificates(directory: Path, ca_name: str = "morgue test CA") -> Certificates:
    """A fresh CA, a server certificate for 127.0.0.1 and localhost, and a client certificate,
    made with the ``openssl`` command (EC P-256 keys, valid for a day)."""
    directory.mkdir(parents=True, exist_ok=True)
    certificates = Certificates(directory)
    ca_key = directory / "ca.key"
    key_options = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    _openssl(
        "req",
        "-x509",
        *key_options,
        "-keyout",
        str(ca_key),
        "-out",
        str(certificates.ca),
        "-days",
        "1",
        "-subj",
        f"/CN={ca_name}",
    )
    extensions = directory / "server.ext"
    extensions.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for cert, key, subject, extra in (
        (
            certificates.server_cert,
            certificates.server_key,
            "127.0.0.1",
            ("-extfile", str(extensions)),
        ),
        (certificates.client_cert, certificates.client_key, "morgue client", ()),
    ):
        request = directory / f"{cert.stem}.csr"
        _openssl(
            "req",
            *key_options,
            "-keyout",
            str(key),
            "-out",
            str(request),
            "-subj",
            f"/CN={subject}",
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            str(request),
            "-CA",
            str(certificates.ca),
            "-CAkey",
            str(ca_key),
            "-CAcreateserial",
            "-out",
            str(cert),
            "-days",
            "1",
            *extra,
        )
    return certificates


class TLSRedisServer:
    """A redis-server on a free loopback port speaking TLS only (``--port 0``), certificates
    from ``certificates``; ``auth_clients`` is ``--tls-auth-clients`` (no, optional, yes)."""

    def __init__(
        self,
        binary: str,
        certificates: Certificates,
        *,
        auth_clients: str = "no",
        plain_port: bool = False,
    ) -> None:
        self.binary = binary
        self.certificates = certificates
        self.auth_clients = auth_clients
        self.port = free_port()
        # A plain TCP port beside the TLS one, for comparing the two on one server.
        self.plain_port = free_port() if plain_port else 0
        self.directory = certificates.directory / f"redis-{self.port}"
        self.directory.mkdir()
        self.process: ManagedProcess | None = None

    def url(self, **query: str) -> str:
        """A rediss:// URL trusting this server's CA, with extra query parameters."""
        parameters = {"ssl_cert_reqs": "required", "ssl_ca_certs": str(self.certificates.ca)}
        parameters.update(query)
        text = "&".join(f"{name}={value}" for name, value in parameters.items())
        return f"rediss://127.0.0.1:{self.port}/0?{text}"

    def client_url(self, **query: str) -> str:
        """``url`` presenting the client certificate, for ``auth_clients="yes"``."""
        return self.url(
            ssl_certfile=str(self.certificates.client_cert),
            ssl_keyfile=str(self.certificates.client_key),
            **query,
        )

    def start(self, timeout: float = 10.0) -> None:
        certificates = self.certificates
        argv = [
            *(
                self.binary,
                "--port",
                str(self.plain_port),
                "--tls-port",
                str(self.port),
                "--bind",
                "127.0.0.1",
            ),
            *("--tls-cert-file", str(certificates.server_cert)),
            *("--tls-key-file", str(certificates.server_key)),
            *("--tls-ca-cert-file", str(certificates.ca)),
            *("--tls-auth-clients", self.auth_clients),
            *("--dir", str(self.directory), "--save", "", "--appendonly", "no"),
            *("--daemonize", "no", "--loglevel", "warning"),
            *("--logfile", str(self.directory / "redis.log")),
        ]
        self.process = ManagedProcess(argv)
        self.process.start()
        client = redis.Redis.from_url(self.client_url(), socket_timeout=1)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if not self.process.running():
                    log = self.directory / "redis.log"
                    tail = log.read_text(errors="replace")[-500:] if log.exists() else ""
                    raise ServiceError(f"redis-server exited at start: {tail}")
                with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                    if client.ping():
                        return
                time.sleep(0.05)
        finally:
            client.close()
        self.stop()
        raise ServiceError(f"TLS redis-server did not answer within {timeout}s")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


def tls_redis_binary(directory: Path) -> str:
    """A redis-server built with TLS, found by starting one, else ``pytest.skip`` with why."""
    import shutil

    tried: list[str] = []
    for candidate in TLS_REDIS_CANDIDATES:
        binary = shutil.which(candidate)
        if binary is None or binary in tried:
            continue
        tried.append(binary)
        server = TLSRedisServer(binary, make_certificates(directory / f"probe{len(tried)}"))
        try:
            server.start()
        except ServiceError:
            continue
        finally:
            server.stop()
        return binary
    pytest.skip(
        f"no redis-server with TLS support (tried {', '.join(tried) or 'none on PATH'}; "
        "install Debian's redis-server)"
    )


def free_cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free and valid too."""
    while True:
        port = free_port()
        if port <= 55535 and port_free(port + 10000):
            return port


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class RedisClusterServers:
    """A real three-master Redis Cluster: three RedisServer nodes joined by ``redis-cli``."""

    def __init__(self, masters: int = 3) -> None:
        node_args = ["--cluster-enabled", "yes", "--cluster-node-timeout", "5000"]
        self.nodes = [
            RedisServer(port=free_cluster_port(), extra_args=node_args) for _ in range(masters)
        ]
        self.cli = str(Path(self.nodes[0].binary).with_name("redis-cli"))

    @property
    def url(self) -> str:
        return self.nodes[0].url

    @property
    def pids(self) -> list[int]:
        return [node.pid for node in self.nodes]

    def redis_cli(self, *args: str) -> str:
        done = subprocess.run(
            [self.cli, *args], capture_output=True, text=True, timeout=60, check=True
        )
        return done.stdout

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        self.redis_cli("--cluster", "create", *addresses, "--cluster-yes")
        wait_for(self._all_ok, timeout=30)

    def _all_ok(self) -> bool:
        for node in self.nodes:
            info = self.redis_cli("-p", str(node.port), "cluster", "info")
            if "cluster_state:ok" not in info:
                return False
        return True

    def close(self) -> None:
        for node in self.nodes:
            node.close()
