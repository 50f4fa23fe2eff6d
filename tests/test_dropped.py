"""Every way a real prefork worker drops a task without task_failure gives one DLQ entry."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import time
from collections.abc import Callable

import redis
from kombu import Connection, Exchange, Producer, Queue

from celery_morgue.core import DeadLetterQueue, Entry
from celery_morgue.core.zombies import CLEANUP_TASK, revoke_tasks
from celery_morgue.tui.demo.processes import RedisServer
from tests.helpers import Worker, wait_for


def entries_of(dlq: DeadLetterQueue, queue: str = "celery") -> list[Entry]:
    return [entry for entry in dlq.iter_entries(queue) if isinstance(entry, Entry)]


def entry_for(dlq: DeadLetterQueue, task_id: str, queue: str = "celery") -> Entry | None:
    found = [entry for entry in entries_of(dlq, queue) if entry.task_id == task_id]
    assert len(found) <= 1, f"{len(found)} entries for one task"
    return found[0] if found else None


def wait_running(worker: Worker, task_id: str) -> None:
    def running() -> bool:
        replies = worker.control_app.control.inspect([worker.name], timeout=1).active() or {}
        return any(
            task["id"] == task_id and task.get("time_start")
            for tasks in replies.values()
            for task in tasks
        )

    wait_for(running, timeout=20)


def test_a_task_terminated_by_anyones_revoke_is_kept(
    worker: Worker, redis_client: redis.Redis
) -> None:
    dlq = DeadLetterQueue(redis_client)
    task_id = worker.send("sleep", 60)
    wait_running(worker, task_id)
    worker.control_app.control.revoke(task_id, terminate=True, signal="SIGTERM")
    entry = wait_for(lambda: entry_for(dlq, task_id), timeout=20)
    assert isinstance(entry, Entry)
    assert entry.reason == "terminated"
    assert entry.task == "tests.workerapp.sleep"
    assert entry.args == [60]
    assert entry.exception == "Terminated"
    # A lost worker may follow the terminate: still one entry.
    boom = worker.send("boom", "after the revoke")
    wait_for(lambda: entry_for(dlq, boom), timeout=20)
    assert entry_for(dlq, task_id) is not None


def test_a_task_revoked_from_the_ui_path_is_kept(worker: Worker, redis_client: redis.Redis) -> None:
    """The UI's `r` and `morgue zombies --revoke` go through core.zombies.revoke_tasks."""
    dlq = DeadLetterQueue(redis_client)
    task_id = worker.send("sleep", 60)
    wait_running(worker, task_id)

    class Running:
        id = task_id
        worker = ""

    Running.worker = worker.name
    report = revoke_tasks(worker.control_app, [Running()], signal="SIGTERM")
    assert report.terminated == [task_id]
    entry = wait_for(lambda: entry_for(dlq, task_id), timeout=20)
    assert isinstance(entry, Entry) and entry.reason == "terminated"


def test_an_unregistered_task_name_is_kept_and_requeued_by_name(
    worker: Worker, redis_client: redis.Redis
) -> None:
    dlq = DeadLetterQueue(redis_client)
    result = worker.control_app.send_task(
        "tests.workerapp.renamed_in_the_next_deploy", args=[1, "two"], kwargs={"k": 3}
    )
    entry = wait_for(lambda: entry_for(dlq, result.id), timeout=20)
    assert isinstance(entry, Entry)
    assert entry.reason == "unregistered"
    assert entry.task == "tests.workerapp.renamed_in_the_next_deploy"
    assert entry.exception == "NotRegistered"
    assert (entry.args, entry.kwargs) == ([1, "two"], {"k": 3})
    assert entry.queue == "celery"

    new_id = dlq.requeue(worker.control_app, "celery", entry.id)
    # The worker still does not know it: it comes back, under the same name, as a new entry.
    again = wait_for(lambda: entry_for(dlq, new_id), timeout=20)
    assert isinstance(again, Entry)
    assert again.task == entry.task and again.reason == "unregistered"
    assert entry_for(dlq, result.id) is None


def _publish_raw(
    broker_url: str, body: bytes, content_type: str, headers: dict[str, object]
) -> None:
    queue = Queue("celery", Exchange("celery", "direct"), routing_key="celery")
    with Connection(broker_url) as conn:
        producer = Producer(conn)
        producer.publish(
            body,
            exchange=queue.exchange,
            routing_key="celery",
            declare=[queue],
            content_type=content_type,
            content_encoding="binary" if content_type.endswith("pickle") else "utf-8",
            headers=headers,
        )


def _headers(task_id: str, name: str = "tests.workerapp.boom") -> dict[str, object]:
    return {"lang": "py", "task": name, "id": task_id, "root_id": task_id, "retries": 0}


def test_a_message_of_a_refused_content_type_is_kept_as_it_came(
    worker: Worker, redis_client: redis.Redis, redis_server: RedisServer
) -> None:
    """A pickle message to a json-only worker: rejected, stored with its body, sent unchanged."""
    import pickle

    dlq = DeadLetterQueue(redis_client)
    body = pickle.dumps(([1], {}, {"callbacks": None, "errbacks": None, "chain": None}))
    _publish_raw(redis_server.url, body, "application/x-python-serialize", _headers("pickled-1"))
    entry = wait_for(lambda: entry_for(dlq, "pickled-1"), timeout=20)
    assert isinstance(entry, Entry)
    assert entry.reason == "rejected"
    assert entry.exception == "ContentDisallowed"
    assert entry.task == "tests.workerapp.boom"
    assert isinstance(entry.options.get("raw_message"), dict)

    new_id = dlq.requeue(worker.control_app, "celery", entry.id)
    again = wait_for(lambda: entry_for(dlq, new_id), timeout=20)
    assert isinstance(again, Entry) and again.reason == "rejected"
    assert again.options["raw_message"]["body"] == entry.options["raw_message"]["body"]


