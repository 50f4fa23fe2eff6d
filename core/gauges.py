"""What a DLQ holds now, read without writing: for exporters and read-only ACL users.

``DeadLetterQueue.queues()`` applies retention before it answers, which writes. These readers
only read, and each costs the same on a queue of ten entries or a million: per queue a length,
the first row after the retention cut-off, the newest row and a group count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from celery_morgue.core.dlq import DeadLetterQueue, stream_id_time


@dataclass(frozen=True)
class QueueGauge:
    queue: str
    entries: int  # XLEN: rows past retention that no writer trimmed yet are counted
    oldest_age: float | None  # seconds since the oldest entry within retention was captured
    groups: int


def queue_gauges(dlq: DeadLetterQueue) -> list[QueueGauge]:
    """Every indexed queue with entries, by name, in two round trips.

    Ages and the retention cut-off are on Redis's clock, the one the stream ids were made on.
    """
    pipe = dlq.client.pipeline(transaction=False)
    pipe.time()
    pipe.hgetall(dlq.index_key)
    (seconds, micros), index = pipe.execute()
    clock = int(seconds) + int(micros) / 1e6
    retentions = {_text(queue): int(ms) for queue, ms in index.items()}
    if not retentions:
        return []
    names = sorted(retentions)
    pipe = dlq.client.pipeline(transaction=False)
    for name in names:
        cutoff_ms = max(0, int(clock * 1000) - retentions[name])
        pipe.xlen(dlq.key(name))
        pipe.xrange(dlq.key(name), min=f"{cutoff_ms}-0", count=1)
        pipe.hlen(dlq.groups_key(name))
    replies = pipe.execute()
    gauges = []
    for position, name in enumerate(names):
        length, first, groups = replies[position * 3 : position * 3 + 3]
        if not int(length):
            continue
        oldest = stream_id_time(_text(first[0][0])).timestamp() if first else None
        gauges.append(
            QueueGauge(
                queue=name,
                entries=int(length),
                oldest_age=max(0.0, clock - oldest) if oldest is not None else None,
                groups=int(groups),
            )
        )
    return gauges


def captured_totals(dlq: DeadLetterQueue) -> dict[tuple[str, str], int]:
    """(queue, reason) -> entries ever stored: counted by the capture script, never lowered."""
    totals: dict[tuple[str, str], int] = {}
    for field, count in dlq.client.hgetall(dlq.captured_key).items():
        reason, _, queue = _text(field).partition(":")
        totals[(queue, reason)] = int(count)
    return totals


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
