"""Every Redis client celery-morgue makes states how a call fails: a redis-py upgrade whose
defaults moved (timeouts, retries, keepalive, pool size) changes nothing unnoticed."""

from __future__ import annotations

import redis
from redis.backoff import NoBackoff

from celery_morgue.core.urls import MAX_CONNECTIONS, connect
from celery_morgue.tui.connection import connect_profile
from celery_morgue.tui.demo.processes import RedisServer
from tests.helpers import profile_for


def assert_pinned(client: redis.Redis, timeout: float) -> None:
    settings = client.connection_pool.connection_kwargs
    assert settings["socket_timeout"] == timeout
    assert settings["socket_connect_timeout"] == timeout
    assert settings["socket_keepalive"] is True
    assert settings["health_check_interval"] == 30
    retry = settings["retry"]
    assert retry.get_retries() == 0
    assert isinstance(retry._backoff, NoBackoff)
    assert client.connection_pool.max_connections == MAX_CONNECTIONS
    assert settings["protocol"] == 2


def test_a_connection_speaks_resp2_and_takes_no_maintenance_timeouts(
    redis_server: RedisServer,
) -> None:
    client = connect(redis_server.url, 0.5)
    try:
        assert client.ping()
        connection = client.connection_pool.get_connection()
        try:
            assert connection.get_protocol() == 2
            # The timeout the worker chose is the one the socket has: no relaxed timeout.
            assert connection._sock is not None
            assert connection._sock.gettimeout() == 0.5
        finally:
            client.connection_pool.release(connection)
    finally:
        client.close()


def test_the_workers_client_states_its_timeouts_retries_and_pool() -> None:
    # Settings only: nothing connects until the first command.
    assert_pinned(connect("redis://127.0.0.1:1/0", 0.25), 0.25)
    assert_pinned(connect("redis://127.0.0.1:1/0", 2.0), 2.0)


def test_the_command_line_and_the_ui_connect_the_same_way() -> None:
    profile = profile_for("redis://127.0.0.1:1/0", timeout=1.5)
    with connect_profile(profile) as connection:
        assert_pinned(connection.client, 1.5)


def test_a_sentinel_client_and_its_sentinel_connections_state_the_same_settings() -> None:
    client = connect("sentinel://127.0.0.1:1;sentinel://127.0.0.1:2?master_name=m", 0.75)
    assert_pinned(client, 0.75)
    manager = client.connection_pool.sentinel_manager  # type: ignore[attr-defined]
    assert len(manager.sentinels) == 2
    for sentinel in manager.sentinels:
        assert_pinned(sentinel, 0.75)


def test_the_ui_connects_to_sentinels_the_same_way() -> None:
    profile = profile_for("sentinel://127.0.0.1:1", master_name="m", timeout=1.5)
    with connect_profile(profile) as connection:
        assert_pinned(connection.client, 1.5)
