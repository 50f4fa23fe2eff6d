"""Fixtures: a real redis-server and real prefork Celery workers, all stopped by pid.

Tests are marked by what they start, so a tier can be left out: ``redis`` (a redis-server),
``worker`` (a `celery worker`), ``slow``. The marks follow from the fixtures a test uses; a test
that starts a server or a worker in its body carries the mark itself, and one that does so
without it fails, so ``-m "not redis"`` never starts a redis-server.

Under pytest-xdist every xdist worker is its own process with its own session: its own
redis-server, its own shared ``worker``, and ports picked free by each.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from celery_morgue.core import DeadLetterQueue
from celery_morgue.tui.demo.processes import RedisServer, group_pids
from tests.helpers import Cluster, Morgue, Worker, make_cluster

# Keep the developer's own environment out of the tests.
for _variable in ("TEXTUAL_THEME", "NO_COLOR", "MORGUE_CONFIG"):
    os.environ.pop(_variable, None)

# Bytecode is written as Python writes it by default (__pycache__ is ignored by git). Where the
# environment sets PYTHONDONTWRITEBYTECODE, every process the suite starts (xdist workers,
# Celery workers, the command-line runs) compiles the project again and each xdist worker
# rewrites every test module's asserts again: about 4 s of CPU per worker on this 2-core
# machine. The variable is dropped here, before xdist starts its workers.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False


# -- marks ------------------------------------------------------------------------------------

# A fixture is a tier's when what it returns or yields is built on these (by its annotation):
# a RedisServer, a Worker, or a Cluster of workers.
TIER_OF_ANNOTATION = {"redis": ("RedisServer",), "worker": ("Worker", "Cluster")}
# Workers need a broker: a worker test is a redis test too.
IMPLIED = {"worker": ("redis",), "redis": ()}


def _fixture_tiers(item: pytest.Item) -> set[str]:
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return set()
    tiers: set[str] = set()
    for definitions in info.name2fixturedefs.values():
        for definition in definitions:
            annotation = str(getattr(definition.func, "__annotations__", {}).get("return", ""))
            for tier, names in TIER_OF_ANNOTATION.items():
                if any(name in annotation for name in names):
                    tiers.add(tier)
    return tiers


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tiers = _fixture_tiers(item) | {m.name for m in item.iter_markers() if m.name in IMPLIED}
        for tier in list(tiers):
            tiers.update(IMPLIED[tier])
        for tier in sorted(tiers):
            if item.get_closest_marker(tier) is None:
                item.add_marker(tier)


_current: list[pytest.Item] = []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    _current.append(item)
    try:
        return (yield)
    finally:
        _current.pop()


def _only_under(marker: str, what: str, start: Callable[..., None]) -> Callable[..., None]:
    """``start``, refused in a test not marked ``marker`` (fixtures run within a test too)."""

    @functools.wraps(start)
    def checked(self: object, *args: object, **kwargs: object) -> None:
        item = _current[-1] if _current else None
        if item is not None and item.get_closest_marker(marker) is None:
            pytest.fail(
                f"{item.nodeid} starts {what} but is not marked {marker!r}: use a fixture that "
                f"provides one, or @pytest.mark.{marker}",
                pytrace=False,
            )
        start(self, *args, **kwargs)

    return checked


def pytest_configure(config: pytest.Config) -> None:
    patch = pytest.MonkeyPatch()
    patch.setattr(RedisServer, "start", _only_under("redis", "a redis-server", RedisServer.start))
    patch.setattr(Worker, "start", _only_under("worker", "a celery worker", Worker.start))
    config.add_cleanup(patch.undo)


# -- Redis ------------------------------------------------------------------------------------


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


@pytest.fixture
def dlq(redis_client: redis.Redis) -> DeadLetterQueue:
    return DeadLetterQueue(redis_client)


@pytest.fixture(scope="module")
def private_redis() -> Iterator[RedisServer]:
    """A broker of the module's own: no other module's worker answers its pings."""
    with RedisServer() as server:
        yield server


# -- workers ----------------------------------------------------------------------------------


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
        each.ask_to_stop()
    for each in started:
        each.stop()


@pytest.fixture
def cluster(private_redis: RedisServer, start_worker: Callable[..., Worker]) -> Iterator[Cluster]:
    """Workers of this test on the module's own broker, and a control app to watch them."""
    yield from make_cluster(private_redis, start_worker)


# -- the command line -------------------------------------------------------------------------


@pytest.fixture
def morgue(tmp_path: Path) -> Morgue:
    return Morgue(tmp_path / "config.toml")