def test_an_undecodable_body_is_kept(
    worker: Worker, redis_client: redis.Redis, redis_server: RedisServer
) -> None:
    dlq = DeadLetterQueue(redis_client)
    _publish_raw(redis_server.url, b'{"not": json', "application/json", _headers("garbled-1"))
    entry = wait_for(lambda: entry_for(dlq, "garbled-1"), timeout=20)
    assert isinstance(entry, Entry)
    assert entry.reason == "rejected"
    assert entry.exception == "DecodeError"
    assert entry.task == "tests.workerapp.boom"
    assert "raw_message" in entry.options


def test_expired_tasks_are_kept_only_when_asked(
    redis_server: RedisServer,
    redis_client: redis.Redis,
    start_worker: Callable[..., Worker],
    worker: Worker,
) -> None:
    dlq = DeadLetterQueue(redis_client)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    # The shared worker keeps the default: no entry, while a failure sent after it arrives.
    expired = worker.send("boom", "expired", expires=past)
    marker = worker.send("boom", "sent after the expired one")
    wait_for(lambda: entry_for(dlq, marker), timeout=20)
    assert entry_for(dlq, expired) is None

    queue = "expiring"
    keeper = start_worker(redis_server.url, queues=queue, env={"MORGUE_TEST_CAPTURE_EXPIRED": "1"})
    kept = keeper.send("boom", "expired", expires=past, queue=queue)
    entry = wait_for(lambda: entry_for(dlq, kept, queue), timeout=20)
    assert isinstance(entry, Entry) and entry.reason == "expired"
    # celery-morgue's own cleanup task expiring is not a lost task.
    cleanup = keeper.control_app.send_task(CLEANUP_TASK, expires=past, queue=queue)
    marker = keeper.send("boom", "after the cleanup", queue=queue)
    wait_for(lambda: entry_for(dlq, marker, queue), timeout=20)
    assert entry_for(dlq, cleanup.id, queue) is None
    assert json.dumps(entry.as_dict())  # readable through the public shape


def test_a_zombie_the_reaper_terminates_is_kept(worker: Worker, redis_client: redis.Redis) -> None:
    dlq = DeadLetterQueue(redis_client)
    task_id = worker.send("sleep", 60)
    wait_running(worker, task_id)
    sent: list[float] = []

    def reaped() -> Entry | None:
        # The worker's own cleanup, as beat sends it, with a default limit of 1 s for tasks
        # with none of their own; every 2 s until the task is old enough to be a zombie.
        if not sent or time.monotonic() - sent[-1] > 2:
            worker.control_app.send_task(CLEANUP_TASK, kwargs={"hard_limit": 1, "grace": 0})
            sent.append(time.monotonic())
        return entry_for(dlq, task_id)

    entry = wait_for(reaped, timeout=30)
    assert isinstance(entry, Entry) and entry.reason == "terminated"
    assert "SIGTERM" in entry.message or "15" in entry.message


def test_a_cold_shutdown_keeps_the_running_tasks_it_drops(
    redis_server: RedisServer, redis_client: redis.Redis, start_worker: Callable[..., Worker]
) -> None:
    """SIGQUIT (or REMAP_SIGTERM=SIGQUIT): Celery cancels running tasks it already acked."""
    dlq = DeadLetterQueue(redis_client)
    queue = "cold-shutdown"
    doomed = start_worker(redis_server.url, queues=queue)
    task_id = doomed.send("sleep", 60, queue=queue)
    wait_running(doomed, task_id)
    assert doomed.process.pid is not None
    os.kill(doomed.process.pid, signal.SIGQUIT)
    entry = wait_for(lambda: entry_for(dlq, task_id, queue), timeout=30)
    assert isinstance(entry, Entry)
    assert entry.reason == "terminated" and "cold shutdown" in entry.message
    assert entry.args == [60]


def test_an_undecodable_broadcast_to_the_workers_is_not_a_task(
    worker: Worker, redis_client: redis.Redis, redis_server: RedisServer
) -> None:
    dlq = DeadLetterQueue(redis_client)
    with Connection(redis_server.url) as conn:
        Producer(conn).publish(
            b'{"not": json',
            exchange=Exchange("celery.pidbox", "fanout"),
            routing_key="",
            content_type="application/json",
            content_encoding="utf-8",
        )
    marker = worker.send("boom", "after the broadcast")
    wait_for(lambda: entry_for(dlq, marker), timeout=20)
    assert not [e for e in entries_of(dlq) if e.task_id.startswith("unknown-")]


def test_an_unregistered_task_keeps_the_arguments_its_caller_hid(
    worker: Worker, redis_client: redis.Redis
) -> None:
    dlq = DeadLetterQueue(redis_client)
    result = worker.control_app.send_task(
        "billing.charge_card",
        args=["4111-1111-1111-1111"],
        kwargs={"cvv": "123"},
        argsrepr="('<card>',)",
        kwargsrepr="{'cvv': '<hidden>'}",
    )
    entry = wait_for(lambda: entry_for(dlq, result.id), timeout=20)
    assert isinstance(entry, Entry) and entry.reason == "unregistered"
    assert entry.arguments_hidden and entry.argsrepr == "('<card>',)"
    assert "4111" not in json.dumps(entry.as_dict())
