"""active_tasks against a plain ``app.control.inspect().active()`` on the same busy cluster.

Run: python tests/benchmarks/bench_active_tasks.py [--workers 3] [--rounds 7]

A private redis-server and N prefork workers (each running two sleeping tasks) are started,
then both sides are timed in interleaved rounds in the same process. The baseline is what a
monitor usually does: one ``inspect(timeout=1.0)`` call (Celery's default), which listens until
a second passes without a reply. ``active_tasks`` does strictly more (a ping, then ``active``,
``registered`` and ``stats``, each addressed to the workers that answered). Target: at most
0.2x when every worker replies. Every process is stopped by pid at the end.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from celery import Celery

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from celery_morgue.core.zombies import active_tasks
from celery_morgue.tui.demo.processes import (
    ManagedProcess,
    RedisServer,
    celery_argv,
    group_pids,
    wait_for_workers,
)

REPO = Path(__file__).resolve().parents[2]

TASKS_PER_WORKER = 2


def start_workers(url: str, count: int, logs: Path) -> list[tuple[str, ManagedProcess]]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "MORGUE_TEST_BROKER": url}
    env["MORGUE_SPOOL_DIR"] = str(logs / "spool")
    workers = []
    for n in range(count):
        name = f"bench{n}@localhost"
        argv = celery_argv(
            "tests.workerapp",
            "worker",
            "-P",
            "prefork",
            "-c",
            str(TASKS_PER_WORKER),
            "-n",
            name,
            "--loglevel",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        )
        process = ManagedProcess(argv, env=env, cwd=REPO, log_path=logs / f"{name}.log")
        process.start()
        workers.append((name, process))
    return workers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    with RedisServer() as server, tempfile.TemporaryDirectory() as logs:
        app = Celery("bench-monitor", broker=server.url)
        app.conf.update(task_serializer="json", accept_content=["json"])
        workers = start_workers(server.url, args.workers, Path(logs))
        try:
            names = [name for name, _ in workers]
            wait_for_workers(app, names, [process for _, process in workers], timeout=60)
            for _ in range(args.workers * TASKS_PER_WORKER):
                app.send_task("tests.workerapp.sleep", args=[600])
            expected = args.workers * TASKS_PER_WORKER
            while len(active_tasks(app).tasks) < expected:
                time.sleep(0.2)

            ours: list[float] = []
            baseline: list[float] = []
            for _ in range(args.rounds):
                start = time.perf_counter()
                snapshot = active_tasks(app)
                ours.append(time.perf_counter() - start)
                if sorted(snapshot.workers) != sorted(names) or len(snapshot.tasks) != expected:
                    raise SystemExit(f"incomplete snapshot: {snapshot.as_dict()}")

                start = time.perf_counter()
                replies = app.control.inspect(timeout=1.0).active() or {}
                baseline.append(time.perf_counter() - start)
                if sum(len(tasks) for tasks in replies.values()) != expected:
                    raise SystemExit(f"incomplete inspect reply: {replies}")

            ours_median = statistics.median(ours)
            baseline_median = statistics.median(baseline)
            print(
                f"workers: {args.workers} prefork, {expected} running tasks; rounds: {args.rounds}"
            )
            print(f"active_tasks (ping + 3 addressed calls): {ours_median * 1000:7.1f} ms median")
            print(
                f"inspect().active() at timeout 1.0 s:     {baseline_median * 1000:7.1f} ms median"
            )
            print(f"ratio: {ours_median / baseline_median:.3f}x (target <= 0.2x)")
        finally:
            for _, process in workers:
                # SIGQUIT: a cold shutdown, the sleeping tasks need not finish.
                process.stop(sig=signal.SIGQUIT, timeout=15)
                leftover = group_pids(process.pid)
                if leftover:
                    print(f"left behind: {leftover}", file=sys.stderr)
            app.close()


if __name__ == "__main__":
    main()
