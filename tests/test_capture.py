"""Failures captured from a real prefork worker: exactly one entry per failed task."""

from __future__ import annotations

import datetime as dt
import decimal
import time
from pathlib import Path

import redis

from celery_morgue.core import DeadLetterQueue
from tests.helpers import Worker, entries_for, wait_for, wait_for_entry


def test_a_raising_task_is_captured_with_its_details(
    worker: Worker, redis_client: redis.Redis
) -> None:
    dlq = DeadLetterQueue(redis_client)
    task_id = worker.send("boom", "it broke")
    entry = wait_for_entry(dlq, "celery", task_id)
    assert entry.task == "tests.workerapp.boom"
    assert entry.queue == "celery"
    assert entry.args == ["it broke"]
    assert entry.exception == "ValueError"
    assert entry.message == "it broke"
    assert "raise ValueError(message)" in entry.traceback
    assert entry.hostname == worker.name
    assert entry.retries == 0
    assert entry.routing_key == "celery"
    assert entry.failed_at.endswith("+00:00")
    assert not entry.lossy


def test_the_queue_comes_from_delivery(worker: Worker, redis_client: redis.Redis) -> None:
    dlq = DeadLetterQueue(redis_client)
    task_id = worker.send("boom", queue="other")
    entry = wait_for_entry(dlq, "other", task_id)
    assert entry.queue == "other"
    assert [q.queue for q in dlq.queues()] == ["other"]


def test_exhausted_retries_give_one_entry_with_the_retry_count(
    worker: Worker, redis_client: redis.Redis
) -> None:
    dlq = DeadLetterQueue(redis_client)
    task_id = worker.send("always_retry")
    entry = wait_for_entry(dlq, "celery", task_id)
    assert entry.retries == 2
    assert entry.exception == "RuntimeError"
    assert entry.message == "still failing"
    assert len(entries_for(dlq, "celery", task_id)) == 1


def test_hard_time_limit_gives_exactly_one_entry(worker: Worker, redis_client: redis.Redis) -> None:
    dlq = DeadLetterQueue(redis_client)
    task_id = worker.send("past_hard_limit", 30, queue="other")
    entry = wait_for_entry(dlq, "other", task_id)
    assert entry.exception == "TimeLimitExceeded"
    assert entry.args == [30]
    # Celery sends task_failure a second time for the same task right after the first.
    wait_for(lambda: "Hard time limit" in worker.log(), timeout=10)
    time.sleep(1.0)  # a window: no event marks a second entry that is rightly never written
    assert len(entries_for(dlq, "other", task_id)) == 1
    # The second signal comes with an empty request: it must not land in another queue either.
    assert [(q.queue, q.total) for q in dlq.queues()] == [("other", 1)]


def test_a_fixed_task_id_that_fails_again_after_its_entry_went_is_stored_again(
    worker: Worker, redis_client: redis.Redis
) -> None:
    """Apps with fixed ids (``task_id=f"invoice-{n}"``) lose no second failure."""
    dlq = DeadLetterQueue(redis_client)
    task_id = f"invoice-{time.time_ns()}"
    worker.send("boom", "first", task_id=task_id)
    first = wait_for_entry(dlq, "celery", task_id)
    assert dlq.delete("celery", first.id) == 1
    worker.send("boom", "second", task_id=task_id)
    second = wait_for(
        lambda: [e for e in entries_for(dlq, "celery", task_id) if e.message == "second"]
    )
    assert isinstance(second, list)
    assert [entry.message for entry in entries_for(dlq, "celery", task_id)] == ["second"]
    assert second[0].failure_id != first.failure_id


def test_a_killed_process_is_captured_as_worker_lost(
    worker: Worker, redis_client: redis.Redis
) -> None:
    dlq = DeadLetterQueue(redis_client)
    task_id = worker.send("kill_own_process", queue="other")
    entry = wait_for_entry(dlq, "other", task_id)
    assert entry.exception == "WorkerLostError"
    assert entry.task == "tests.workerapp.kill_own_process"
    assert entry.hostname == worker.name
    assert entry.queue == "other"
    time.sleep(1.0)  # a window: no event marks a second entry that is rightly never written
    assert [(q.queue, q.total) for q in dlq.queues()] == [("other", 1)]


def test_reject_without_requeue_is_captured(worker: Worker, redis_client: redis.Redis) -> None:
    dlq = DeadLetterQueue(redis_client)
    task_id = worker.send("reject_for_good", queue="other")
    entry = wait_for_entry(dlq, "other", task_id)
    assert entry.exception == "Reject"
    # sender.request is empty on this path: the queue comes from what task_received recorded.
    assert entry.queue == "other"
    assert entry.hostname == worker.name


def test_odd_arguments_from_a_real_task(worker: Worker, redis_client: redis.Redis) -> None:
    dlq = DeadLetterQueue(redis_client)
    when = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC)
    huge = "y" * (2 * 1024 * 1024)
    task_id = worker.send(
        "odd_arguments", when, decimal.Decimal("9.99"), b"raw bytes", huge, kwargs={"k": when}
    )
    entry = wait_for_entry(dlq, "celery", task_id)
    assert entry.args[:3] == ["2026-11-24T12:00:00+00:00", "9.99", "raw bytes"]
    assert isinstance(entry.args[3], str) and "…[truncated" in entry.args[3]
    assert entry.kwargs == {"k": "2026-11-24T12:00:00+00:00"}
    assert entry.lossy
    assert "args[3]" in entry.truncated_fields
    assert entry.exception == "TypeError"


def test_tasks_of_other_apps_are_not_captured(tmp_path: Path) -> None:
    from celery import Celery

    from celery_morgue import core

    mine, other = Celery("mine", broker="redis://127.0.0.1:1/0"), Celery("other")
    installation = core.install(mine, redis_url="redis://127.0.0.1:1/0", spool_dir=tmp_path)

    @other.task
    def foreign() -> None: ...

    # A task of another app: the receiver returns before touching Redis (port 1 is closed).
    installation.capture.on_task_failure(sender=foreign, task_id="x", exception=ValueError())
    assert not installation.capture.spool.pending()


def test_an_undecodable_file_name_argument_is_stored(
    worker: Worker, redis_client: redis.Redis
) -> None:
    import os

    dlq = DeadLetterQueue(redis_client)
    name = os.fsdecode(b"/tmp/report-\xff.csv")  # a lone surrogate: not encodable as UTF-8
    task_id = worker.send("odd_arguments", name, kwargs={name: 1})
    entry = wait_for_entry(dlq, "celery", task_id)
    assert entry.args == ["/tmp/report-\\udcff.csv"]
    assert entry.lossy and "args[0]" in entry.lossy_fields


def test_a_timed_out_task_that_goes_back_to_its_queue_is_not_dead(
    worker: Worker, redis_client: redis.Redis
) -> None:
    dlq = DeadLetterQueue(redis_client)
    task_id = worker.send("redelivered_after_timeout", 30, queue="other")
    try:
        # acks_late without acks_on_timeout: Celery sends task_failure, then redelivers.
        wait_for(lambda: worker.log().count("timed out and goes back") >= 1, timeout=30)
        assert entries_for(dlq, "other", task_id) == []
        assert dlq.queues() == []
    finally:
        worker.control_app.control.revoke(task_id, terminate=True, signal="SIGKILL")
