"""Requeue --all of a big queue: throughput against a bare `app.send_task` loop, and peak memory.

Run: python tests/benchmarks/bench_redrive.py [--entries 100000] [--small 1000]

One private redis-server is both the broker and the DLQ, as it often is. In the same run:

- a bare loop of ``app.send_task`` (one message per call, the task and arguments of a typical
  entry) against ``Redrive`` requeueing entries of a queue (no filter, no rate), interleaved in
  ``--rounds`` rounds of ``--entries / --rounds`` each (the entries stored before each round,
  untimed), so both see the same load. Target: the requeue at least 0.8x the bare loop's
  messages a second.
- peak RSS (``ru_maxrss``) of a subprocess that requeues ``--entries`` entries, against one that
  requeues ``--small`` entries. Target: within +30 MB.

The requeue runs as `dlq requeue --all` does without --json: the ids sent are counted, not kept
(with --json each costs about 200 bytes more, for the report's id map).

No worker consumes the queues: the messages stay in their Redis lists, which are counted (each
entry sent once) and emptied between the steps. The redis-server is stopped by pid at the end.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import redis  # noqa: E402
from celery import Celery  # noqa: E402

from celery_morgue.core.dlq import DeadLetterQueue  # noqa: E402
from celery_morgue.core.redrive import Redrive  # noqa: E402
from celery_morgue.tui.demo.processes import RedisServer  # noqa: E402
from tests.helpers import make_entry  # noqa: E402

QUEUE = "bench-redrive"
BARE_QUEUE = "bench-bare"
FILL_CHUNK = 1000


def make_app(url: str) -> Celery:
    app = Celery("bench-redrive", broker=url)
    app.conf.update(task_serializer="json", accept_content=["json"])
    return app


def fill(url: str, count: int) -> None:
    dlq = DeadLetterQueue(redis.Redis.from_url(url), max_entries=max(count, 10_000))
    for start in range(0, count, FILL_CHUNK):
        size = min(FILL_CHUNK, count - start)
        ids = dlq.add_many(make_entry(f"bench-{start + n}", QUEUE) for n in range(size))
        assert all(ids), "an entry was not stored"


def bare_loop(app: Celery, count: int) -> float:
    """Seconds ``count`` calls of ``app.send_task`` alone take."""
    started = time.perf_counter()
    for _ in range(count):
        app.send_task("proj.tasks.example", args=[1, "two"], kwargs={"three": 3}, queue=BARE_QUEUE)
    return time.perf_counter() - started


def redrive(dlq: DeadLetterQueue, app: Celery) -> tuple[int, float]:
    """Requeue the queue as `requeue --all` does without --json (the ids sent not kept); how
    many were sent and the seconds it took."""
    started = time.perf_counter()
    report = Redrive(dlq, app, QUEUE, keep_ids=False).run()
    elapsed = time.perf_counter() - started
    assert report.error is None, report.error
    return report.sent, elapsed


def connected(url: str) -> tuple[DeadLetterQueue, Celery]:
    app = make_app(url)
    app.send_task("proj.tasks.example", args=[1, "two"], queue=BARE_QUEUE)  # connect first
    return DeadLetterQueue(redis.Redis.from_url(url)), app


def throughput(url: str, client: redis.Redis, count: int, rounds: int) -> tuple[float, float]:
    """Messages a second of the bare loop and of the requeue, interleaved in rounds (each: the
    next part of the queue stored, untimed; a bare loop; a requeue of that part), so both see
    the same machine."""
    dlq, app = connected(url)
    step = count // rounds
    bare_seconds = requeue_seconds = 0.0
    for _ in range(rounds):
        fill(url, step)
        bare_seconds += bare_loop(app, step)
        sent, seconds = redrive(dlq, app)
        assert sent == step, sent
        requeue_seconds += seconds
        client.delete(BARE_QUEUE)
    assert client.llen(QUEUE) == step * rounds, client.llen(QUEUE)
    client.delete(QUEUE)
    return step * rounds / bare_seconds, step * rounds / requeue_seconds


def child(url: str) -> None:
    """In a subprocess: requeue the queue, print what was sent and the peak RSS."""
    sent, _ = redrive(*connected(url))
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"sent": sent, "peak_mb": peak_kb / 1024}))


def peak_of_requeue(url: str, client: redis.Redis, count: int) -> float:
    fill(url, count)
    done = subprocess.run(
        [sys.executable, __file__, "--child", url],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["sent"] == count, result
    assert client.llen(QUEUE) == count
    client.delete(QUEUE)
    return float(result["peak_mb"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--child", metavar="URL", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        child(options.child)
        return
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        count = options.entries
        bare, requeue = throughput(server.url, client, count, options.rounds)
        ratio = requeue / bare
        print(f"bare app.send_task loop: {bare:,.0f} msg/s ({count:,} messages)")
        print(f"requeue --all:           {requeue:,.0f} msg/s ({count:,} entries)")
        print(f"({options.rounds} rounds of {count // options.rounds:,}, interleaved)")
        print(f"ratio: {ratio:.2f}x (target >= 0.8x)")

        small = peak_of_requeue(server.url, client, options.small)
        big = peak_of_requeue(server.url, client, count)
        print(f"peak RSS, requeue of {options.small:,}: {small:.1f} MB")
        print(f"peak RSS, requeue of {count:,}: {big:.1f} MB (+{big - small:.1f} MB, target +30)")
        ok = ratio >= 0.8 and big - small <= 30
        print("PASS" if ok else "FAIL")
        client.close()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
