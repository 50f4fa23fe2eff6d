"""Whether the DLQ's Redis evicts keys when memory runs short, which loses entries silently.

Every DLQ stream carries a TTL (the newest entry's retention), so a ``volatile-*`` policy may
evict it, and an ``allkeys-*`` policy any key of the DLQ: a whole queue's entries, or the group
counts beside them, gone without a trace. The DLQ often shares the broker's Redis, whose
operators set a policy for caches. A managed Redis or an ACL may refuse ``CONFIG GET``: then
the policy is unknown, which is said, never an error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis

from celery_morgue.core.redis_cluster import DLQClient
from celery_morgue.core.wording import one_line

EVICTING = ("allkeys-", "volatile-")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvictionPolicy:
    policy: str | None  # None: unknown
    why_unknown: str = ""

    @property
    def evicts(self) -> bool:
        return self.policy is not None and self.policy.startswith(EVICTING)

    def warning(self) -> str | None:
        """One line for an operator when the policy loses entries, else None."""
        if not self.evicts:
            return None
        return (
            f"celery-morgue: the DLQ's Redis has maxmemory-policy {self.policy}: when its "
            "memory runs short it evicts keys, and dead-letter entries are lost without a "
            "trace; set maxmemory-policy noeviction, or keep the DLQ in a Redis of its own"
        )


def eviction_policy(client: DLQClient) -> EvictionPolicy:
    """The DLQ Redis's ``maxmemory-policy``, or why it is unknown."""
    try:
        reply = client.config_get("maxmemory-policy")
    except redis.RedisError as exc:  # NOPERM, a renamed CONFIG, Redis away
        return EvictionPolicy(None, one_line(f"{type(exc).__name__}: {exc}"))
    for name, value in dict(reply).items():
        if _text(name) == "maxmemory-policy":
            return EvictionPolicy(_text(value))
    return EvictionPolicy(None, "CONFIG GET maxmemory-policy answered nothing")


def log_eviction_policy(client: DLQClient) -> EvictionPolicy:
    """At a worker's start: a WARNING when the policy evicts, a note when it is unknown."""
    found = eviction_policy(client)
    warning = found.warning()
    if warning is not None:
        log.warning("%s", warning)
    elif found.policy is None:
        log.info(
            "celery-morgue: the DLQ's Redis maxmemory-policy is unknown (%s); if it evicts "
            "keys, dead-letter entries can be lost",
            found.why_unknown,
        )
    return found


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
