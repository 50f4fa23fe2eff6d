"""`morgue metrics`: the Prometheus exporter against a real Redis and real prefork workers.

Every test reads the exporter as Prometheus would: over HTTP from a `morgue metrics` process,
or from `--once`, and parses the text with prometheus_client's own parser.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml
from prometheus_client.parser import text_string_to_metric_families

from celery_morgue.core.dlq import DeadLetterQueue
from celery_morgue.core.spool_state import SpoolState, state_key, write_spool_state
from celery_morgue.core.zombies import active_tasks
from celery_morgue.tui.demo.processes import ManagedProcess, RedisServer, free_port, group_pids
from tests.helpers import (
    REPO,
    Cluster,
    Morgue,
    add_entries,
    child_env,
    local_reaper,
    make_entry,
    wait_for,
    wait_for_entry,
)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

DOCUMENTED = {
    "morgue_up",
    "morgue_dlq_entries",
    "morgue_dlq_oldest_entry_age_seconds",
    "morgue_dlq_groups",
    "morgue_dlq_captured_total",
    "morgue_workers_up",
    "morgue_active_tasks",
    "morgue_zombie_tasks",
    "morgue_oldest_active_task_age_seconds",
    "morgue_reaper_revoked_total",
    "morgue_reaper_last_run_timestamp_seconds",
    "morgue_spool_pending_entries",
    "morgue_inspect_up",
}


def parse(text: str) -> tuple[Samples, dict[str, str]]:
    """Samples by (name, labels), and each family's HELP text by family name."""
    samples: Samples = {}
    helps: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        helps[family.name] = family.documentation
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples, helps


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def series(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: got for (each, labels), got in samples.items() if each == name}


class Exporter:
    """A `morgue --url URL metrics` process on a free port, stopped by pid."""

    def __init__(self, url: str, tmp_path: Path, *args: str) -> None:
        self.port = free_port()
        config = tmp_path / "config.toml"
        self.process = ManagedProcess(
            Morgue(config).argv(["--url", url, "metrics", "--port", str(self.port), *args]),
            env=child_env(config),
            cwd=REPO,
            log_path=tmp_path / f"exporter-{self.port}.log",
        )

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def scrape(self) -> Samples:
        status, text = self.get("/metrics")
        assert status == 200, text
        return parse(text)[0]

    def start(self) -> None:
        self.process.start()

        def answers() -> bool:
            with contextlib.suppress(OSError):
                return self.get("/healthz")[0] in (200, 503)
            assert self.process.running(), self.process.log_tail()
            return False

        wait_for(answers, timeout=30)

    def stop(self) -> None:
        pid = self.process.pid
        self.process.stop()
        assert not group_pids(pid), "exporter processes left behind"


@pytest.fixture
def exporters(tmp_path: Path) -> Iterator[list[Exporter]]:
    started: list[Exporter] = []
    yield started
    for exporter in started:
        exporter.stop()


def start_exporter(started: list[Exporter], url: str, tmp_path: Path, *args: str) -> Exporter:
    exporter = Exporter(url, tmp_path, *args)
    exporter.start()
    started.append(exporter)
    return exporter


def once(morgue: Morgue, url: str) -> Samples:
    result = morgue("--url", url, "metrics", "--once")
    assert result.returncode == 0, result.stderr
    return parse(result.stdout)[0]


# -- against workers ----------------------------------------------------------------------------


