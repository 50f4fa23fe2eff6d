"""DLQ benchmark: capture cost against a bare XADD, and page cost at 1,000 vs 1,000,000 entries.

Run: python tests/benchmarks/bench_dlq.py [--big 1000000] [--captures 5000]

Both sides of each comparison run in the same process against the same private redis-server,
interleaved in rounds, so the ratios hold on a noisy machine even when the absolute figures move.
Targets: capture within 1.5x the bare write; a page at 1,000,000 within 1.3x a page at 1,000.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis
from billiard.einfo import ExceptionInfo
from celery import Celery

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from celery_morgue.core.capture import FailureCapture
from celery_morgue.core.dlq import DeadLetterQueue
from celery_morgue.core.groups import index_member
from celery_morgue.core.options import Options
from celery_morgue.tui.demo.processes import RedisServer


def per_call(action: Callable[[int], object], count: int, offset: int) -> float:
    start = time.perf_counter()
    for n in range(count):
        action(offset + n)
    return (time.perf_counter() - start) / count


def failure() -> tuple[BaseException, ExceptionInfo]:
    def inner(order: dict[str, int]) -> None:
        raise KeyError(f"order {order['id']} has no customer")

    try:
        inner({"id": 42})
    except KeyError as exc:
        return exc, ExceptionInfo()
    raise AssertionError("unreachable")


def bench_capture(server: RedisServer, captures: int, rounds: int) -> tuple[float, float]:
    app = Celery("bench", broker=server.url)

    @app.task(name="shop.charge_card")
    def charge_card(order_id: int, amount: str) -> None: ...

    with tempfile.TemporaryDirectory() as spool:
        capture = FailureCapture(app, server.url, Options(spool_dir=spool, max_entries=10**9))
        exc, einfo = failure()
        client = redis.Redis.from_url(server.url)
        payload = capture.entry_from_context(
            charge_card.name,
            "x",
            None,
            args=(42,),
            kwargs={},
            exception=exc,
            traceback=einfo.traceback,
        ).to_json()

        # The request context a worker has pushed when task_failure fires in the pool child.
        charge_card.push_request(
            hostname="w1@bench",
            retries=3,
            delivery_info={"exchange": "", "routing_key": "payments", "priority": 0},
        )
        request = charge_card.request

        def captured(n: int) -> None:
            request.id = f"cap-{n}"
            capture.on_task_failure(
                sender=charge_card,
                task_id=request.id,
                exception=exc,
                args=(42, "19.99"),
                kwargs={"currency": "EUR"},
                traceback=einfo.tb,
                einfo=einfo,
            )

        def bare(n: int) -> None:
            client.xadd("bare:payments", {"task_id": f"bare-{n}", "entry": payload}, maxlen=10**9)

        captured_times, bare_times = [], []
        for round_number in range(rounds):
            offset = round_number * captures
            bare_times.append(per_call(bare, captures, offset))
            captured_times.append(per_call(captured, captures, offset))
        assert capture.dlq.size("payments") == captures * rounds
        return statistics.median(captured_times), statistics.median(bare_times)


def fill(
    client: redis.Redis, dlq: DeadLetterQueue, queue: str, count: int, payload: str, group: str
) -> None:
    """``count`` rows as the add script writes them: the group in the row and its index."""
    batch = 10_000
    start_ms = int(time.time() * 1000) - 3_600_000
    for start in range(0, count, batch):
        pipe = client.pipeline(transaction=False)
        for n in range(start, min(count, start + batch)):
            entry_id = f"{start_ms + n // 10}-{n % 10}"
            fields = {"task_id": f"{queue}-{n}", "group": group, "entry": payload}
            pipe.xadd(dlq.key(queue), fields, id=entry_id)
            pipe.zadd(dlq.group_key(queue, group), {index_member(entry_id): 0})
        pipe.hincrby(dlq.groups_key(queue), group, min(count, start + batch) - start)
        pipe.execute()
    client.hset(dlq.index_key, queue, 7 * 24 * 3600 * 1000)


def bench_pages(server: RedisServer, big: int, rounds: int) -> dict[str, float]:
    client = redis.Redis.from_url(server.url)
    dlq = DeadLetterQueue(client, max_entries=10**9)
    exc, einfo = failure()
    app = Celery("pages")

    @app.task(name="shop.ship")
    def task() -> None: ...

    with tempfile.TemporaryDirectory() as spool:
        capture = FailureCapture(app, server.url, Options(spool_dir=spool))
        stored = capture.entry_from_context(
            task.name, "t", None, args=(1,), kwargs={}, exception=exc, traceback=einfo.traceback
        )
    fill(client, dlq, "small", 1_000, stored.to_json(), stored.group)
    fill(client, dlq, "big", big, stored.to_json(), stored.group)
    middle = {
        name: dlq.page(name, limit=size // 2).items[-1].id
        for name, size in (("small", 1_000), ("big", min(big, 100_000)))
    }
    timings: dict[str, list[float]] = {k: [] for k in ("small", "big", "small@mid", "big@mid")}
    for _ in range(rounds):
        timings["small"].append(per_call(lambda _n: dlq.page("small", limit=50), 200, 0))
        timings["big"].append(per_call(lambda _n: dlq.page("big", limit=50), 200, 0))
        timings["small@mid"].append(
            per_call(lambda _n: dlq.page("small", middle["small"], 50), 200, 0)
        )
        timings["big@mid"].append(per_call(lambda _n: dlq.page("big", middle["big"], 50), 200, 0))
    return {name: statistics.median(values) for name, values in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--big", type=int, default=1_000_000)
    parser.add_argument("--captures", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=7)
    options = parser.parse_args()
    with RedisServer() as server:
        captured, bare = bench_capture(server, options.captures, options.rounds)
        print(f"capture of one failure: {captured * 1e6:8.1f} µs")
        print(f"bare XADD, same payload: {bare * 1e6:8.1f} µs")
        print(f"ratio capture / bare:    {captured / bare:8.2f}x   (target <= 1.5x)")
        pages = bench_pages(server, options.big, options.rounds)
        for name, value in pages.items():
            print(f"page of 50, {name:>10}: {value * 1e6:8.1f} µs")
        print(
            f"ratio newest page big/small:  {pages['big'] / pages['small']:5.2f}x (target <= 1.3x)"
        )
        print(f"ratio middle page big/small:  {pages['big@mid'] / pages['small@mid']:5.2f}x")


if __name__ == "__main__":
    main()
