"""Failure-group benchmark: the groups of a queue of 1,000,000 entries and a page of one group,
against an unfiltered page of 50 on the same queue; Redis memory per entry with the group index
against without.

Run: python tests/benchmarks/bench_groups.py [--entries 1000000] [--memory-entries 200000]

The queue is filled in bulk (pipelined XADDs of ready JSON, with explicit ids, and the index
written beside them exactly as core.dlq keys it), so 1,000,000 entries take one to two minutes.
Each comparison runs interleaved, in rounds, against the same private redis-server: the ratios
hold on a noisy machine even when the absolute figures move.
Targets: group counts and a group page within 2x the unfiltered page; memory within +15%.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from celery_morgue.core.dlq import DeadLetterQueue
from celery_morgue.core.entry import build_entry
from celery_morgue.core.groups import index_member
from celery_morgue.tui.demo.processes import RedisServer

BATCH = 5_000
# Sixteen slots of group numbers: group 0 has half the entries, group 1 a quarter, and so on.
SHARES = [0] * 8 + [1] * 4 + [2] * 2 + [3, 4]


def traceback_of(function: str) -> str:
    """A traceback as a prefork worker reports it: Celery's frames, then the task's."""
    site = "/srv/shop/.venv/lib/python3.12/site-packages"
    return (
        "Traceback (most recent call last):\n"
        f'  File "{site}/celery/app/trace.py", line 453, in trace_task\n'
        "    R = retval = fun(*args, **kwargs)\n"
        "                 ^^^^^^^^^^^^^^^^^^^^\n"
        f'  File "{site}/celery/app/trace.py", line 736, in __protected_call__\n'
        "    return self.run(*args, **kwargs)\n"
        "           ^^^^^^^^^^^^^^^^^^^^^^^^^\n"
        '  File "/srv/shop/shop/tasks.py", line 88, in charge_order\n'
        "    invoice = load_invoice(order_id)\n"
        "              ^^^^^^^^^^^^^^^^^^^^^^\n"
        f'  File "/srv/shop/shop/billing.py", line 41, in {function}\n'
        '    raise LookupError(f"invoice for order {order_id} not found")\n'
        "LookupError: invoice for order 1234567 not found\n"
    )


def stored(group_number: int) -> tuple[str, str]:
    """(group, entry JSON) of a realistic failure of the group's bug."""
    entry = build_entry(
        task_id="3f9a8e2c-5b1d-4c7e-9a0f-1e2d3c4b5a69",
        task="shop.tasks.charge_order",
        queue="payments",
        args=[1234567, "19.99"],
        kwargs={"currency": "EUR", "retry": False},
        exception=LookupError("invoice for order 1234567 not found"),
        traceback=traceback_of(f"load_invoice_{group_number}"),
        retries=3,
        hostname="celery@worker-3.shop.internal",
        delivery_info={"exchange": "", "routing_key": "payments", "priority": 0},
        root_id="3f9a8e2c-5b1d-4c7e-9a0f-1e2d3c4b5a69",
        parent_id=None,
    )
    return entry.group, entry.to_json()


def fill(client: redis.Redis, dlq: DeadLetterQueue, queue: str, count: int, indexed: bool) -> None:
    """``count`` entries of five groups, with ids a millisecond apart from an hour ago."""
    kinds = [stored(number) for number in range(5)]
    start_ms = int(time.time() * 1000) - 3_600_000
    for first in range(0, count, BATCH):
        pipe = client.pipeline(transaction=False)
        for n in range(first, min(count, first + BATCH)):
            group, payload = kinds[SHARES[(n * 7919) % len(SHARES)]]
            entry_id = f"{start_ms + n // 10}-{n % 10}"
            fields = {"task_id": f"t-{n}", "entry": payload}
            if indexed:
                fields = {"task_id": f"t-{n}", "group": group, "entry": payload}
                pipe.zadd(dlq.group_key(queue, group), {index_member(entry_id): 0})
                pipe.hincrby(dlq.groups_key(queue), group, 1)
            pipe.xadd(dlq.key(queue), fields, id=entry_id)
        pipe.execute()
    client.hset(dlq.index_key, queue, 7 * 24 * 3600 * 1000)


def per_call(action: Callable[[], object], count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        action()
    return (time.perf_counter() - start) / count


def bench_reads(server: RedisServer, entries: int, rounds: int) -> dict[str, float]:
    client = redis.Redis.from_url(server.url)
    dlq = DeadLetterQueue(client, max_entries=10**9)
    started = time.perf_counter()
    fill(client, dlq, "big", entries, indexed=True)
    print(f"filled {entries:,} entries in {time.perf_counter() - started:.0f} s")
    fill(client, dlq, "small", 1_000, indexed=True)
    report = dlq.groups("big")
    assert report.total == entries and report.ungrouped == 0, report
    largest, smallest = report.groups[0].group, report.groups[-1].group
    middle = dlq.group_page("big", largest, limit=min(entries // 4, 100_000)).items[-1].id
    actions: dict[str, Callable[[], object]] = {
        "unfiltered page": lambda: dlq.page("big", limit=50),
        "groups (counts)": lambda: dlq.groups("big"),
        "group page, largest": lambda: dlq.group_page("big", largest, limit=50),
        "group page, largest, deep": lambda: dlq.group_page("big", largest, middle, 50),
        "group page, smallest": lambda: dlq.group_page("big", smallest, limit=50),
        "groups (counts), 1,000 entries": lambda: dlq.groups("small"),
    }
    timings: dict[str, list[float]] = {name: [] for name in actions}
    for _ in range(rounds):
        for name, action in actions.items():
            timings[name].append(per_call(action, 200))
    return {name: statistics.median(values) for name, values in timings.items()}


def bench_memory(server: RedisServer, entries: int) -> tuple[float, float]:
    client = redis.Redis.from_url(server.url)
    dlq = DeadLetterQueue(client)
    per_entry = []
    for indexed in (False, True):
        client.flushall()
        before = int(client.info("memory")["used_memory"])
        fill(client, dlq, "memory", entries, indexed=indexed)
        per_entry.append((int(client.info("memory")["used_memory"]) - before) / entries)
    return per_entry[0], per_entry[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--memory-entries", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=7)
    options = parser.parse_args()
    with RedisServer() as server:
        reads = bench_reads(server, options.entries, options.rounds)
        page = reads["unfiltered page"]
        for name, value in reads.items():
            print(f"{name:32} {value * 1e6:8.1f} µs   {value / page:5.2f}x the unfiltered page")
        print("target: groups and group pages <= 2x the unfiltered page of the same queue")
        plain, indexed = bench_memory(server, options.memory_entries)
        print(f"memory per entry, without the group index: {plain:7.1f} bytes")
        print(f"memory per entry, with the group index:    {indexed:7.1f} bytes")
        print(f"ratio with / without: {indexed / plain:5.3f}   (target <= 1.15)")


if __name__ == "__main__":
    main()
