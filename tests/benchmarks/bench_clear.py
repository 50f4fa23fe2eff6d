"""Bulk-work benchmark: the longest PING round trip while the DLQ clears, deletes, regroups or
trims 1,000,000 entries, against the longest PING of an idle period in the same run.

Run: python tests/benchmarks/bench_clear.py [--entries 1000000]

A second client in its own process pings without pause the whole time; each phase reports the
longest round trip it saw while that phase ran. Every queue is filled by a Lua loader in this script
(10,000 rows a call, rows and group index as core.dlq writes them), so 1,000,000 entries take
seconds; the fill itself is not measured. The ratio to the idle figure holds on a noisy
machine even when the absolute figures move.
Target: no PING waits more than 50 ms during any phase.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from celery_morgue.core.dlq import DeadLetterQueue
from celery_morgue.core.dlq_scripts import GROUP_HELPERS
from celery_morgue.core.entry import build_entry
from celery_morgue.tui.demo.processes import RedisServer

LOAD_BATCH = 10_000
TARGET = 0.050  # s: the longest a PING may wait
GROUPS = 5
# KEYS: stream, groups.  ARGV: group index prefix, first row number, rows, first id ms, then
# one (group, entry json) pair per group.  Row n is of group n mod the pairs, ten rows a ms.
LOADER = (
    GROUP_HELPERS
    + """
