"""A DLQ on a real three-master Redis Cluster: the prefix's hash tag keeps one namespace in one
slot, so the Lua scripts stay atomic; capture from a prefork worker, reads, clear, requeue and
retention work there, and so they do after the namespace's slot moved to another master."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from celery_morgue.core import DeadLetterQueue, install
from celery_morgue.core.options import Options
from celery_morgue.core.redis_cluster import ClusterPrefixError, cluster_prefix
from celery_morgue.core.urls import MAX_CONNECTIONS, RedisURLError, connect
from celery_morgue.tui.demo.processes import group_pids
from tests.helpers import (
    RedisClusterServers,
    make_entry,
)

PREFIX = "{dlq}:"


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisClusterServers]:
    servers = RedisClusterServers()
    try:
        servers.start()
        yield servers
    finally:
        pids = servers.pids
        servers.close()
        for pid in pids:
            assert not group_pids(pid), "a cluster node left behind"


@pytest.fixture
def cluster_dlq(redis_cluster: RedisClusterServers) -> Iterator[DeadLetterQueue]:
    client = connect(redis_cluster.url, 2.0, cluster=True)
    client.flushall(target_nodes="primaries")
    yield DeadLetterQueue(client, prefix=PREFIX)
    client.close()


def node_clients(servers: RedisClusterServers) -> list[redis.Redis]:
    return [redis.Redis(port=node.port) for node in servers.nodes]


def keys_by_node(servers: RedisClusterServers) -> dict[int, list[str]]:
    found = {}
    for node, client in zip(servers.nodes, node_clients(servers), strict=True):
        keys = sorted(key.decode() for key in client.keys("*"))
        if keys:
            found[node.port] = keys
        client.close()
    return found


def test_an_untagged_prefix_gets_a_hash_tag_and_stray_braces_are_refused() -> None:
    assert cluster_prefix("dlq:") == "{dlq}:"
    assert cluster_prefix("{dlq}:") == "{dlq}:"
    assert cluster_prefix("app:{dlq}:") == "app:{dlq}:"
    assert Options(cluster=True).prefix == "{dlq}:"
    assert Options(prefix="dlq:").prefix == "dlq:"  # no cluster, no change
    for bad in ("{dlq:", "{}dlq:", "dlq}:"):
        with pytest.raises(ClusterPrefixError, match="no hash tag"):
            cluster_prefix(bad)


def test_cluster_without_a_redis_url_is_refused_in_one_line() -> None:
    from celery import Celery

    app = Celery("no-cluster-broker", broker="redis://127.0.0.1:1/0")
    with pytest.raises(RedisURLError, match="cannot be a Redis Cluster"):
        install(app, cluster=True)


@pytest.mark.redis
def test_the_cluster_client_states_its_timeouts_retries_and_pool(
    redis_cluster: RedisClusterServers,
) -> None:
    client = connect(redis_cluster.url, 0.75, cluster=True)
    try:
        assert client.retry.get_retries() == 0
        for node in client.get_nodes():
            pool = node.redis_connection.connection_pool
            settings = pool.connection_kwargs
            assert settings["socket_timeout"] == 0.75
            assert settings["socket_connect_timeout"] == 0.75
            assert settings["socket_keepalive"] is True
            # redis-py's cluster client drops health_check_interval (not in its
            # REDIS_ALLOWED_KEYS): a node connection gone stale fails its first call, and the
            # worker spools that entry like any Redis error. Pinned so an upgrade shows here.
            assert "health_check_interval" not in settings
            assert settings["protocol"] == 2
            assert pool.max_connections == MAX_CONNECTIONS
    finally:
        client.close()


@pytest.mark.redis
def test_every_key_of_a_namespace_is_in_one_slot_and_the_scripts_run_there(
    redis_cluster: RedisClusterServers, cluster_dlq: DeadLetterQueue
) -> None:
    dlq = cluster_dlq
    for queue in ("celery", "other"):
        for index in range(30):
            dlq.add(make_entry(queue=queue, task_id=f"{queue}-{index}"))
    page = dlq.page("celery", limit=10)
    assert len(page.items) == 10
    assert dlq.groups("celery").total == 30
    assert dlq.delete("celery", page.items[0].id) == 1
    held = keys_by_node(redis_cluster)
    assert len(held) == 1, held  # one master holds the whole namespace
    (keys,) = held.values()
    assert f"{PREFIX}celery" in keys and "{dlq}@queues" in keys
    slots = {dlq.client.keyslot(key) for key in keys}
    assert len(slots) == 1
    assert dlq.clear("other") == 30
    assert dlq.size("celery") == 29
