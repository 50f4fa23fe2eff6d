"""First paint and memory of the UI: 20 queues of 100,000 entries against small and empty DLQs.

Run:  python tests/benchmarks/bench_tui.py [--queues 20] [--entries 100000]

Starts its own redis-server, fills three DLQs under three prefixes (empty, 10 entries per queue,
``--entries`` per queue) with ``DeadLetterQueue.add_many`` (pipelined), then for each one runs
the app headless (``App.run_test``) in a fresh interpreter and reports:

- first paint: from constructing the app to the queue list, the visible queue's entries and the
  active-tasks pane all filled (target: under 1 s);
- resident memory (VmRSS) once painted and after a few refreshes (target: the big DLQ within
  30 MB of the empty one).

Figures are printed with their ratio / difference to the baselines of the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

PAINT_TARGET = 1.0  # seconds
MEMORY_TARGET = 30.0  # MB above the empty DLQ
REFRESHES_BEFORE_MEMORY = 3


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


# -- the measured side: one app in a fresh interpreter -----------------------------------------


def measure(url: str, prefix: str) -> dict[str, float]:
    from textual.pilot import Pilot

    from celery_morgue.tui.app import MorgueApp
    from celery_morgue.tui.profiles import Profile

    before_app = rss_mb()
    profile = Profile(name="bench", url=url, prefix=prefix, refresh=0.5, inspect_timeout=0.5)
    result: dict[str, float] = {"rss_before_app_mb": before_app}

    def painted(app: MorgueApp) -> bool:
        board = app.dashboard
        if board.status_line.status.connected is not True:
            return False
        if board.tasks_pane.snapshot is None and board.tasks_pane.error is None:
            return False
        if not board.queue_list.names:
            return True  # an empty DLQ: the refresh that said so is the paint
        pane = board.visible_pane
        return pane is not None and pane.table.row_count > 0

    async def main() -> None:
        started = time.perf_counter()
        app = MorgueApp(profile)
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: painted(app))
            result["first_paint_s"] = time.perf_counter() - started
            result["rss_painted_mb"] = rss_mb()
            board = app.dashboard
            pane = board.visible_pane
            result["rows_loaded"] = float(len(pane.order)) if pane is not None else 0.0
            result["queues"] = float(len(board.queue_list.names))
            for _ in range(REFRESHES_BEFORE_MEMORY):
                stamp = board.status_line.status.refreshed_at
                await until(pilot, lambda s=stamp: board.status_line.status.refreshed_at != s)
            result["rss_steady_mb"] = rss_mb()

    async def until(pilot: Pilot[None], predicate: object, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():  # type: ignore[operator]
            if time.monotonic() > deadline:
                raise TimeoutError("the app did not paint")
            await pilot.pause(0.005)

    asyncio.run(main())
    return result


# -- the driving side -----------------------------------------------------------------------


def fill(url: str, prefix: str, queues: int, per_queue: int) -> float:
    import redis

    from celery_morgue.core.dlq import DeadLetterQueue
    from celery_morgue.core.entry import Entry

    client = redis.Redis.from_url(url)
    dlq = DeadLetterQueue(client, prefix=prefix, max_entries=max(per_queue, 1))
    traceback = (
        "Traceback (most recent call last):\n"
        '  File "/srv/app/tasks.py", line 42, in charge\n'
        "    gateway.charge(order)\n"
        '  File "/srv/app/gateway.py", line 7, in charge\n'
        "    raise PaymentDeclined(order)\n"
        "PaymentDeclined: card declined"
    )
    now = dt.datetime.now(dt.UTC).isoformat()
    started = time.perf_counter()
    chunk = 5000
    for q in range(queues):
        queue = f"queue-{q:02d}"
        for start in range(0, per_queue, chunk):
            count = min(chunk, per_queue - start)
            dlq.add_many(
                Entry(
                    task_id=f"{prefix}{queue}-{n}",
                    task="shop.tasks.charge_card",
                    queue=queue,
                    args=[n, "73.28"],
                    kwargs={"currency": "EUR"},
                    exception="PaymentDeclined",
                    message=f"card declined for order {n}",
                    traceback=traceback,
                    retries=3,
                    hostname="celery@worker-1",
                    failed_at=now,
                )
                for n in range(start, start + count)
            )
    client.close()
    return time.perf_counter() - started


def run_child(url: str, prefix: str) -> dict[str, float]:
    completed = subprocess.run(
        [sys.executable, __file__, "--child", url, prefix],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        timeout=300,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"measurement failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queues", type=int, default=20)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3, help="measurements per case (median)")
    parser.add_argument("--child", nargs=2, metavar=("URL", "PREFIX"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child)))
        return

    from celery_morgue.tui.demo.processes import RedisServer

    cases = [("empty", "bench-empty:", 0), ("small", "bench-small:", 10)]
    cases.append(("big", "bench-big:", args.entries))
    with RedisServer() as server:
        for name, prefix, per_queue in cases:
            if per_queue:
                took = fill(server.url, prefix, args.queues, per_queue)
                total = args.queues * per_queue
                shape = f"{args.queues} queues x {per_queue:,} = {total:,}"
                print(f"filled {name}: {shape} in {took:.1f} s")
        results: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in cases}
        # Interleaved rounds, so a busy moment of the machine does not favour one case.
        for _ in range(args.rounds):
            for name, prefix, _ in cases:
                results[name].append(run_child(server.url, prefix))

    def median(name: str, key: str) -> float:
        values = sorted(run[key] for run in results[name])
        return values[len(values) // 2]

    print()
    print(
        f"{'case':<6} {'queues':>6} {'rows':>5} {'paint s':>8} {'RSS painted MB':>15} "
        f"{'RSS steady MB':>14}"
    )
    for name, _, _ in cases:
        print(
            f"{name:<6} {median(name, 'queues'):>6.0f} {median(name, 'rows_loaded'):>5.0f} "
            f"{median(name, 'first_paint_s'):>8.3f} {median(name, 'rss_painted_mb'):>15.1f} "
            f"{median(name, 'rss_steady_mb'):>14.1f}"
        )
    paint_big = median("big", "first_paint_s")
    paint_small = median("small", "first_paint_s")
    memory_delta = median("big", "rss_steady_mb") - median("empty", "rss_steady_mb")
    print()
    print(
        f"first paint, big: {paint_big:.3f} s (target < {PAINT_TARGET:.1f} s: "
        f"{'met' if paint_big < PAINT_TARGET else 'MISSED'}); "
        f"big / small = {paint_big / paint_small:.2f}"
    )
    print(
        f"memory, big - empty: {memory_delta:+.1f} MB (target within {MEMORY_TARGET:.0f} MB: "
        f"{'met' if abs(memory_delta) <= MEMORY_TARGET else 'MISSED'})"
    )


if __name__ == "__main__":
    main()