local pairs_ = (#ARGV - 4) / 2
local counts = {}
for n = tonumber(ARGV[2]), tonumber(ARGV[2]) + tonumber(ARGV[3]) - 1 do
  local k = n % pairs_
  local g, entry = ARGV[5 + 2 * k], ARGV[6 + 2 * k]
  local id = (tonumber(ARGV[4]) + math.floor(n / 10)) .. '-' .. (n % 10)
  redis.call('XADD', KEYS[1], id, 'task_id', 't-' .. n, 'group', g, 'entry', entry)
  redis.call('ZADD', ARGV[1] .. g, 0, member(id))
  counts[g] = (counts[g] or 0) + 1
end
for g, c in pairs(counts) do redis.call('HINCRBY', KEYS[2], g, c) end
return 1
"""
)


class Pinger:
    """Pings from its own client in its own process (as another worker on the same Redis
    would: this process's work holds no lock it waits on); the longest round trip since the
    last mark."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._longest = multiprocessing.Value("d", 0.0)
        self._pings = multiprocessing.Value("q", 0)
        self._slow = multiprocessing.Value("q", 0)  # pings over the target
        self._stop = multiprocessing.Event()
        self._process = multiprocessing.Process(
            target=_ping,
            args=(url, self._longest, self._pings, self._slow, self._stop),
            daemon=True,
        )

    def __enter__(self) -> Pinger:
        self._process.start()
        while not self._pings.value:  # connected and pinging
            time.sleep(0.01)
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()  # by its own handle: only the process this started

    def measure(self, action: Callable[[], object]) -> tuple[float, float, int, int, object]:
        """(longest ping, seconds, pings, pings over the target) while ``action`` ran, and
        what it returned."""
        with self._longest.get_lock(), self._pings.get_lock():
            self._longest.value, self._pings.value, self._slow.value = 0.0, 0, 0
        start = time.perf_counter()
        result = action()
        took = time.perf_counter() - start
        with self._longest.get_lock(), self._pings.get_lock():
            return self._longest.value, took, self._pings.value, self._slow.value, result


def _ping(url: str, longest: Any, pings: Any, slow: Any, stop: Any) -> None:
    client = redis.Redis.from_url(url)
    while not stop.is_set():
        start = time.perf_counter()
        client.ping()
        elapsed = time.perf_counter() - start
        with longest.get_lock(), pings.get_lock():
            pings.value += 1
            slow.value += elapsed > TARGET
            longest.value = max(longest.value, elapsed)


def kinds() -> list[tuple[str, str]]:
    """(group, entry json) of a realistic failure for each of the groups."""
    found = []
    for number in range(GROUPS):
        entry = build_entry(
            task_id="3f9a8e2c-5b1d-4c7e-9a0f-1e2d3c4b5a69",
            task="shop.tasks.charge_order",
            queue="payments",
            args=[1234567, "19.99"],
            kwargs={"currency": "EUR", "retry": False},
            exception=LookupError("invoice for order 1234567 not found"),
            traceback=(
                "Traceback (most recent call last):\n"
                f'  File "/srv/shop/shop/billing.py", line 41, in load_invoice_{number}\n'
                "LookupError: invoice for order 1234567 not found\n"
            ),
            retries=3,
            hostname="celery@worker-3.shop.internal",
            delivery_info={"exchange": "", "routing_key": "payments", "priority": 0},
            root_id=None,
            parent_id=None,
        )
        found.append((entry.group, entry.to_json()))
    return found


def fill(client: redis.Redis, dlq: DeadLetterQueue, queue: str, count: int, age_s: int) -> None:
    """``count`` rows of the groups, ids from ``age_s`` ago on, ten a millisecond."""
    loader = client.register_script(LOADER)
    first_ms = int(time.time() * 1000) - age_s * 1000
    flat = [part for pair in kinds() for part in pair]
    for start in range(0, count, LOAD_BATCH):
        rows = min(LOAD_BATCH, count - start)
        keys = [dlq.key(queue), dlq.groups_key(queue)]
        loader(keys=keys, args=[dlq.group_key_prefix(queue), start, rows, first_ms, *flat])
    client.hset(dlq.index_key, queue, dlq.retention * 1000)
    client.pexpire(dlq.key(queue), dlq.retention * 1000)


def redis_side(client: redis.Redis, action: Callable[[], object]) -> Callable[[], object]:
    """``action``, with Redis's own view of it afterwards, from the slow log: how long its
    script calls ran (the slowest, the 99th percentile, the mean). A call's duration there is
    inflated by the machine's other load far less often than a round trip is."""

    def measured() -> object:
        client.config_set("slowlog-log-slower-than", 1000)  # µs: scripts, not PINGs
        client.config_set("slowlog-max-len", 100_000)
        client.slowlog_reset()
        client.config_resetstat()
        result = action()
        logged = sorted(
            entry["duration"]
            for entry in client.slowlog_get(100_000)
            if b"EVAL" in entry["command"][:8].upper()
        )
        calls = client.info("commandstats").get("cmdstat_evalsha", {})
        count, mean = int(calls.get("calls", 0)), float(calls.get("usec_per_call", 0.0))
        # The calls under 1 ms are not logged: the percentile is among all calls.
        rank = count - int(count * 0.99)
        p99 = logged[-rank] / 1000 if 0 < rank <= len(logged) else 1.0
        slowest = logged[-1] / 1000 if logged else 0.0
        return (
            f"{result}; {count:,} script calls: slowest {slowest:.1f} ms, "
            f"99th percentile {'<' if rank > len(logged) else ''}{p99:.1f} ms, "
            f"mean {mean / 1000:.2f} ms"
        )

    return measured


def report(name: str, figures: tuple[float, float, int, int, object], idle: float) -> None:
    longest, took, pings, slow, result = figures
    print(
        f"{name:27} longest PING {longest * 1000:6.1f} ms ({longest / idle:4.1f}x idle), "
        f"{slow:,} of {pings:,} over {TARGET * 1000:.0f} ms; {took:5.1f} s; {result}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of the idle period")
    options = parser.parse_args()
    count = options.entries
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        dlq = DeadLetterQueue(client, max_entries=10**9)
        with Pinger(server.url) as pinger:
            idle, _, idle_pings, idle_slow, _ = pinger.measure(lambda: time.sleep(options.idle))
            print(
                f"{'idle':27} longest PING {idle * 1000:6.1f} ms, "
                f"{idle_slow:,} of {idle_pings:,} over {TARGET * 1000:.0f} ms"
            )
            fill(client, dlq, "clear", count, age_s=3600)
            report("clear", pinger.measure(redis_side(client, lambda: dlq.clear("clear"))), idle)

            delete_matching = getattr(dlq, "delete_matching", None)
            if delete_matching is not None:
                from celery_morgue.core.filters import EntryFilter

                fill(client, dlq, "filtered", count, age_s=3600)
                group = dlq.groups("filtered", limit=1).groups[0].group
                flt = EntryFilter(group=group)
                action = redis_side(client, lambda: delete_matching("filtered", flt))
                report("filtered delete (one group)", pinger.measure(action), idle)
            else:
                print("filtered delete: DeadLetterQueue.delete_matching not on this branch yet")

            fill(client, dlq, "regroup", count, age_s=3600)
            action = redis_side(client, lambda: dlq.rebuild_groups("regroup"))
            report("regroup --rebuild", pinger.measure(action), idle)

            # Rows two hours old under a one-hour retention: the next read trims them all.
            short = DeadLetterQueue(client, retention=3600, max_entries=10**9)
            fill(client, short, "expired", count, age_s=7200)
            action = redis_side(client, lambda: short.size("expired"))
            report("retention trim on read", pinger.measure(action), idle)
        print("target: the longest PING during each phase <= 50 ms")


if __name__ == "__main__":
    main()
