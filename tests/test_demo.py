"""`morgue demo --headless`: failures and a zombie appear; stopping it leaves nothing behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from celery import Celery

from celery_morgue.core import DeadLetterQueue
from celery_morgue.core.zombies import active_tasks
from celery_morgue.tui.demo.processes import group_pids, pid_alive
from celery_morgue.tui.demo.tasks import DEMO_GRACE, DEMO_HARD_LIMIT
from tests.helpers import REPO, wait_for

# The demo starts its own redis-server and worker, in processes conftest cannot watch.
pytestmark = [pytest.mark.redis, pytest.mark.worker, pytest.mark.slow]

# `morgue demo --headless` as started from a terminal, where Ctrl+C reaches it. A test run
# started in the background (`pytest &` in a script) hands SIGINT on ignored, and a process
# that starts with it ignored never sees it: the demo gets the default back first.
DEMO_WITH_CTRL_C = [
    sys.executable,
    "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.executable, [sys.executable, '-m', 'celery_morgue.tui.cli', 'demo', "
    "'--headless'])",
]


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_demo_shows_failures_and_a_zombie_then_cleans_up(
    tmp_path: Path, stop_signal: signal.Signals
) -> None:
    config = tmp_path / "config.toml"
    env = {**os.environ, "MORGUE_CONFIG": str(config), "TMPDIR": str(tmp_path)}
    demo = subprocess.Popen(
        DEMO_WITH_CTRL_C,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    started: dict[str, object] = {}
    try:
        assert demo.stdout is not None
        started = json.loads(demo.stdout.readline())
        url = str(started["url"])
        pids = [int(pid) for pid in started["pids"]]  # type: ignore[attr-defined]
        all_pids = {pid for leader in pids for pid in group_pids(leader)} | set(pids)

        dlq = DeadLetterQueue(redis.Redis.from_url(url))
        wait_for(lambda: sum(q.total for q in dlq.queues()) >= 3, timeout=60)
        control = Celery("demo-test", broker=url)
        try:
            snapshot = wait_for(
                lambda: active_tasks(control, hard_limit=DEMO_HARD_LIMIT, grace=DEMO_GRACE).zombies,
                timeout=90,
                interval=1.0,
            )
        finally:
            control.close()
        assert snapshot
    finally:
        os.kill(demo.pid, stop_signal)
        try:
            demo.wait(60)
        except subprocess.TimeoutExpired:
            demo.terminate()  # the demo stops its services on SIGTERM, leaving nothing behind
            demo.wait(60)
            pytest.fail(f"the demo did not stop on {stop_signal.name} within 60 s")
    assert demo.returncode == 0, demo.stderr.read() if demo.stderr else ""
    leftover = [pid for pid in all_pids if pid_alive(pid)]
    assert not leftover, f"demo processes left behind: {leftover}"
    assert not list(tmp_path.glob("morgue-demo-*")), "temporary files left behind"
    assert not list(tmp_path.glob("morgue-redis-*")), "temporary files left behind"
    assert not config.exists(), "the demo wrote the user's config"


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                found.add(int(entry.name))
    return found


def test_closing_the_demos_terminal_stops_everything(tmp_path: Path) -> None:
    """The SSH session drops: SIGHUP, a terminal that reads EOF, and nothing may stay behind."""
    import pty

    env = {
        **os.environ,
        "MORGUE_CONFIG": str(tmp_path / "config.toml"),
        "TMPDIR": str(tmp_path),
        "TERM": "xterm-256color",
        "COLUMNS": "100",
        "LINES": "30",
    }
    pid, terminal = pty.fork()
    if pid == 0:  # the child: the demo with the UI, on the pseudo-terminal
        os.chdir(REPO)
        os.execve(sys.executable, [sys.executable, "-m", "celery_morgue.tui.cli", "demo"], env)  # noqa: S606
    services: set[int] = set()
    try:
        # Keep reading the screen so the UI never blocks on a full terminal.
        def started() -> bool:
            try:
                os.read(terminal, 65536)
            except OSError:
                return False
            services.update(children_of(pid))
            # The worker with its pool: its forked children count among what must not stay.
            return len(services) >= 3 and any(
                "celery" in Path(f"/proc/{child}/cmdline").read_text(errors="replace")
                and len(group_pids(child)) > 1
                for child in services
                if pid_alive(child)
            )

        wait_for(started, timeout=90, interval=0.5)
        every = {p for leader in services for p in group_pids(leader)} | services
    finally:
        os.close(terminal)  # the terminal goes away: the kernel sends SIGHUP
    _, status = os.waitpid(pid, 0)
    wait_for(lambda: not [p for p in every if pid_alive(p)], timeout=30)
    assert not list(tmp_path.glob("morgue-demo-*")), "temporary files left behind"
    assert os.WIFSIGNALED(status) or os.WIFEXITED(status)