@pytest.mark.slow
def test_every_metric_is_what_redis_and_inspect_say_through_capture_delete_requeue_and_reap(
    cluster: Cluster, exporters: list[Exporter], tmp_path: Path
) -> None:
    worker = cluster.worker(concurrency=3)
    dlq = DeadLetterQueue(cluster.client)
    failed = [cluster.send(worker, "boom", f"boom {n}")[0] for n in range(3)]
    rejected, _ = cluster.send(worker, "reject_for_good")
    entries = [wait_for_entry(dlq, "celery", task_id) for task_id in failed]
    wait_for_entry(dlq, "celery", rejected)
    zombie, _ = cluster.send(worker, "sleep", 120)
    cluster.wait_older_than(zombie, 4.5)

    exporter = start_exporter(
        exporters,
        cluster.redis.url,
        tmp_path,
        "--hard-limit",
        "3",
        "--grace",
        "1",
        "--inspect-interval",
        "1",
    )

    def zombie_seen() -> Samples | None:
        samples = exporter.scrape()
        return samples if value(samples, "morgue_zombie_tasks", worker=worker.name) else None

    samples = wait_for(zombie_seen, timeout=30)
    assert isinstance(samples, dict)
    served = {name for name, _ in samples}
    (info,) = dlq.queues()
    assert value(samples, "morgue_up") == 1
    assert value(samples, "morgue_dlq_entries", queue="celery") == info.total == 4
    assert value(samples, "morgue_dlq_groups", queue="celery") == info.groups == 2
    # A task that raises Reject fails through task_failure: "failed" too.
    assert series(samples, "morgue_dlq_captured_total") == {
        (("queue", "celery"), ("reason", "failed")): 4
    }
    age = value(samples, "morgue_dlq_oldest_entry_age_seconds", queue="celery")
    assert info.oldest is not None and age is not None
    now = dt.datetime.now(dt.UTC)
    assert 0 <= age <= (now - info.oldest).total_seconds() + 1
    snapshot = active_tasks(cluster.app, hard_limit=3, grace=1)
    assert value(samples, "morgue_workers_up") == len(snapshot.workers) == 1
    assert value(samples, "morgue_active_tasks", worker=worker.name) == len(snapshot.tasks) == 1
    assert value(samples, "morgue_zombie_tasks", worker=worker.name) == len(snapshot.zombies)
    oldest = value(samples, "morgue_oldest_active_task_age_seconds", worker=worker.name)
    assert oldest is not None and oldest > 4.5
    assert series(samples, "morgue_reaper_revoked_total") == {}
    assert value(samples, "morgue_reaper_last_run_timestamp_seconds") is None

    # A delete lowers the gauge, never the counter.
    dlq.delete("celery", entries[0].id)
    samples = wait_for(
        lambda: (
            (s := exporter.scrape()) and value(s, "morgue_dlq_entries", queue="celery") == 3 and s
        ),
        timeout=10,
    )
    assert value(samples, "morgue_dlq_captured_total", queue="celery", reason="failed") == 4

    # A requeued entry leaves; its task fails again and comes back as a new capture.
    dlq.requeue(worker.control_app, "celery", entries[1].id)
    samples = wait_for(
        lambda: (
            (s := exporter.scrape())
            and value(s, "morgue_dlq_captured_total", queue="celery", reason="failed") == 5
            and s
        ),
        timeout=20,
    )
    assert value(samples, "morgue_dlq_entries", queue="celery") == dlq.size("celery") == 3

    # A reap: the zombie ends and is captured as terminated; the counter and the run time are
    # the report's.
    report = cluster.cleanup(hard_limit=3, grace=1)
    assert report["zombies"] and report["signals"]["SIGTERM"]["terminated"] == [zombie]  # type: ignore[index]
    ran_at = dt.datetime.fromisoformat(str(report["ran_at"])).timestamp()
    reaped_by = time.time()
    samples = wait_for(
        lambda: (
            (s := exporter.scrape())
            and value(s, "morgue_zombie_tasks", worker=worker.name) == 0
            and s
        ),
        timeout=20,
    )
    assert value(samples, "morgue_reaper_revoked_total", signal="SIGTERM") == 1
    last_run = value(samples, "morgue_reaper_last_run_timestamp_seconds")
    assert last_run is not None and ran_at <= last_run <= reaped_by
    # Every documented metric was served, with samples (no host reported a spool here).
    served |= {name for name, _ in samples}
    assert served >= DOCUMENTED - {"morgue_spool_pending_entries"}
    assert value(samples, "morgue_active_tasks", worker=worker.name) == 0


# -- against Redis alone ------------------------------------------------------------------------


