"""Requeue through a real broker: the task really runs again, under a fresh id."""

from __future__ import annotations

import datetime as dt
import decimal
import json

import pytest
import redis
from kombu.exceptions import OperationalError

from celery_morgue.core import DeadLetterQueue, LossyEntryError
from tests.helpers import Worker, make_entry, wait_for, wait_for_entry


def test_requeue_round_trip(worker: Worker, redis_client: redis.Redis) -> None:
    dlq = DeadLetterQueue(redis_client)
    flag = "flag:requeue-one"
    redis_client.delete(flag, f"done:{flag}")
    task_id = worker.send("fails_until_flag", flag, queue="other")
    entry = wait_for_entry(dlq, "other", task_id)

    redis_client.set(flag, 1)
    new_id = dlq.requeue(worker.control_app, "other", entry.id)
    assert new_id != task_id
    done = wait_for(lambda: redis_client.get(f"done:{flag}"), timeout=20)
    assert json.loads(done) == {"task_id": new_id, "requeued_from": task_id}  # type: ignore[arg-type]
    assert dlq.size("other") == 0


def test_requeue_all_sends_every_entry_present(worker: Worker, redis_client: redis.Redis) -> None:
    dlq = DeadLetterQueue(redis_client)
    flags = [f"flag:all-{n}" for n in range(3)]
    redis_client.delete(*flags, *(f"done:{f}" for f in flags))
    ids = [worker.send("fails_until_flag", flag) for flag in flags]
    for task_id in ids:
        wait_for_entry(dlq, "celery", task_id)
    redis_client.set(flags[0], 1)
    redis_client.set(flags[1], 1)
    redis_client.set(flags[2], 1)
    report = dlq.requeue_all(worker.control_app, "celery")
    assert len(report.requeued) == 3
    for flag in flags:
        wait_for(lambda flag=flag: redis_client.get(f"done:{flag}"), timeout=20)
    assert dlq.size("celery") == 0


def test_lossy_entries_are_not_requeued_silently(worker: Worker, redis_client: redis.Redis) -> None:
    dlq = DeadLetterQueue(redis_client)
    task_id = worker.send("odd_arguments", "z" * 100_000)
    entry = wait_for_entry(dlq, "celery", task_id)
    with pytest.raises(LossyEntryError, match="args\\[0\\]"):
        dlq.requeue(worker.control_app, "celery", entry.id)
    assert dlq.size("celery") == 1
    report = dlq.requeue_all(worker.control_app, "celery")
    assert report.skipped_lossy == [entry.id]
    assert dlq.size("celery") == 1


def test_entry_stays_when_the_broker_is_unreachable(redis_client: redis.Redis) -> None:
    from celery import Celery

    dlq = DeadLetterQueue(redis_client)
    entry_id = dlq.add(make_entry("t1"))
    dead = Celery("dead", broker="redis://127.0.0.1:1/0")
    dead.conf.broker_connection_retry = False
    dead.conf.broker_transport_options = {"max_retries": 0}
    with pytest.raises(OperationalError):
        dlq.requeue(dead, "celery", entry_id)
    assert dlq.get("celery", entry_id).task_id == "t1"


def test_requeue_sends_what_the_original_message_carried(
    worker: Worker, redis_client: redis.Redis
) -> None:
    dlq = DeadLetterQueue(redis_client)
    key = "carried"
    redis_client.delete(f"flag:{key}", f"arguments:{key}", f"linked:{key}")
    when = dt.datetime(2026, 11, 24, 9, 30, tzinfo=dt.UTC)
    result = worker.control_app.send_task(
        "tests.workerapp.record_arguments",
        args=[key, when, decimal.Decimal("1.50")],
        kwargs={"raw": b"\x00\xff"},
        queue="other",
        priority=3,
        root_id="root-1",
        parent_id="parent-1",
        soft_time_limit=50,
        time_limit=60,
        link=worker.control_app.signature(
            "tests.workerapp.record_link", args=[key], immutable=True
        ),
    )
    entry = wait_for_entry(dlq, "other", str(result.id))
    assert entry.lossy and entry.requeue_exact
    assert entry.priority == 3
    assert entry.options["time_limit"] == 60

    redis_client.set(f"flag:{key}", 1)
    dlq.requeue(worker.control_app, "other", entry.id)
    recorded = json.loads(wait_for(lambda: redis_client.get(f"arguments:{key}"), 20))  # type: ignore[arg-type]
    assert recorded == {
        "args": ["datetime", "Decimal"],
        "kwargs": {"raw": "bytes"},
        "priority": 3,
        "root_id": "root-1",
        "parent_id": "parent-1",
        "timelimit": [60, 50],
    }
    wait_for(lambda: redis_client.get(f"linked:{key}"), 20)


def test_two_requeues_of_one_entry_publish_it_once(
    worker: Worker, redis_client: redis.Redis
) -> None:
    from celery_morgue.core import DLQError

    dlq = DeadLetterQueue(redis_client)
    entry_id = dlq.add(make_entry("busy"))
    assert entry_id is not None
    marker = dlq._claim("celery", entry_id, "sent-by-the-other")  # another operator, right now
    with pytest.raises(DLQError, match="being requeued"):
        dlq.requeue(worker.control_app, "celery", entry_id)
    assert dlq.requeue_all(worker.control_app, "celery").skipped_busy == [entry_id]
    assert dlq.size("celery") == 1
    # Only the owner's marker releases it: a stranger's release changes nothing.
    dlq._release_script(keys=[dlq._marker_key("celery", entry_id)], args=["not the owner"])
    with pytest.raises(DLQError, match="being requeued"):
        dlq.requeue(worker.control_app, "celery", entry_id)
    dlq._release_script(keys=[dlq._marker_key("celery", entry_id)], args=[marker])
    assert dlq.requeue_all(worker.control_app, "celery").requeued.keys() == {entry_id}
