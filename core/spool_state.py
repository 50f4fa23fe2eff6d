"""Each host's spool, as its worker last reported it to the DLQ's Redis.

Keys, under the DLQ namespace (``dlq@`` for the prefix ``dlq:``):

- ``dlq@spool:{host}:{spool id}``: a hash with ``host``, ``path`` (the spool file), ``pending``
  (entries waiting), ``pending_bytes``, ``dropped`` (entries the spool deleted to stay under
  ``spool_max_bytes``, ever), ``dropped_at``, ``replayed`` (lines replayed, ever),
  ``replayed_at``, ``updated_at`` (epoch seconds, empty when never) and ``worker`` (the node that
  wrote it). The spool id is a hash of the spool's path, so two spools on one host (two users,
  two spool dirs) keep apart. It expires ``SPOOL_STATE_TTL`` after the last report: a host
  that is gone vanishes.
- ``dlq@spools``: a sorted set of those keys by report time, so readers find them without
  ``SCAN``; a member whose hash expired is removed by the next reader.

Workers report from the spool drain (``core.spool_drain``) whenever the state changed and at
least every minute; readers (``morgue queues``, the UI's status line) call
:func:`spool_backlogs`.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from dataclasses import asdict, dataclass
from typing import Any

from redis.exceptions import NoPermissionError, ReadOnlyError

from celery_morgue.core.dlq import namespace_for
from celery_morgue.core.redis_cluster import DLQClient

SPOOL_STATE_TTL = 3600


@dataclass(frozen=True)
class SpoolState:
    host: str
    path: str
    pending: int
    pending_bytes: int = 0
    dropped: int = 0
    dropped_at: float | None = None
    replayed: int = 0
    replayed_at: float | None = None
    updated_at: float | None = None
    worker: str = ""

    @property
    def backlog(self) -> bool:
        """Entries wait on this host, or some were dropped: worth showing."""
        return self.pending > 0 or self.dropped > 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """``host1: 12 pending (34,567 bytes)``, with what was dropped, for people."""
        text = f"{self.host}: {self.pending:,} pending"
        if self.pending_bytes:
            text += f" ({self.pending_bytes:,} bytes)"
        if self.dropped:
            text += f", {self.dropped:,} dropped (spool full)"
        return text


def index_key(prefix: str) -> str:
    return f"{namespace_for(prefix)}spools"


def state_key(prefix: str, host: str, path: str) -> str:
    spool_id = hashlib.sha256(path.encode()).hexdigest()[:8]
    return f"{namespace_for(prefix)}spool:{host}:{spool_id}"


def write_spool_state(
    client: DLQClient, prefix: str, state: SpoolState, ttl: int = SPOOL_STATE_TTL
) -> None:
    """Store ``state`` (one round trip); raises redis errors for the caller to handle."""
    key = state_key(prefix, state.host, state.path)
    now = time.time() if state.updated_at is None else state.updated_at
    fields = {
        name: "" if value is None else str(value)
        for name, value in {**state.as_dict(), "updated_at": now}.items()
    }
    pipe = client.pipeline(transaction=False)
    pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
    pipe.expire(key, ttl)
    pipe.zadd(index_key(prefix), {key: now})
    pipe.expire(index_key(prefix), max(ttl, SPOOL_STATE_TTL))
    pipe.execute()


def spool_states(client: DLQClient, prefix: str) -> list[SpoolState]:
    """Every reported spool, by host and path; forgets the ones whose report expired."""
    index = index_key(prefix)
    keys = [_text(key) for key in client.zrange(index, 0, -1)]
    if not keys:
        return []
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hgetall(key)
    replies = pipe.execute()
    states = []
    gone = []
    for key, fields in zip(keys, replies, strict=True):
        if not fields:
            gone.append(key)
            continue
        state = _parse({_text(name): _text(value) for name, value in fields.items()})
        if state is not None:
            states.append(state)
    if gone:
        # Forgetting them only saves the next reader a lookup: a read-only ACL user, or a
        # replica, reads on without it.
        with contextlib.suppress(NoPermissionError, ReadOnlyError):
            client.zrem(index, *gone)
    return sorted(states, key=lambda state: (state.host, state.path))


def spool_backlogs(client: DLQClient, prefix: str) -> list[SpoolState]:
    """The spools with entries waiting (or dropped): one per host, as its worker reported."""
    return [state for state in spool_states(client, prefix) if state.backlog]


def _parse(fields: dict[str, str]) -> SpoolState | None:
    try:
        return SpoolState(
            host=fields.get("host", ""),
            path=fields.get("path", ""),
            pending=int(fields.get("pending") or 0),
            pending_bytes=int(fields.get("pending_bytes") or 0),
            dropped=int(fields.get("dropped") or 0),
            dropped_at=_float(fields.get("dropped_at")),
            replayed=int(fields.get("replayed") or 0),
            replayed_at=_float(fields.get("replayed_at")),
            updated_at=_float(fields.get("updated_at")),
            worker=fields.get("worker", ""),
        )
    except ValueError:
        return None


def _float(value: str | None) -> float | None:
    return float(value) if value else None


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
