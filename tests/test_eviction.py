"""A DLQ on a Redis that evicts keys loses entries silently: the worker and `morgue queues`
say so, and a Redis that will not tell its policy is not an error. Real Redis, real worker."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
import redis

from celery_morgue.core import DeadLetterQueue
from celery_morgue.core.eviction import eviction_policy
from celery_morgue.tui.demo.processes import RedisServer
from tests.helpers import Morgue, Worker, make_entry, wait_for


@pytest.fixture
def evicting(private_redis: RedisServer) -> Iterator[redis.Redis]:
    """The module's own Redis with an evicting policy, put back afterwards."""
    client = redis.Redis.from_url(private_redis.url)
    client.config_set("maxmemory-policy", "volatile-lru")
    yield client
    client.config_set("maxmemory-policy", "noeviction")
    client.close()


def test_each_policy_is_read_and_only_evicting_ones_warn(private_redis: RedisServer) -> None:
    client = redis.Redis.from_url(private_redis.url)
    try:
        for policy, evicts in [
            ("noeviction", False),
            ("allkeys-lru", True),
            ("volatile-ttl", True),
            ("allkeys-random", True),
        ]:
            client.config_set("maxmemory-policy", policy)
            found = eviction_policy(client)
            assert (found.policy, found.evicts) == (policy, evicts)
            warning = found.warning()
            assert (warning is not None) == evicts
            if warning is not None:
                assert f"maxmemory-policy {policy}" in warning
    finally:
        client.config_set("maxmemory-policy", "noeviction")
        client.close()


def test_a_redis_that_refuses_config_get_has_an_unknown_policy(
    private_redis: RedisServer,
) -> None:
    admin = redis.Redis.from_url(private_redis.url)
    admin.acl_setuser(
        "no-config", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all", "-config"]
    )
    try:
        user = redis.Redis.from_url(f"redis://no-config:pw@127.0.0.1:{private_redis.port}/0")
        found = eviction_policy(user)
        assert found.policy is None and not found.evicts and found.warning() is None
        assert "NOPERM" in found.why_unknown or "permission" in found.why_unknown
        user.close()
    finally:
        admin.acl_deluser("no-config")
        admin.close()


def test_morgue_queues_warns_on_stderr_and_keeps_its_json(
    evicting: redis.Redis, private_redis: RedisServer, morgue: Morgue
) -> None:
    dlq = DeadLetterQueue(evicting)
    dlq.clear("celery")
    assert dlq.add(make_entry(queue="celery"))
    result = morgue("--url", private_redis.url, "queues", "--json")
    assert result.returncode == 0, result.stderr
    assert [info["queue"] for info in json.loads(result.stdout)] == ["celery"]
    [line] = result.stderr.strip().splitlines()
    assert "maxmemory-policy volatile-lru" in line
    dlq.clear("celery")


def test_a_worker_warns_once_at_start_naming_the_policy(
    evicting: redis.Redis, private_redis: RedisServer, start_worker: Callable[..., Worker]
) -> None:
    worker = start_worker(private_redis.url)
    line = wait_for(
        lambda: next(
            (text for text in worker.log().splitlines() if "maxmemory-policy" in text), None
        )
    )
    assert isinstance(line, str) and "WARNING" in line and "volatile-lru" in line
    wait_for(lambda: "reaper policy:" in worker.log())
    warnings = [text for text in worker.log().splitlines() if "maxmemory-policy" in text]
    assert len(warnings) == 1, warnings