def test_every_metric_has_help_and_follows_the_naming_rules(
    redis_client: redis.Redis, redis_server: RedisServer, morgue: Morgue
) -> None:
    add_entries(DeadLetterQueue(redis_client), "celery", 2)
    result = morgue("--url", redis_server.url, "metrics", "--once")
    assert result.returncode == 0, result.stderr
    _, helps = parse(result.stdout)
    # No workers and no reaper run here: those families are announced, with their help text.
    assert {f"{name}_total" if name + "_total" in DOCUMENTED else name for name in helps} == (
        DOCUMENTED
    )
    for family, text in helps.items():
        assert text.endswith("."), family


def test_the_captured_counter_survives_exporter_restarts_and_clears(
    redis_client: redis.Redis, redis_server: RedisServer, morgue: Morgue
) -> None:
    dlq = DeadLetterQueue(redis_client)
    add_entries(dlq, "celery", 3)
    first = once(morgue, redis_server.url)
    assert value(first, "morgue_dlq_captured_total", queue="celery", reason="failed") == 3
    dlq.clear("celery")
    again = make_entry(queue="celery")
    assert dlq.add(again) is not None
    assert dlq.add(again) is None  # the same failure twice is stored once, and counted once
    second = once(morgue, redis_server.url)  # a new exporter process: nothing kept locally
    assert value(second, "morgue_dlq_captured_total", queue="celery", reason="failed") == 4
    assert value(second, "morgue_dlq_entries", queue="celery") == 1


def test_a_queue_name_with_colons_and_quotes_is_one_labelled_series(
    redis_client: redis.Redis, redis_server: RedisServer, morgue: Morgue
) -> None:
    queue = 'odd:queue "x"\\y'
    add_entries(DeadLetterQueue(redis_client), queue, 1)
    samples = once(morgue, redis_server.url)
    assert value(samples, "morgue_dlq_captured_total", queue=queue, reason="failed") == 1
    assert value(samples, "morgue_dlq_entries", queue=queue) == 1


@pytest.mark.redis
def test_a_scrape_with_redis_down_says_morgue_up_0_and_healthz_503(
    exporters: list[Exporter], tmp_path: Path
) -> None:
    secret = "s3cret-pw"  # noqa: S105 - the test's own server
    with RedisServer(persistent=True, password=secret) as server:
        client = redis.Redis.from_url(server.url, password=secret)
        add_entries(DeadLetterQueue(client), "celery", 2)
        client.close()
        url = f"redis://:{secret}@127.0.0.1:{server.port}/0"
        exporter = start_exporter(exporters, url, tmp_path)
        assert exporter.get("/healthz") == (200, "ok\n")
        assert value(exporter.scrape(), "morgue_dlq_entries", queue="celery") == 2

        server.stop()
        status, text = exporter.get("/metrics")
        assert status == 200
        samples = parse(text)[0]
        assert value(samples, "morgue_up") == 0
        assert series(samples, "morgue_dlq_entries") == {}
        status, body = exporter.get("/healthz")
        assert status == 503 and body.startswith("Redis: ")
        assert secret not in body and secret not in exporter.process.log_tail()

        server.start()  # the same port, the data kept: the exporter finds it by itself
        wait_for(lambda: exporter.get("/healthz")[0] == 200, timeout=20)
        assert value(exporter.scrape(), "morgue_dlq_entries", queue="celery") == 2
    assert exporter.get("/nope")[0] == 404


def test_once_against_an_unreachable_redis_prints_morgue_up_0(morgue: Morgue) -> None:
    samples = once(morgue, f"redis://:pw@127.0.0.1:{free_port()}/0")
    assert value(samples, "morgue_up") == 0
    assert value(samples, "morgue_inspect_up") == 0


@pytest.mark.redis
def test_it_listens_on_loopback_by_default(
    exporters: list[Exporter], tmp_path: Path, redis_server: RedisServer
) -> None:
    exporter = start_exporter(exporters, redis_server.url, tmp_path)
    wait_for(lambda: "serving http://127.0.0.1:" in exporter.process.log_tail(), timeout=10)
    listening = Path("/proc/net/tcp").read_text().splitlines()[1:]
    port = f"{exporter.port:04X}"
    local = [line.split()[1] for line in listening if line.split()[3] == "0A"]  # LISTEN
    assert f"0100007F:{port}" in local
    assert f"00000000:{port}" not in local


