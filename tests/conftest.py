"""Fixtures: a real redis-server and real prefork Celery workers, all stopped by pid."""

from __future__ import annotations

import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery

from celery_morgue.tui.demo.processes import (
    ManagedProcess,
    RedisServer,
    ServiceError,
    celery_argv,
    group_pids,
    wait_for_workers,
)

REPO = Path(__file__).resolve().parent.parent

# Keep the developer's own environment out of the tests.
for _variable in ("TEXTUAL_THEME", "NO_COLOR", "MORGUE_CONFIG"):
    os.environ.pop(_variable, None)


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
        self.control_app = Celery("tests-control", broker=broker_url)
        self.control_app.conf.update(task_serializer="json", accept_content=["json"])

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

    def stop(self) -> None:
        if self.process.process is None:
            return
        self.process.stop(signal.SIGTERM, timeout=15)
        self.control_app.close()
        leftover = group_pids(self.process.pid)
        assert not leftover, f"worker processes left behind: {leftover}"

    def send(self, task: str, *args: object, **options: object) -> str:
        result = self.control_app.send_task(f"tests.workerapp.{task}", args=list(args), **options)
        return str(result.id)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    pid = server.pid
    server.close()
    assert not group_pids(pid), "redis-server left behind"


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    # Each test starts with no DLQ keys; the workers' own kombu keys are left alone.
    for key in client.scan_iter("dlq*", count=1000):
        client.delete(key)
    yield client
    client.close()


@pytest.fixture(scope="session")
def session_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("session")


@pytest.fixture(scope="session")
def worker(redis_server: RedisServer, session_tmp: Path) -> Iterator[Worker]:
    """One prefork worker shared by the tests that only need failures captured."""
    started = Worker(redis_server.url, session_tmp)
    started.start()
    yield started
    started.stop()


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """Start extra workers for one test (another pool, another DLQ Redis); stopped after it."""
    started: list[Worker] = []

    def start(broker_url: str, **kwargs: object) -> Worker:
        new = Worker(broker_url, tmp_path, **kwargs)  # type: ignore[arg-type]
        new.start()
        started.append(new)
        return new

    yield start
    for each in started:
        each.stop()


@pytest.fixture
def python() -> str:
    return sys.executable
