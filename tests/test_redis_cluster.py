"""A DLQ on a real three-master Redis Cluster: the prefix's hash tag keeps one namespace in one
slot, so the Lua scripts stay atomic; capture from a prefork worker, reads, clear, requeue and
retention work there, and so they do after the namespace's slot moved to another master."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from celery_morgue.core import DeadLetterQueue, install
from celery_morgue.core.options import Options
from celery_morgue.core.redis_cluster import ClusterPrefixError, cluster_prefix
from celery_morgue.core.urls import MAX_CONNECTIONS, RedisURLError, connect
from celery_morgue.tui.demo.processes import RedisServer, group_pids
from tests.helpers import (
    Morgue,
    RedisClusterServers,
    Worker,
    make_entry,
    one_error_line,
    wait_for,
    wait_for_entry,
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


def write_cluster_profile(morgue: Morgue, servers: RedisClusterServers, broker: str) -> None:
    morgue.config.write_text(
        'default = "c"\n[profiles.c]\n'
        f'url = "{servers.url}"\nbroker_url = "{broker}"\ncluster = true\nprefix = "dlq:"\n'
    )


@pytest.mark.redis
@pytest.mark.worker
@pytest.mark.slow
def test_a_prefork_worker_captures_into_the_cluster_and_morgue_lists_requeues_and_clears(
    redis_cluster: RedisClusterServers,
    cluster_dlq: DeadLetterQueue,
    private_redis: RedisServer,
    tmp_path: Path,
    morgue: Morgue,
) -> None:
    broker = redis.Redis.from_url(private_redis.url)
    env = {"MORGUE_TEST_DLQ": redis_cluster.url, "MORGUE_TEST_DLQ_CLUSTER": "1"}
    worker = Worker(private_redis.url, tmp_path, env=env, queues="other")
    worker.start()
    try:
        flag = "flag:cluster-requeue"
        failed = [worker.send("fails_until_flag", flag, queue="other") for _ in range(3)]
        for task_id in failed:
            wait_for_entry(cluster_dlq, "other", task_id)
        write_cluster_profile(morgue, redis_cluster, private_redis.url)

        listed = morgue.json("dlq", "list", "other")
        assert sorted(item["task_id"] for item in listed["items"]) == sorted(failed)

        broker.set(flag, 1)
        result = morgue("dlq", "requeue", "other", "--all", "--yes")
        assert result.returncode == 0, result.stderr
        done = wait_for(lambda: broker.get(f"done:{flag}"), timeout=20)
        assert json.loads(done)["requeued_from"] in failed  # type: ignore[arg-type]
        wait_for(lambda: cluster_dlq.size("other") == 0)

        broker.delete(flag)
        again = worker.send("fails_until_flag", "flag:never-set", queue="other")
        wait_for_entry(cluster_dlq, "other", again)
        result = morgue("dlq", "clear", "other", "--yes")
        assert result.returncode == 0, result.stderr
        assert cluster_dlq.size("other") == 0
    finally:
        worker.ask_to_stop()
        worker.stop()
        broker.close()
    assert len(keys_by_node(redis_cluster)) == 1


def test_a_cluster_profile_without_a_broker_url_says_so_in_one_line(
    morgue: Morgue,
) -> None:
    morgue.config.write_text(
        'default = "c"\n[profiles.c]\nurl = "redis://127.0.0.1:1/0"\ncluster = true\n'
    )
    line = one_error_line(morgue("dlq", "list", "other"))
    assert "broker_url" in line and "Redis Cluster" in line


@pytest.mark.redis
def test_retention_and_the_cap_apply_on_the_cluster(
    redis_cluster: RedisClusterServers,
) -> None:
    client = connect(redis_cluster.url, 2.0, cluster=True)
    try:
        client.flushall(target_nodes="primaries")
        dlq = DeadLetterQueue(client, prefix=PREFIX, max_entries=5)
        for index in range(8):
            dlq.add(make_entry(task_id=f"capped-{index}"))
        assert dlq.size("celery") == 5
        assert dlq.page("celery").items[0].task_id == "capped-7"
    finally:
        client.close()


def move_slot(servers: RedisClusterServers, key: str) -> tuple[int, int]:
    """Move the slot of ``key`` to another master by hand, keys and all: (from, to) ports."""
    clients = {node.port: redis.Redis(port=node.port) for node in servers.nodes}
    try:
        any_client = next(iter(clients.values()))
        slot = int(any_client.execute_command("CLUSTER", "KEYSLOT", key))
        ids = {port: c.execute_command("CLUSTER", "MYID").decode() for port, c in clients.items()}
        owner = next(
            port
            for port, c in clients.items()
            if int(c.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot)) > 0
        )
        target = next(port for port in clients if port != owner)
        clients[target].execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[owner])
        clients[owner].execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target])
        while keys := clients[owner].execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            clients[owner].execute_command(
                "MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys
            )
        for c in clients.values():
            c.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[target])
        return owner, target
    finally:
        for c in clients.values():
            c.close()


@pytest.mark.redis
@pytest.mark.slow
def test_after_the_namespaces_slot_moves_every_entry_is_there_and_writes_and_reads_go_on(
    redis_cluster: RedisClusterServers,
) -> None:
    client = connect(redis_cluster.url, 2.0, cluster=True)
    try:
        client.flushall(target_nodes="primaries")
        dlq = DeadLetterQueue(client, prefix=PREFIX)
        stored = {dlq.add(make_entry(task_id=f"before-{index}")) for index in range(50)}
        owner, target = move_slot(redis_cluster, "dlq")
        # The client still maps the slot to the old owner: the next calls meet MOVED.
        assert dlq.size("celery") == 50
        dlq.add(make_entry(task_id="after-move"))
        ids = {item.id for item in dlq.page("celery", limit=100).items}
        assert stored < ids and len(ids) == 51
        held = keys_by_node(redis_cluster)
        assert list(held) == [target], (owner, held)
        assert dlq.clear("celery") == 51
    finally:
        client.close()


@pytest.mark.redis
@pytest.mark.slow
def test_a_requeue_whose_slot_moves_mid_run_sends_every_entry_once(
    redis_cluster: RedisClusterServers, private_redis: RedisServer
) -> None:
    from celery import Celery

    from celery_morgue.core.redrive import Redrive, RedriveProgress

    client = connect(redis_cluster.url, 2.0, cluster=True)
    broker = redis.Redis.from_url(private_redis.url)
    publisher = Celery("cluster-redriver", broker=private_redis.url)
    publisher.conf.update(task_serializer="json", accept_content=["json"])
    try:
        client.flushall(target_nodes="primaries")
        broker.delete("moving")
        dlq = DeadLetterQueue(client, prefix=PREFIX)
        for index in range(100):
            dlq.add(make_entry(queue="moving", task_id=f"moving-{index}"))
        moved: list[tuple[int, int]] = []

        def move_once(progress: RedriveProgress) -> None:
            if not moved:
                moved.append(move_slot(redis_cluster, "dlq"))

        report = Redrive(dlq, publisher, "moving", rate=100, batch=10, on_progress=move_once).run()
        assert moved and report.error is None
        assert report.sent == 100 and dlq.size("moving") == 0
        sent = [json.loads(raw)["headers"]["id"] for raw in broker.lrange("moving", 0, -1)]
        assert len(sent) == len(set(sent)) == 100
    finally:
        publisher.close()
        broker.delete("moving")
        broker.close()
        client.close()
