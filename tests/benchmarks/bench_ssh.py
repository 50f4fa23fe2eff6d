"""The UI left open and idle: bytes it writes to the terminal per second, and its CPU.

Run: python tests/benchmarks/bench_ssh.py [--queues 20] [--entries 1000] [--tasks 8] [--window 30]

What an operator leaving the dashboard open all day over a slow SSH link pays. A private
redis-server gets ``--queues`` dead-letter queues of ``--entries`` entries (one failure a minute,
the newest ``--newest`` seconds old, none arriving during the run) and two real prefork workers
run ``--tasks`` sleeping tasks. Once the tasks have run ``--task-age`` seconds (long-running
tasks, not ones just started), ``morgue --url ...`` runs in a pseudo-terminal of 100x30
(TERM=xterm-256color, COLORTERM=truecolor) at its default refresh; once it shows the data and
has settled, for ``--window`` seconds, we count

- the bytes it writes to the terminal, per second (target: at most 3,000 B/s);
- its CPU, utime + stime from /proc/PID/stat, as a share of one core (target: at most 5%).

Baselines in the same run and pseudo-terminal: ``top -d 2`` (a monitor people leave open, at
the UI's refresh) and the UI on an empty Redis (no queues, no workers: the UI's own floor).
``--lines`` also prints the bytes per screen line, to see which widget writes them.

Every process started (redis-servers, workers, the UIs, top) is stopped by pid at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import os
import re
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from celery import Celery

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from celery_morgue.core.dlq import DeadLetterQueue
from celery_morgue.core.entry import Entry
from celery_morgue.core.zombies import active_tasks
from celery_morgue.tui.demo.processes import (
    ManagedProcess,
    RedisServer,
    celery_argv,
    group_pids,
    pid_alive,
    wait_for_workers,
)

REPO = Path(__file__).resolve().parents[2]
COLUMNS, ROWS = 100, 30
BYTES_TARGET = 3000.0  # per second
CPU_TARGET = 0.05  # of one core
WORKERS = 2
TOP_DELAY = "2"  # the UI's default refresh, so both sides repaint as often
# Textual moves the cursor before every run of cells it writes: the line that follows is
# where those bytes go on screen.
CURSOR_TO = re.compile(rb"\x1b\[(\d+);(\d+)H")


@dataclass(frozen=True)
class Figures:
    bytes_per_s: float
    cpu_share: float
    by_line: dict[int, float]


class PtyProgram:
    """A program on its own pseudo-terminal of COLUMNS x ROWS; a thread records what it writes."""

    def __init__(self, argv: Sequence[str], env: dict[str, str]) -> None:
        self.argv = list(argv)
        self.env = env
        self.chunks: list[tuple[float, bytes]] = []
        self.process: subprocess.Popen[bytes] | None = None
        self._master = -1
        self._reader: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
        self.process = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=REPO,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            # The pty becomes the controlling terminal of the new session, as over SSH.
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        )
        os.close(slave)
        self._master = master
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self._master, 65536)
            except OSError:  # EIO: the program closed the terminal
                return
            if not data:
                return
            with self._lock:
                self.chunks.append((time.monotonic(), data))

    def output(self, since: float = 0.0, until: float = float("inf")) -> bytes:
        with self._lock:
            return b"".join(data for at, data in self.chunks if since <= at < until)

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        # utime and stime are fields 14 and 15 of stat(5); the split starts at field 3.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def wait_for(self, marker: bytes, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while marker not in self.output():
            if self.process is not None and self.process.poll() is not None:
                raise SystemExit(f"{self.argv[0]} exited: {self.output()[-2000:]!r}")
            if time.monotonic() > deadline:
                raise SystemExit(f"{marker!r} never shown by {self.argv}")
            time.sleep(0.1)

    def measure(self, settle: float, window: float) -> Figures:
        time.sleep(settle)
        started, cpu_before = time.monotonic(), self.cpu_seconds()
        time.sleep(window)
        ended, cpu_after = time.monotonic(), self.cpu_seconds()
        written = self.output(started, ended)
        elapsed = ended - started
        return Figures(
            bytes_per_s=len(written) / elapsed,
            cpu_share=(cpu_after - cpu_before) / elapsed,
            by_line={line: count / elapsed for line, count in bytes_by_line(written).items()},
        )

    def stop(self) -> None:
        if self.process is None:
            return
        pid = self.process.pid
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        for leftover in group_pids(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(leftover, signal.SIGKILL)
        if self._master >= 0:
            os.close(self._master)
            self._master = -1
        if self._reader is not None:
            self._reader.join(5)


def bytes_by_line(written: bytes) -> Counter[int]:
    """Bytes per screen line (1 is the top), by the cursor move before them; 0: no move yet."""
    counts: Counter[int] = Counter()
    line, start = 0, 0
    for move in CURSOR_TO.finditer(written):
        counts[line] += move.start() - start
        line, start = int(move.group(1)), move.start()
    counts[line] += len(written) - start
    return counts


def fill(url: str, queues: int, per_queue: int, newest: float, spacing: float) -> None:
    import redis

    client = redis.Redis.from_url(url)
    dlq = DeadLetterQueue(client, max_entries=max(per_queue, 1))
    now = time.time()
    for q in range(queues):
        queue = f"queue-{q:02d}"
        # Stored oldest first, so the newest failure is also the newest stream entry.
        dlq.add_many(
            Entry(
                task_id=f"{queue}-{n}",
                task="shop.tasks.charge_card",
                queue=queue,
                args=[n, "73.28"],
                kwargs={"currency": "EUR"},
                exception="PaymentDeclined",
                message=f"card declined for order {n}",
                traceback="Traceback (most recent call last):\nPaymentDeclined: card declined",
                retries=3,
                hostname="celery@worker-1",
                failed_at=dt.datetime.fromtimestamp(
                    now - newest - (per_queue - 1 - n) * spacing, dt.UTC
                ).isoformat(),
            )
            for n in range(per_queue)
        )
    client.close()


def start_workers(url: str, tasks: int, logs: Path, started: list[ManagedProcess]) -> Celery:
    """Workers running ``tasks`` sleeping tasks; each process goes into ``started`` at once."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "MORGUE_TEST_BROKER": url}
    env["MORGUE_SPOOL_DIR"] = str(logs / "spool")
    concurrency = max(1, -(-tasks // WORKERS))
    names = []
    for n in range(WORKERS):
        name = f"ssh{n}@localhost"
        argv = celery_argv(
            "tests.workerapp",
            "worker",
            "-P",
            "prefork",
            "-c",
            str(concurrency),
            "-n",
            name,
            # A queue each, so that every worker runs its share (one may prefetch more).
            "-Q",
            f"ssh{n}",
            "--loglevel",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        )
        process = ManagedProcess(argv, env=env, cwd=REPO, log_path=logs / f"{name}.log")
        started.append(process)
        process.start()
        names.append(name)
    app = Celery("bench-ssh", broker=url)
    app.conf.update(task_serializer="json", accept_content=["json"])
    wait_for_workers(app, names, started, timeout=60)
    for n in range(tasks):
        app.send_task("tests.workerapp.sleep", args=[3600], queue=f"ssh{n % WORKERS}")
    deadline = time.monotonic() + 60
    while (running := len(active_tasks(app).tasks)) < tasks:
        if time.monotonic() > deadline:
            app.close()
            raise SystemExit(f"only {running} of {tasks} tasks started")
        time.sleep(0.2)
    return app


def wait_until_tasks_aged(app: Celery, seconds: float) -> None:
    """Until every running task is ``seconds`` old: long-running tasks, not just started ones."""
    while True:
        ages = [task.age or 0.0 for task in active_tasks(app).tasks]
        if ages and min(ages) >= seconds:
            return
        time.sleep(1)


def run(
    argv: Sequence[str], marker: bytes, env: dict[str, str], args: argparse.Namespace
) -> Figures:
    program = PtyProgram(argv, env)
    try:
        program.start()
        program.wait_for(marker)
        return program.measure(args.settle, args.window)
    finally:
        program.stop()
        if pid_alive(program.pid):
            print(f"left behind: {program.pid}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queues", type=int, default=20)
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--window", type=float, default=30.0, help="seconds measured")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after the first paint")
    parser.add_argument("--newest", type=float, default=30.0, help="age of the newest failure")
    parser.add_argument(
        "--task-age", type=float, default=60.0, help="seconds the tasks run before measuring"
    )
    parser.add_argument("--spacing", type=float, default=60.0, help="seconds between failures")
    parser.add_argument("--lines", action="store_true", help="bytes per screen line too")
    args = parser.parse_args()

    with (
        RedisServer() as server,
        RedisServer() as empty,
        tempfile.TemporaryDirectory() as home,
    ):
        fill(server.url, args.queues, args.entries, args.newest, args.spacing)
        workers: list[ManagedProcess] = []
        env = {
            **os.environ,
            "TERM": "xterm-256color",
            "COLORTERM": "truecolor",
            "LANG": "C.UTF-8",
            # No profile of the user's: the URL alone, every setting at its default.
            "MORGUE_CONFIG": str(Path(home) / "none.toml"),
            "HOME": home,
        }
        morgue = [str(Path(sys.executable).with_name("morgue"))]
        try:
            app = start_workers(server.url, args.tasks, Path(home), workers)
            wait_until_tasks_aged(app, args.task_age)
            ui = run(
                [*morgue, "--url", server.url],
                f"Active tasks · {args.tasks}".encode(),
                env,
                args,
            )
            bare = run([*morgue, "--url", empty.url], b"No dead letters", env, args)
            top = run(["top", "-d", TOP_DELAY], b"load average", env, args)
            app.close()
        finally:
            for process in workers:
                # SIGQUIT: a cold shutdown, the sleeping tasks need not finish.
                process.stop(sig=signal.SIGQUIT, timeout=15)
                leftover = group_pids(process.pid)
                if leftover:
                    print(f"left behind: {leftover}", file=sys.stderr)

    print(
        f"{COLUMNS}x{ROWS}, {args.queues} queues x {args.entries:,} entries, {args.tasks} running "
        f"tasks, idle; {args.window:.0f} s window after {args.settle:.0f} s settling"
    )
    print(f"{'':<28} {'bytes/s':>9} {'CPU % of a core':>16}")
    for name, figures in (
        ("morgue", ui),
        ("morgue, empty Redis", bare),
        (f"top -d {TOP_DELAY}", top),
    ):
        print(f"{name:<28} {figures.bytes_per_s:>9,.0f} {figures.cpu_share * 100:>16.1f}")
    print()
    print(
        f"bytes: {ui.bytes_per_s:,.0f}/s (target <= {BYTES_TARGET:,.0f}: "
        f"{'met' if ui.bytes_per_s <= BYTES_TARGET else 'MISSED'}); "
        f"{ui.bytes_per_s / top.bytes_per_s:.2f}x top, "
        f"{ui.bytes_per_s / max(bare.bytes_per_s, 1.0):.2f}x the empty UI"
    )
    print(
        f"CPU: {ui.cpu_share * 100:.1f}% (target <= {CPU_TARGET * 100:.0f}%: "
        f"{'met' if ui.cpu_share <= CPU_TARGET else 'MISSED'}); "
        f"{ui.cpu_share / max(top.cpu_share, 1e-3):.1f}x top, "
        f"{ui.cpu_share / max(bare.cpu_share, 1e-3):.2f}x the empty UI"
    )
    if args.lines:
        print()
        print("bytes/s by screen line (1 is the top; 0 before the first cursor move):")
        for line in range(ROWS + 1):
            if ui.by_line.get(line) or bare.by_line.get(line):
                print(
                    f"  line {line:>2}: morgue {ui.by_line.get(line, 0.0):>7,.0f}  "
                    f"empty {bare.by_line.get(line, 0.0):>7,.0f}"
                )


if __name__ == "__main__":
    main()
