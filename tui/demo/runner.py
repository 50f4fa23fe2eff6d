"""Start the demo's services, hand a temporary profile to the UI, and stop everything after.

Everything started here is stopped by pid (then by process group) on quit, Ctrl+C, SIGTERM,
SIGHUP or a crash; the temporary folder goes too, and the user's config file is never read or
written.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Self

from celery import Celery

from celery_morgue.tui.demo.processes import (
    ManagedProcess,
    RedisServer,
    ServiceError,
    celery_argv,
    wait_for_workers,
)
from celery_morgue.tui.demo.tasks import DEMO_GRACE, DEMO_HARD_LIMIT
from celery_morgue.tui.profiles import Profile

WORKER_NAME = "demo@localhost"


class Demo:
    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="morgue-demo-")
        self.directory = Path(self._tmp.name)
        self.redis = RedisServer()
        self.worker: ManagedProcess | None = None
        self.producer: ManagedProcess | None = None
        self.stopping = False

    @property
    def profile(self) -> Profile:
        return Profile(
            name="demo",
            url=self.redis.url,
            refresh=1.0,
            hard_limit=DEMO_HARD_LIMIT,
            grace=DEMO_GRACE,
        )

    def pids(self) -> list[int]:
        found = []
        for process in (self.worker, self.producer):
            if process is not None and process.process is not None:
                found.append(process.pid)
        with contextlib.suppress(ServiceError):
            found.append(self.redis.pid)
        return found

    def start(self, timeout: float = 60.0) -> None:
        self.redis.start()
        env = {
            **os.environ,
            "MORGUE_DEMO_BROKER": self.redis.url,
            "MORGUE_DEMO_SPOOL": str(self.directory / "spool"),
        }
        repo_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [repo_root, env.get("PYTHONPATH")]))
        self.worker = ManagedProcess(
            celery_argv(
                "celery_morgue.tui.demo.tasks",
                "worker",
                "--beat",
                "--schedule",
                str(self.directory / "beat-schedule"),
                "-P",
                "prefork",
                "-c",
                "4",
                "-n",
                WORKER_NAME,
                "-Q",
                "celery,reports",
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
            ),
            env=env,
            cwd=self.directory,
            log_path=self.directory / "worker.log",
        )
        self.worker.start()
        self._wait_for_worker(timeout)
        self.producer = ManagedProcess(
            [sys.executable, "-m", "celery_morgue.tui.demo.producer"],
            env=env,
            cwd=self.directory,
            log_path=self.directory / "producer.log",
        )
        self.producer.start()

    def _wait_for_worker(self, timeout: float) -> None:
        assert self.worker is not None
        control = Celery("demo-control", broker=self.redis.url)
        try:
            wait_for_workers(control, [WORKER_NAME], [self.worker], timeout)
        finally:
            control.close()

    def stop(self) -> None:
        """Stop everything started; safe to call again (a signal may arrive during a stop)."""
        if self.stopping:
            return
        self.stopping = True
        # The producer first (nothing new arrives), then the worker, then Redis under it. The
        # worker gets SIGQUIT (Celery's cold shutdown): a warm one would wait for the sleepers.
        if self.producer is not None:
            self.producer.stop()
        if self.worker is not None:
            self.worker.stop(signal.SIGQUIT, timeout=10)
        self.redis.close()
        self._tmp.cleanup()

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


@contextlib.contextmanager
def _signals_end_the_demo(demo: Demo, *, ui: bool) -> Iterator[None]:
    """SIGTERM and SIGHUP (a closed SSH session) must not leave the demo's services behind.

    Headless, they unwind like Ctrl+C. Under the UI, Textual owns the main thread and does not
    unwind on them (with its terminal gone its input threads keep reading EOF), so the handler
    stops the services itself, then lets the signal end the process as it ends plain `morgue`.
    """

    def interrupt(signum: int, frame: FrameType | None) -> None:
        if demo.stopping:
            return  # the main thread is already stopping everything; let it finish
        if ui:
            demo.stop()
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_demo(*, theme: str | None = None, mouse: bool = True, headless: bool = False) -> None:
    """Run the demo until the UI quits (or, headless, until interrupted)."""
    demo = Demo()
    with _signals_end_the_demo(demo, ui=not headless), contextlib.suppress(KeyboardInterrupt):
        try:
            demo.start()
            if headless:
                print(json.dumps({"url": demo.redis.url, "pids": demo.pids()}), flush=True)
                while True:
                    time.sleep(3600)
            from celery_morgue.tui.app import run_ui

            run_ui(demo.profile, theme=theme, mouse=mouse)
        finally:
            demo.stop()