# -- the alert rules ----------------------------------------------------------------------------


def test_the_alert_rules_load_and_name_only_metrics_the_exporter_serves(
    morgue: Morgue, tmp_path: Path
) -> None:
    result = morgue("metrics", "--rules")
    assert result.returncode == 0, result.stderr
    rules = yaml.safe_load(result.stdout)
    (group,) = rules["groups"]
    alerts = {rule["alert"]: rule for rule in group["rules"]}
    assert set(alerts) == {
        "MorgueDeadLetterQueueGrowing",
        "MorgueZombieTask",
        "MorgueReaperNotRunning",
        "MorgueExporterBlind",
    }
    for rule in alerts.values():
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        used = {word for word in _words(rule["expr"]) if word.startswith("morgue_")}
        assert used and used <= DOCUMENTED, used
    assert alerts["MorgueZombieTask"]["for"] == "10m"
    promtool = shutil.which("promtool")
    if promtool is not None:
        path = tmp_path / "rules.yml"
        path.write_text(result.stdout)
        checked = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True)
        assert checked.returncode == 0, checked.stdout + checked.stderr


def _words(expr: str) -> set[str]:
    return set("".join(ch if ch.isalnum() or ch == "_" else " " for ch in expr).split())


# -- a read-only ACL user -----------------------------------------------------------------------

# Reads of the DLQ's keys, and nothing that writes: what the exporter needs of Redis.
READ_ONLY_RULES = (
    "~dlq:* ~dlq@* resetchannels -@all +ping +time +hgetall +hlen +xlen +xrange +zrange"
)


@pytest.mark.redis
def test_a_read_only_acl_user_is_enough_for_the_exporter(morgue: Morgue) -> None:
    with RedisServer() as server:
        admin = redis.Redis.from_url(server.url)
        dlq = DeadLetterQueue(admin)
        add_entries(dlq, "celery", 3)
        # A host whose spool report expired: readers forget it, a read-only one reads past it.
        write_spool_state(admin, "dlq:", SpoolState(host="gone", path="/s", pending=4), ttl=1)
        write_spool_state(admin, "dlq:", SpoolState(host="here", path="/s", pending=2))
        admin.execute_command(
            "ACL", "SETUSER", "watcher", "on", ">watch-pw", *READ_ONLY_RULES.split()
        )
        wait_for(lambda: not admin.exists(state_key("dlq:", "gone", "/s")), timeout=10)
        url = f"redis://watcher:watch-pw@127.0.0.1:{server.port}/0"
        samples = once(morgue, url)
        assert value(samples, "morgue_up") == 1
        assert value(samples, "morgue_dlq_entries", queue="celery") == 3
        assert value(samples, "morgue_dlq_captured_total", queue="celery", reason="failed") == 3
        assert series(samples, "morgue_spool_pending_entries") == {(("host", "here"),): 2}
        # The workers could not be asked as this user (no broadcast): said, not an error.
        assert value(samples, "morgue_inspect_up") == 0
        assert admin.zcard("dlq@spools") == 2  # nothing was written
        admin.close()


def test_a_reaper_run_that_cannot_reach_the_broker_is_not_a_run(
    redis_client: redis.Redis, redis_server: RedisServer, morgue: Morgue, tmp_path: Path
) -> None:
    unreachable = f"redis://127.0.0.1:{free_port()}/0"
    report = local_reaper(unreachable, redis_server.url, tmp_path / "spool", inspect_timeout=0.5)
    assert report.run().errors  # it says why, and returns
    samples = once(morgue, redis_server.url)
    assert value(samples, "morgue_reaper_last_run_timestamp_seconds") is None
    reached = local_reaper(redis_server.url, redis_server.url, tmp_path / "spool2").run()
    assert not reached.errors
    samples = once(morgue, redis_server.url)
    assert value(samples, "morgue_reaper_last_run_timestamp_seconds") is not None
