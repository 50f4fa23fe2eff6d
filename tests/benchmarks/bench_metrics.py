"""Exporter benchmark: the time of one `/metrics` scrape with 20 queues of 100,000 entries,
against 20 queues of 10 entries, in the same run; and the exporter's peak memory.

Run: python tests/benchmarks/bench_metrics.py [--queues 20] [--entries 100000] [--scrapes 60]

Two private redis-servers are filled by a Lua loop (rows as the capture script writes them,
one a millisecond, the queue indexed with its retention); the fill is not measured. A real
`morgue --url URL metrics` process serves each, and each is scraped over HTTP, the two in
turn so that machine noise falls on both alike. The figure is the median scrape; the ratio
holds on a noisy machine even when the absolute figures move. Peak memory is the large
exporter's VmHWM.
Targets: the large scrape at most 1.2x the small one; peak RSS under 60 MB.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from celery_morgue.core.dlq import DeadLetterQueue
from celery_morgue.tui.demo.processes import ManagedProcess, RedisServer, free_port

RATIO_TARGET = 1.2
RSS_TARGET_MB = 60
FILL_BATCH = 20_000
# KEYS: stream, groups.  ARGV: first row, rows, first id ms.
FILL = """
for n = tonumber(ARGV[1]), tonumber(ARGV[1]) + tonumber(ARGV[2]) - 1 do
  local id = (tonumber(ARGV[3]) + n) .. '-0'
  redis.call('XADD', KEYS[1], id, 'task_id', 't-' .. n, 'group', 'g' .. (n % 5), 'entry', '{}')
end
for g = 0, 4 do redis.call('HINCRBY', KEYS[2], 'g' .. g, tonumber(ARGV[2]) / 5) end
return 1
"""


def fill(url: str, queues: int, entries: int) -> None:
    client = redis.Redis.from_url(url)
    dlq = DeadLetterQueue(client)
    loader = client.register_script(FILL)
    start_ms = int(time.time() * 1000) - entries - 60_000
    for q in range(queues):
        name = f"queue-{q:02d}"
        for first in range(0, entries, FILL_BATCH):
            rows = min(FILL_BATCH, entries - first)
            loader(keys=[dlq.key(name), dlq.groups_key(name)], args=[first, rows, start_ms])
        client.hset(dlq.index_key, name, 7 * 24 * 3600 * 1000)
    client.close()


class Exporter:
    def __init__(self, url: str, log: Path) -> None:
        self.port = free_port()
        argv = [sys.executable, "-m", "celery_morgue.tui.cli", "--url", url, "metrics"]
        self.process = ManagedProcess([*argv, "--port", str(self.port)], log_path=log)

    def start(self) -> None:
        self.process.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                self.scrape()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"exporter did not start: {self.process.log_tail()}")

    def scrape(self) -> float:
        began = time.perf_counter()
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=30) as r:
            body = r.read()
        elapsed = time.perf_counter() - began
        assert b"morgue_up 1.0" in body, body[:200]
        return elapsed

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queues", type=int, default=20)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--scrapes", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, RedisServer() as small, RedisServer() as large:
        began = time.monotonic()
        fill(small.url, args.queues, 10)
        fill(large.url, args.queues, args.entries)
        print(f"filled {args.queues} x {args.entries:,} in {time.monotonic() - began:.1f} s")
        exporters = {
            "small": Exporter(small.url, Path(tmp) / "small.log"),
            "large": Exporter(large.url, Path(tmp) / "large.log"),
        }
        try:
            for exporter in exporters.values():
                exporter.start()
            times: dict[str, list[float]] = {name: [] for name in exporters}
            for _ in range(args.scrapes):
                for name, exporter in exporters.items():
                    times[name].append(exporter.scrape())
            medians = {name: statistics.median(values) for name, values in times.items()}
            rss = exporters["large"].peak_rss_mb()
        finally:
            for exporter in exporters.values():
                exporter.process.stop()
    ratio = medians["large"] / medians["small"]
    print(f"scrape, {args.queues} x 10 entries:       {medians['small'] * 1000:7.2f} ms (median)")
    print(f"scrape, {args.queues} x {args.entries:,} entries: {medians['large'] * 1000:7.2f} ms")
    print(f"ratio: {ratio:.2f}x (target <= {RATIO_TARGET}x)")
    print(f"exporter peak RSS: {rss:.1f} MB (target < {RSS_TARGET_MB} MB)")
    ok = ratio <= RATIO_TARGET and rss < RSS_TARGET_MB
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
