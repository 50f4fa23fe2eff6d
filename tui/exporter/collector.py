"""The metric families of one scrape, with their HELP text.

Names follow Prometheus conventions: units in the name, ``_total`` for counters. A scrape
whose Redis read fails still answers, with ``morgue_up 0`` and no DLQ series: Prometheus then
sees the outage instead of a failed scrape.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from celery_morgue.core.wording import one_line
from celery_morgue.core.zombies import ClusterSnapshot
from celery_morgue.tui.exporter.readings import REDIS_ERRORS, ClusterWatch, DLQReading

Family = GaugeMetricFamily | CounterMetricFamily


@dataclass
class RedisHealth:
    """What the last check of Redis found: ``/healthz`` answers from it."""

    up: bool = False
    error: str | None = None


class MorgueCollector(Collector):
    def __init__(
        self, read: Callable[[], DLQReading], cluster: ClusterWatch, health: RedisHealth
    ) -> None:
        self.read = read
        self.cluster = cluster
        self.health = health

    def collect(self) -> Iterator[Family]:
        reading: DLQReading | None
        try:
            reading = self.read()
        except REDIS_ERRORS as exc:
            reading = None
            self.health.error = one_line(str(exc)) or type(exc).__name__
        else:
            self.health.error = None
        self.health.up = reading is not None
        up = GaugeMetricFamily("morgue_up", "1 when the DLQ's Redis answered this scrape.")
        up.add_metric([], 1 if reading is not None else 0)
        yield up
        if reading is not None:
            yield from dlq_families(reading)
        snapshot = self.cluster.fresh()
        inspected = GaugeMetricFamily(
            "morgue_inspect_up",
            "1 when the workers were asked within the last two inspect intervals.",
        )
        inspected.add_metric([], 1 if snapshot is not None else 0)
        yield inspected
        if snapshot is not None:
            yield from cluster_families(snapshot, time.time())


def dlq_families(reading: DLQReading) -> Iterator[Family]:
    entries = GaugeMetricFamily(
        "morgue_dlq_entries",
        "Entries in the dead-letter queue now (rows past retention count until trimmed).",
        labels=["queue"],
    )
    oldest = GaugeMetricFamily(
        "morgue_dlq_oldest_entry_age_seconds",
        "Seconds since the oldest entry of the queue was captured.",
        labels=["queue"],
    )
    groups = GaugeMetricFamily(
        "morgue_dlq_groups", "Distinct failure groups in the queue.", labels=["queue"]
    )
    for gauge in reading.queues:
        entries.add_metric([gauge.queue], gauge.entries)
        groups.add_metric([gauge.queue], gauge.groups)
        if gauge.oldest_age is not None:
            oldest.add_metric([gauge.queue], gauge.oldest_age)
    captured = CounterMetricFamily(
        "morgue_dlq_captured",
        "Entries ever stored in the DLQ, by queue and reason; kept in Redis by the capture "
        "script, so it survives restarts.",
        labels=["queue", "reason"],
    )
    for (queue, reason), count in sorted(reading.captured.items()):
        captured.add_metric([queue, reason], count)
    revoked = CounterMetricFamily(
        "morgue_reaper_revoked",
        "Revokes by the reaper that ended a zombie task, by signal (dry runs not counted).",
        labels=["signal"],
    )
    for signal, count in sorted(reading.reaper.revoked.items()):
        revoked.add_metric([signal], count)
    last_run = GaugeMetricFamily(
        "morgue_reaper_last_run_timestamp_seconds",
        "When the reaper last finished a run that reached the workers (Unix time); absent "
        "before the first.",
    )
    if reading.reaper.last_run_at is not None:
        last_run.add_metric([], reading.reaper.last_run_at)
    spool = GaugeMetricFamily(
        "morgue_spool_pending_entries",
        "Entries waiting in a host's local spool for Redis, as its worker last reported.",
        labels=["host"],
    )
    for host, pending in sorted(reading.spool_pending.items()):
        spool.add_metric([host], pending)
    yield from (entries, oldest, groups, captured, revoked, last_run, spool)


def cluster_families(snapshot: ClusterSnapshot, now: float) -> Iterator[Family]:
    # Ages grow between inspections: add the time since the snapshot was taken.
    since = max(0.0, now - snapshot.taken_at.timestamp())
    workers_up = GaugeMetricFamily(
        "morgue_workers_up", "Workers that answered the last inspection."
    )
    workers_up.add_metric([], len(snapshot.workers))
    active = GaugeMetricFamily(
        "morgue_active_tasks", "Tasks the worker is running.", labels=["worker"]
    )
    zombies = GaugeMetricFamily(
        "morgue_zombie_tasks",
        "Tasks running past the hard limit their worker enforces, plus grace.",
        labels=["worker"],
    )
    oldest = GaugeMetricFamily(
        "morgue_oldest_active_task_age_seconds",
        "Seconds the worker's oldest running task has run.",
        labels=["worker"],
    )
    for worker in snapshot.workers:
        tasks = [task for task in snapshot.tasks if task.worker == worker]
        active.add_metric([worker], len(tasks))
        zombies.add_metric([worker], sum(1 for task in tasks if task.zombie))
        ages = [task.age for task in tasks if task.age is not None]
        if ages:
            oldest.add_metric([worker], max(ages) + since)
    yield from (workers_up, active, zombies, oldest)
