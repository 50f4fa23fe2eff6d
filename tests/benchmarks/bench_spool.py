"""Spool replay in a live worker: the event loop's longest stall and the memory it costs.

Run: python tests/benchmarks/bench_spool.py [--entries 100000]

A private broker Redis and a DLQ Redis are started, then a real prefork worker (tests/workerapp.py
plus a 50 ms repeating timer on its consumer's timer, the event loop's own, that records the
longest gap between its calls). With the DLQ Redis stopped, the worker's spool is filled with
``--entries`` entries (20 queues, so no queue's cap trims them); the DLQ Redis is started again
and the worker's spool drain replays them. Measured in the worker's main process, against a
second worker with an empty spool through the same outage in the same run:

- the longest gap of the 50 ms timer while the spool is replayed (target < 100 ms);
- peak RSS (VmHWM in /proc/<pid>/status) (target < +20 MB over the empty spool).

Every process started is stopped by pid at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

GAP_PERIOD = 0.05

# -- inside the worker (celery -A bench_spool) -----------------------------------------------

if os.environ.get("MORGUE_BENCH_GAPS"):
    from celery import bootsteps

    from tests.workerapp import app

    class GapTimer(bootsteps.StartStopStep):  # type: ignore[misc]
        """Calls itself every 50 ms on the consumer's timer; writes each second's longest gap."""

        def __init__(self, parent: Any, **kwargs: Any) -> None:
            super().__init__(parent, **kwargs)
            self.path = os.environ["MORGUE_BENCH_GAPS"]
            self.entry: Any = None
            self.last: float | None = None
            self.longest = 0.0
            self.window = time.time()

        def start(self, parent: Any) -> None:
            self.entry = parent.timer.call_repeatedly(GAP_PERIOD, self.tick)

        def tick(self) -> None:
            now = time.monotonic()
            if self.last is not None:
                self.longest = max(self.longest, now - self.last)
            self.last = now
            if time.time() - self.window >= 1.0:
                with open(self.path, "a") as handle:
                    record = {"at": time.time(), "gap": self.longest, "tick": longest_step[0]}
                    handle.write(json.dumps(record) + "\n")
                self.window, self.longest, longest_step[0] = time.time(), 0.0, 0.0

        def stop(self, parent: Any) -> None:
            if self.entry is not None:
                self.entry.cancel()

    app.steps["consumer"].add(GapTimer)

    from celery_morgue.core import spool_drain

    _step = spool_drain.SpoolDrain.step
    longest_step = [0.0]

    def timed_step(self: Any) -> float:
        """The drain's own tick, timed: the stall it adds to the event loop."""
        started = time.monotonic()
        try:
            return _step(self)
        finally:
            longest_step[0] = max(longest_step[0], time.monotonic() - started)

    spool_drain.SpoolDrain.step = timed_step  # type: ignore[method-assign]


# -- the benchmark ----------------------------------------------------------------------------


def vm_hwm_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def longest(path: Path, start: float, end: float, what: str = "gap") -> float:
    """The longest gap (or drain tick) in the one-second windows that overlap [start, end]."""
    values = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if start <= record["at"] <= end + 1.0:
            values.append(record[what])
    if not values:
        raise RuntimeError(f"no timer records between {start} and {end} in {path}")
    return max(values)


