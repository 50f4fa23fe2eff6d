"""Redis Sentinel: kombu's ``sentinel://`` spelling wherever a Redis URL is taken, and a DLQ
that keeps every failure, exactly once, through a failover (master SIGKILLed, replica
promoted)."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.sentinel
from celery import Celery
from textual.pilot import Pilot

from celery_morgue import core
from celery_morgue.core import DeadLetterQueue
from celery_morgue.core.capture import FailureCapture
from celery_morgue.core.options import Options
from celery_morgue.core.sentinel import parse_sentinel_url
from celery_morgue.core.urls import RedisURLError, connect, redact_url, resolve_redis_url
from celery_morgue.tui.app import MorgueApp
from celery_morgue.tui.connection import connect_profile
from celery_morgue.tui.demo.processes import SentinelGroup, group_pids
from celery_morgue.tui.profiles import ProfileError, validate_profile_fields
from tests.helpers import (
    Morgue,
    Worker,
    add_entries,
    celery_morgue,
    child_env,
    make_entry,
    open_queue,
    pane,
    profile_for,
    screen_text,
    until,
    wait_for,
    with_app,
)

SENTINELS = "sentinel://:datapw@10.0.0.1:26379/2;sentinel://10.0.0.2:26380;sentinel://10.0.0.3"


def app_with(**conf: Any) -> Celery:
    app = Celery("proj", set_as_current=False)
    app.conf.update(**conf)
    return app


# -- where the URL and the master name come from (no servers) --------------------------------


def test_a_sentinel_broker_is_the_dlq_with_the_master_name_of_its_transport_options() -> None:
    app = app_with(
        broker_url=SENTINELS,
        broker_transport_options={
            "master_name": "mymaster",
            "sentinel_kwargs": {"password": "sentpw"},
        },
    )
    target = parse_sentinel_url(resolve_redis_url(app))
    assert target.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26380), ("10.0.0.3", 26379))
    assert target.master_name == "mymaster"
    # As kombu: the URL's password and db are the data Redis's; sentinel_kwargs the Sentinels'.
    assert (target.password, target.db) == ("datapw", 2)
    assert target.sentinel_password == "sentpw"  # noqa: S105 - the test's own


def test_every_spelling_of_a_sentinel_dlq_resolves() -> None:
    options = {"master_name": "m"}
    as_list = app_with(
        broker_url=["sentinel://h1:1", "sentinel://h2:2"], broker_transport_options=options
    )
    assert parse_sentinel_url(resolve_redis_url(as_list)).sentinels == (("h1", 1), ("h2", 2))
    backend = app_with(
        broker_url="amqp://guest@rabbit//",
        result_backend="sentinel://h1:1;sentinel://h2:2",
        result_backend_transport_options={"master_name": "results"},
        broker_transport_options={"master_name": "not-this-one"},
    )
    assert parse_sentinel_url(resolve_redis_url(backend)).master_name == "results"
    plain = app_with(broker_url="amqp://guest@rabbit//")
    explicit = resolve_redis_url(plain, "sentinel://h1:1;sentinel://h2:2?master_name=q")
    assert parse_sentinel_url(explicit).master_name == "q"
    from_broker_options = app_with(broker_url=SENTINELS, broker_transport_options=options)
    explicit = resolve_redis_url(from_broker_options, "sentinel://h9:9")
    assert parse_sentinel_url(explicit).master_name == "m"


def test_a_missing_master_name_is_one_line_saying_where_to_set_it() -> None:
    app = app_with(broker_url="sentinel://:hunter2@h1:1;sentinel://h2:2")
    with pytest.raises(RedisURLError) as caught:
        core.install(app)
    message = str(caught.value)
    assert "\n" not in message
    assert "master_name" in message and "broker_transport_options" in message
    assert "hunter2" not in message


def test_sentinel_passwords_are_redacted_and_scrubbed() -> None:
    app = app_with(
        broker_url="sentinel://:datapw@h1:1;sentinel://h2:2",
        broker_transport_options={"master_name": "m", "sentinel_kwargs": {"password": "sentpw"}},
    )
    url = resolve_redis_url(app)
    shown = redact_url(url)
    assert "datapw" not in shown and "sentpw" not in shown
    with connect_profile(profile_for(url)) as connection:
        text = connection.scrub(f"error talking to {url}: AUTH sentpw / datapw failed")
        assert "sentpw" not in text and "datapw" not in text


def test_a_profile_takes_a_sentinel_url_with_its_master_name() -> None:
    profile = validate_profile_fields(
        {"url": "sentinel://h1:1;sentinel://h2:2", "master_name": "m"}, name="p"
    )
    assert profile.master_name == "m"
    in_query = validate_profile_fields({"url": "sentinel://h1:1?master_name=m"}, name="p")
    assert in_query.master_name is None
    with pytest.raises(ProfileError) as caught:
        validate_profile_fields({"url": "sentinel://h1:1;sentinel://h2:2"}, name="p")
    assert caught.value.field == "url" and "master_name" in caught.value.message
    with pytest.raises(ProfileError):
        validate_profile_fields({"url": "sentinel://h1:1;redis://h2:2", "master_name": "m"})


def test_the_control_app_gets_the_master_name_and_sentinel_password() -> None:
    profile = validate_profile_fields(
        {"url": "sentinel://h1:1?sentinel_password=sp;sentinel://h2:2", "master_name": "m"},
        name="p",
    )
    with connect_profile(profile) as connection:
        options = connection.app.conf.broker_transport_options
        assert options["master_name"] == "m"
        assert options["sentinel_kwargs"]["password"] == "sp"  # noqa: S105 - the test's own
        assert "sentinel_password" not in str(connection.app.conf.broker_url)
        # kombu hands sentinel_kwargs to redis-py's Sentinel as they are, and redis-py applies
        # the client's timeouts to the Sentinels' connections only without them.
        sentinel = redis.sentinel.Sentinel(
            [("h1", 1)], sentinel_kwargs=options["sentinel_kwargs"], socket_timeout=9
        )
        settings = sentinel.sentinels[0].connection_pool.connection_kwargs
        assert settings["socket_connect_timeout"] == profile.timeout
        assert settings["socket_timeout"] == max(profile.timeout, 3.0)


# -- real Sentinels --------------------------------------------------------------------------


@pytest.fixture
def sentinels() -> Iterator[SentinelGroup]:
    group = SentinelGroup()
    group.start()
    yield group
    pids = group.pids()
    group.close()
    assert not [pid for pid in pids if group_pids(pid)], "Sentinel processes left behind"


def dlq_url(group: SentinelGroup) -> str:
    return f"{group.url}?master_name={group.master_name}"


def fail_over(group: SentinelGroup) -> None:
    group.kill_master()
    wait_for(lambda: group.master_port() == group.replica.port, timeout=30, interval=0.1)


@pytest.mark.redis
def test_the_sentinels_password_is_theirs_not_the_masters() -> None:
    group = SentinelGroup(sentinel_password="sentpw")  # noqa: S106 - the test's own
    group.start()
    try:
        client = connect(f"{group.url}?master_name=morgue&sentinel_password=sentpw", 1.0)
        assert client.ping()
        wrong = connect(f"{group.url}?master_name=morgue&sentinel_password=nope", 1.0)
        with pytest.raises(redis.RedisError):  # the Sentinels refused the wrong password
            wrong.ping()
        client.close()
        wrong.close()
    finally:
        pids = group.pids()
        group.close()
        assert not [pid for pid in pids if group_pids(pid)]


@pytest.mark.redis
@pytest.mark.worker
@pytest.mark.slow
def test_every_failure_is_kept_exactly_once_through_a_failover(
    sentinels: SentinelGroup, start_worker: Callable[..., Worker]
) -> None:
    worker = start_worker(sentinels.url, env={"MORGUE_TEST_MASTER_NAME": sentinels.master_name})
    dlq = DeadLetterQueue(connect(dlq_url(sentinels), 1.0))
    task_ids = [worker.send("slow_boom", 0.1) for _ in range(40)]
    # The queued messages are the broker's business: on the replica before the kill.
    assert redis.Redis(port=sentinels.master.port).wait(1, 5000) >= 1
    wait_for(lambda: dlq.size("celery") >= 6, timeout=30)
    fail_over(sentinels)

    def stored() -> list[str]:
        try:
            return [e.task_id for e in dlq.iter_entries("celery")]
        except redis.RedisError:
            return []

    # Every task that failed, including those that failed while there was no master, is
    # kept once. (A message the worker had prefetched when the master died waits for kombu's
    # visibility timeout: the broker's business, not the DLQ's.)
    def failed() -> set[str]:
        log = worker.process.log_path.read_text() if worker.process.log_path else ""
        return {task_id for task_id in task_ids if f"[{task_id}] raised" in log}

    wait_for(lambda: len(failed()) >= len(task_ids) - 4 and set(stored()) >= failed(), 90, 0.2)
    kept = stored()
    assert set(kept) >= failed()
    assert len(kept) == len(set(kept)), "a failure was stored twice"
    assert set(kept) <= set(task_ids)


@pytest.mark.redis
@pytest.mark.slow
def test_the_cli_and_celery_a_work_after_a_failover(
    sentinels: SentinelGroup, morgue: Morgue, tmp_path: Path
) -> None:
    url = dlq_url(sentinels)
    dlq = DeadLetterQueue(connect(url, 1.0))
    entry_id = dlq.add(make_entry(queue="celery"))
    assert redis.Redis(port=sentinels.master.port).wait(1, 5000) >= 1
    fail_over(sentinels)
    listed = wait_for(lambda: _listed(morgue, url), timeout=20)
    assert listed == [entry_id]
    env = child_env(
        tmp_path / "absent.toml",
        {"MORGUE_TEST_BROKER": sentinels.url, "MORGUE_TEST_MASTER_NAME": sentinels.master_name},
    )
    result = celery_morgue(env, "queues", "--json")
    assert result.returncode == 0, result.stderr
    assert [row["queue"] for row in json.loads(result.stdout)] == ["celery"]


def _added(dlq: DeadLetterQueue, entry: Any) -> bool:
    """Stored, once the new master takes writes (the Sentinels may name it a moment before)."""
    try:
        dlq.add(entry)
    except redis.RedisError:
        return False
    return True


def _listed(morgue: Morgue, url: str) -> list[str] | None:
    result = morgue("--url", url, "dlq", "list", "celery", "--json")
    if result.returncode != 0:
        return None
    return [item["id"] for item in json.loads(result.stdout)["items"]]


@pytest.mark.redis
@pytest.mark.slow
def test_the_ui_shows_the_outage_and_follows_the_new_master(sentinels: SentinelGroup) -> None:
    url = dlq_url(sentinels)
    dlq = DeadLetterQueue(connect(url, 1.0))
    add_entries(dlq, "celery", 3)
    assert redis.Redis(port=sentinels.master.port).wait(1, 5000) >= 1
    profile = profile_for(url, timeout=1.0, refresh=0.3)

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        await open_queue(pilot, app, "celery")
        board = app.dashboard
        sentinels.kill_master()
        await until(pilot, lambda: board.banner.has_class("-visible"), what="banner")
        await until(pilot, lambda: "does not answer" in screen_text(app), what="banner text")
        await until(pilot, lambda: sentinels.master_port() == sentinels.replica.port, timeout=30)
        wait_for(lambda: _added(dlq, make_entry("after-failover", "celery")), timeout=30)
        await until(
            pilot, lambda: not board.banner.has_class("-visible"), timeout=45, what="reconnected"
        )
        # By itself: no key was pressed. The data is the new master's.
        celery = pane(app, "celery")
        assert celery is not None
        await until(pilot, lambda: celery.total == 4, what="data after the failover")

    with_app(profile, scenario)


def sentinel_capture(sentinels: SentinelGroup, tmp_path: Path) -> FailureCapture:
    """A worker's capture, in this process, on the group's DLQ with a spool in ``tmp_path``."""
    return FailureCapture(
        Celery("capture-here", set_as_current=False),
        dlq_url(sentinels),
        Options.from_kwargs({"spool_dir": str(tmp_path)}),
    )


def replay_until_empty(capture: FailureCapture) -> None:
    def replayed() -> bool:
        capture.replay_spool()
        return not capture.spool.pending()

    wait_for(replayed, timeout=30, interval=0.2)


@pytest.mark.redis
@pytest.mark.slow
def test_a_stalled_replica_costs_one_wait_not_one_per_capture(
    sentinels: SentinelGroup, tmp_path: Path
) -> None:
    """Each WAIT stalls its caller (the worker's main loop, for revokes) about 100 ms."""
    capture = sentinel_capture(sentinels, tmp_path)
    master = redis.Redis(port=sentinels.master_port() or 0)
    master.config_resetstat()
    os.kill(sentinels.replica.pid, signal.SIGSTOP)
    try:
        for n in range(10):
            capture.store(make_entry(f"stalled-{n}", "celery"))
        waits = master.info("commandstats").get("cmdstat_wait", {}).get("calls", 0)
        assert capture.spool.pending(), "unreplicated captures must be kept for replay"
        assert waits == 1  # the first waited for the replica; the rest did not
    finally:
        os.kill(sentinels.replica.pid, signal.SIGCONT)
        master.close()
    dlq = DeadLetterQueue(connect(dlq_url(sentinels), 1.0))
    replay_until_empty(capture)
    stored = sorted(e.task_id for e in dlq.iter_entries("celery"))
    assert stored == sorted(f"stalled-{n}" for n in range(10))  # each once


@pytest.mark.redis
@pytest.mark.slow
def test_a_capture_no_replica_acknowledged_survives_the_masters_death(
    sentinels: SentinelGroup, tmp_path: Path
) -> None:
    capture = sentinel_capture(sentinels, tmp_path)
    # The replica stops reading: the master acknowledges the write, the replica lacks it.
    os.kill(sentinels.replica.pid, signal.SIGSTOP)
    try:
        capture.store(make_entry("unreplicated", "celery"))
        assert capture.spool.pending(), "an unreplicated capture must be kept for replay"
        sentinels.kill_master()
    finally:
        os.kill(sentinels.replica.pid, signal.SIGCONT)
    wait_for(lambda: sentinels.master_port() == sentinels.replica.port, timeout=30, interval=0.1)
    dlq = DeadLetterQueue(connect(dlq_url(sentinels), 1.0))
    replay_until_empty(capture)
    assert [e.task_id for e in dlq.iter_entries("celery")] == ["unreplicated"]
