"""A DLQ on Redis Cluster: the client type, the connection, and the hash tag of a namespace.

Every key of one DLQ namespace carries the prefix's hash tag (``{dlq}:`` -> slot of ``dlq``),
so one namespace lives in one slot and its Lua scripts and pipelines stay on one node.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

import redis
from redis.cluster import ClusterPipeline, RedisCluster
from redis.commands.core import Script
from redis.exceptions import RedisClusterException

# A client of the DLQ Redis: a plain server (or proxy) or a Redis Cluster.
DLQClient: TypeAlias = redis.Redis | RedisCluster


class ClusterPrefixError(ValueError):
    """A DLQ prefix whose braces would not pin its keys to one slot."""


def cluster_prefix(prefix: str) -> str:
    """``prefix`` with a hash tag: ``'dlq:'`` -> ``'{dlq}:'``; a tagged prefix is kept.

    Redis Cluster hashes the first ``{...}`` of a key, so a prefix that holds one pins every
    key of its namespace (``{dlq}:celery``, ``{dlq}@queues``, ...) to one slot and the Lua
    scripts may touch them all. An untagged prefix is wrapped rather than refused: the
    workers and the UI apply the same rule, so ``prefix = "dlq:"`` on both still agree. A
    brace the prefix does not close is refused: a queue name's ``}`` would decide the slot.
    """
    opening = prefix.find("{")
    if opening == -1 and "}" not in prefix:
        return "{" + prefix[:-1] + "}:"
    closing = prefix.find("}", opening + 1)
    if opening == -1 or closing == -1 or closing == opening + 1:
        raise ClusterPrefixError(
            f"prefix {prefix!r} has braces that are no hash tag; on Redis Cluster use one "
            "like '{dlq}:', or none and celery-morgue adds it"
        )
    return prefix


def connect_cluster(url: str, settings: dict[str, Any]) -> RedisCluster:
    """A Redis Cluster client with the same failure settings as a plain connection.

    ``retry`` goes to the cluster client (redis-py refuses it per node): no retries on a
    connection error, while MOVED and ASK redirections are still followed (redis-py bounds
    those by its own request TTL, not by ``retry``).
    """
    node_settings = {key: value for key, value in settings.items() if key != "retry"}
    try:
        # Unlike redis.Redis, this asks a node for the slot map at once.
        return RedisCluster.from_url(url, retry=settings["retry"], **node_settings)
    except RedisClusterException as exc:  # not a RedisError: callers handle those
        raise redis.ConnectionError(str(exc).splitlines()[0]) from None


def queue_script(
    pipe: Any, script: Script, keys: Sequence[str], args: Sequence[str | int | float]
) -> None:
    """Queue ``script`` on ``pipe``, a plain or a cluster pipeline.

    redis-py's cluster pipelines refuse EVALSHA, so there the script goes whole with EVAL:
    a few kilobytes more a round trip, and no NOSCRIPT after a failover or a slot move.
    """
    if isinstance(pipe, ClusterPipeline):
        untyped: Any = pipe  # redis-py leaves execute_command untyped
        untyped.execute_command("EVAL", script.script, len(keys), *keys, *args)
    else:
        script(keys=keys, args=args, client=pipe)


def node_client_for(client: DLQClient, key: str) -> redis.Redis:
    """The client of the node that serves ``key``: ``client`` itself unless it is a cluster's."""
    if isinstance(client, RedisCluster):
        cluster: Any = client  # redis-py leaves get_node_from_key untyped
        node = cluster.get_node_from_key(key)
        return client.get_redis_connection(node)
    return client
