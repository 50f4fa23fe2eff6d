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

from core import DeadLetterQueue
from core.zombies import active_tasks
from tests.conftest import REPO, wait_for
from tui.demo.tasks import DEMO_GRACE, DEMO_HARD_LIMIT
from tui.services import group_pids, pid_alive


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_demo_shows_failures_and_a_zombie_then_cleans_up(
    tmp_path: Path, stop_signal: signal.Signals
) -> None:
    config = tmp_path / "config.toml"
    env = {**os.environ, "MORGUE_CONFIG": str(config), "TMPDIR": str(tmp_path)}
    demo = subprocess.Popen(
        [sys.executable, "-m", "tui.cli", "demo", "--headless"],
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
        demo.wait(60)
    assert demo.returncode == 0, demo.stderr.read() if demo.stderr else ""
    leftover = [pid for pid in all_pids if pid_alive(pid)]
    assert not leftover, f"demo processes left behind: {leftover}"
    assert not list(tmp_path.glob("morgue-demo-*")), "temporary files left behind"
    assert not list(tmp_path.glob("morgue-redis-*")), "temporary files left behind"
    assert not config.exists(), "the demo wrote the user's config"