def run(entries: int, workdir: Path) -> None:
    import redis

    from celery_morgue.core.dlq import DeadLetterQueue
    from celery_morgue.core.spool import spool_for
    from celery_morgue.tui.demo.processes import (
        ManagedProcess,
        RedisServer,
        celery_argv,
        wait_for_workers,
    )
    from tests.helpers import make_entry

    broker = RedisServer()
    dlq_server = RedisServer()
    broker.start()
    dlq_server.start()
    workers: list[ManagedProcess] = []

    def start_worker(name: str) -> tuple[ManagedProcess, Path, Path]:
        spool_dir = workdir / f"spool-{name}"
        gaps = workdir / f"gaps-{name}.jsonl"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests" / "benchmarks")]),
            "MORGUE_TEST_BROKER": broker.url,
            "MORGUE_TEST_DLQ": dlq_server.url,
            "MORGUE_SPOOL_DIR": str(spool_dir),
            "MORGUE_BENCH_GAPS": str(gaps),
        }
        argv = celery_argv(
            "bench_spool",
            "worker",
            "-P",
            "prefork",
            "-c",
            "2",
            "-n",
            f"{name}@localhost",
            "--loglevel",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        )
        process = ManagedProcess(argv, env=env, cwd=REPO, log_path=workdir / f"{name}.log")
        process.start()
        workers.append(process)
        from celery import Celery

        control = Celery("bench-control", broker=broker.url)
        wait_for_workers(control, [f"{name}@localhost"], [process], 60)
        control.close()
        return process, spool_dir, gaps

    try:
        client = redis.Redis.from_url(dlq_server.url)
        dlq = DeadLetterQueue(client)
        queues = [f"q{n}" for n in range(20)]

        # The replay: fill the spool while the DLQ Redis is away, then bring it back.
        replaying, spool_dir, gaps = start_worker("replay")
        dlq_server.stop()
        spool = spool_for(spool_dir, dlq_server.url, "dlq:")
        print(f"filling the spool with {entries:,} entries...", flush=True)
        chunk = 5_000
        for start in range(0, entries, chunk):
            batch = [
                make_entry(f"t{n}", queue=queues[n % len(queues)])
                for n in range(start, min(entries, start + chunk))
            ]
            spool.append_many(batch)
        size = spool.disk_bytes()
        print(f"spool: {size / 1e6:.1f} MB in {spool.directory}", flush=True)
        time.sleep(3)  # the drain probes a Redis that is away, backing off
        dlq_server.start()
        client.connection_pool.disconnect()
        restarted = time.time()
        while sum(dlq.size(queue) for queue in queues) < entries:
            time.sleep(0.2)
            if time.time() - restarted > 900:
                raise RuntimeError("the spool was not replayed within 15 minutes")
        replayed = time.time()
        duration = replayed - restarted
        replay_gap = longest(gaps, restarted, replayed)
        replay_tick = longest(gaps, restarted, replayed, "tick")
        replay_rss = vm_hwm_kb(replaying.pid)
        replaying.stop()
        print(f"replayed in {duration:.1f} s ({entries / duration:,.0f} entries/s)", flush=True)

        # The baseline: the same outage with an empty spool, over the same time.
        client.flushall()
        idle, _, idle_gaps = start_worker("empty")
        dlq_server.stop()
        time.sleep(3)
        dlq_server.start()
        client.connection_pool.disconnect()
        restarted = time.time()
        time.sleep(duration + 1.5)
        idle_gap = longest(idle_gaps, restarted, restarted + duration)
        idle_rss = vm_hwm_kb(idle.pid)
        idle.stop()

        print(f"longest 50 ms timer gap, replaying: {replay_gap * 1000:7.1f} ms (target < 100)")
        print(f"longest 50 ms timer gap, empty:     {idle_gap * 1000:7.1f} ms")
        print(f"ratio replay / empty:               {replay_gap / idle_gap:7.2f}x")
        print(f"longest drain tick, replaying:      {replay_tick * 1000:7.1f} ms")
        print(f"peak RSS of the main process, replaying: {replay_rss / 1024:6.1f} MB")
        print(f"peak RSS of the main process, empty:     {idle_rss / 1024:6.1f} MB")
        print(
            f"delta:                                   {(replay_rss - idle_rss) / 1024:+6.1f} MB"
            " (target < +20)"
        )
    finally:
        for process in workers:
            process.stop()
        broker.close()
        dlq_server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=100_000)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-spool-") as workdir:
        run(options.entries, Path(workdir))


if __name__ == "__main__":
    main()
