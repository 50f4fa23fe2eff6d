"""Requeue with other operators acting at the same time, and routes this app cannot resolve.

Publishes are counted at the broker: the Redis list of a queue no worker consumes.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from typing import Any

import pytest
import redis
from celery import Celery
from kombu import Exchange, Queue

from celery_morgue.core import AlreadyRequeued, DeadLetterQueue, UnreadableEntry, UnroutableEntry
from celery_morgue.core.dlq import REQUEUED_FROM_HEADER
from celery_morgue.tui.demo.processes import RedisServer
from tests.helpers import make_entry

# No worker consumes these queues: what is published stays in their Redis lists.
QUEUE = "nobody-consumes"


def published(client: redis.Redis, queue: str = QUEUE) -> Counter[str]:
    """How many messages in ``queue`` were requeued from each original task id."""
    counts: Counter[str] = Counter()
    for raw in client.lrange(queue, 0, -1):
        message = json.loads(raw)
        counts[message["headers"][REQUEUED_FROM_HEADER]] += 1
    return counts


@pytest.fixture
def app(redis_server: RedisServer, redis_client: redis.Redis) -> Any:
    redis_client.delete(QUEUE, "invoices", "billing-queue")
    publisher = Celery("racer", broker=redis_server.url)
    publisher.conf.update(task_serializer="json", accept_content=["json"])
    yield publisher
    publisher.close()


def fill(dlq: DeadLetterQueue, count: int) -> list[str]:
    ids = [dlq.add(make_entry(f"task-{n}", queue=QUEUE)) for n in range(count)]
    assert all(ids)
    return [str(entry_id) for entry_id in ids]


def during_first_publish(app: Any, action: Any) -> None:
    """Run ``action`` (another operator) once, right after the first publish of a requeue."""
    send = app.send_task
    done = []

    def send_then_act(*args: Any, **kwargs: Any) -> Any:
        result = send(*args, **kwargs)
        if not done:
            done.append(True)
            action()
        return result

    app.send_task = send_then_act


def test_entries_deleted_during_requeue_all_are_not_published(
    app: Any, redis_client: redis.Redis
) -> None:
    dlq = DeadLetterQueue(redis_client)
    ids = fill(dlq, 50)
    # Oldest first: the first publish is ids[0]; the operator deletes ten later ones.
    deleted = ids[10:20]
    during_first_publish(app, lambda: DeadLetterQueue(redis_client).delete(QUEUE, *deleted))
    report = dlq.requeue_all(app, QUEUE)
    assert report.error is None
    assert set(report.requeued) == set(ids) - set(deleted)
    counts = published(redis_client)
    deleted_tasks = {f"task-{n}" for n in range(10, 20)}
    assert not deleted_tasks & set(counts), "a deleted entry was published"
    assert sum(counts.values()) == 40 and max(counts.values()) == 1


def test_entries_cleared_during_requeue_all_are_not_published(
    app: Any, redis_client: redis.Redis
) -> None:
    dlq = DeadLetterQueue(redis_client)
    ids = fill(dlq, 50)
    during_first_publish(app, lambda: DeadLetterQueue(redis_client).clear(QUEUE, up_to=ids[29]))
    report = dlq.requeue_all(app, QUEUE)
    counts = published(redis_client)
    assert set(report.requeued) == {ids[0], *ids[30:]}
    assert set(counts) == {"task-0", *(f"task-{n}" for n in range(30, 50))}
    assert max(counts.values()) == 1
    assert dlq.size(QUEUE) == 0


def test_two_requeue_alls_at_once_publish_each_entry_once(
    app: Any, redis_client: redis.Redis
) -> None:
    dlq = DeadLetterQueue(redis_client)
    ids = fill(dlq, 60)
    other_report = {}

    def second_operator() -> None:
        other_report["report"] = DeadLetterQueue(redis_client).requeue_all(app, QUEUE)

    during_first_publish(app, second_operator)
    first = dlq.requeue_all(app, QUEUE)
    second = other_report["report"]
    assert not set(first.requeued) & set(second.requeued)
    assert set(first.requeued) | set(second.requeued) == set(ids)
    counts = published(redis_client)
    assert len(counts) == 60 and max(counts.values()) == 1


def test_a_requeue_that_stopped_after_publishing_is_not_sent_again(
    app: Any, redis_client: redis.Redis
) -> None:
    """A crash between the publish and the removal leaves the entry marked with its new id."""
    dlq = DeadLetterQueue(redis_client)
    [entry_id] = fill(dlq, 1)
    redis_ms = int(redis_client.time()[0]) * 1000
    marker = {
        "task_id": "sent-before-the-crash",
        "token": "t",
        "at_ms": redis_ms - 600_000,
        "phase": "published",
    }
    redis_client.set(dlq._marker_key(QUEUE, entry_id), json.dumps(marker))
    with pytest.raises(AlreadyRequeued, match="sent-before-the-crash") as raised:
        dlq.requeue(app, QUEUE, entry_id)
    assert raised.value.task_id == "sent-before-the-crash"
    report = dlq.requeue_all(app, QUEUE)
    assert report.already_requeued == {entry_id: "sent-before-the-crash"}
    assert not published(redis_client)
    assert dlq.size(QUEUE) == 1


def test_the_marker_is_written_before_the_publish(app: Any, redis_client: redis.Redis) -> None:
    dlq = DeadLetterQueue(redis_client)
    [entry_id] = fill(dlq, 1)
    seen: list[Any] = []
    during_first_publish(
        app, lambda: seen.append(redis_client.get(dlq._marker_key(QUEUE, entry_id)))
    )
    new_id = dlq.requeue(app, QUEUE, entry_id)
    assert seen and json.loads(seen[0])["task_id"] == new_id
    assert redis_client.get(dlq._marker_key(QUEUE, entry_id)) is None  # removed with the entry


def test_an_exchange_this_app_does_not_declare_is_refused_and_the_entry_kept(
    app: Any, redis_client: redis.Redis, redis_server: RedisServer
) -> None:
    dlq = DeadLetterQueue(redis_client)
    entry = make_entry(
        "topic-1",
        queue="invoices",
        delivery_info={"exchange": "billing", "routing_key": "invoice.parse", "priority": 0},
    )
    entry_id = dlq.add(entry)
    assert entry_id is not None
    with pytest.raises(UnroutableEntry, match="billing"):
        dlq.requeue(app, "invoices", entry_id)
    report = dlq.requeue_all(app, "invoices")
    assert list(report.unroutable) == [entry_id]
    assert dlq.size("invoices") == 1

    # The worker's own app declares the queue on its topic exchange: the requeue reaches it.
    worker_app = Celery("proj", broker=redis_server.url)
    worker_app.conf.task_queues = [
        Queue("invoices", Exchange("billing", type="topic"), routing_key="invoice.#")
    ]
    new_id = dlq.requeue(worker_app, "invoices", entry_id)
    worker_app.close()
    [raw] = redis_client.lrange("invoices", 0, -1)
    message = json.loads(raw)
    assert message["headers"]["id"] == new_id
    assert message["headers"][REQUEUED_FROM_HEADER] == "topic-1"
    assert dlq.size("invoices") == 0


def test_unreadable_entries_are_listed_shown_deleted_and_skipped(
    app: Any, redis_client: redis.Redis
) -> None:
    dlq = DeadLetterQueue(redis_client)
    good = fill(dlq, 2)
    key = dlq.key(QUEUE)
    good_json = json.loads(dlq.client.xrange(key, count=1)[0][1][b"entry"])
    lacking_lossy = {k: v for k, v in good_json.items() if k not in {"lossy_fields", "reason"}}
    lacking_lossy["task_id"] = "no-lossy-fields"
    bad = {
        "not json": redis_client.xadd(key, {"entry": b"{not json \xff"}),
        "wrong type": redis_client.xadd(key, {"entry": json.dumps({**good_json, "args": "x"})}),
        "no task": redis_client.xadd(key, {"entry": json.dumps({"task_id": "t"})}),
        "foreign": redis_client.xadd(key, {"something": "else"}),
        "huge": redis_client.xadd(key, {"entry": "[" + "1," * 600_000 + "1]"}),
        "a list": redis_client.xadd(key, {"entry": "[1, 2]"}),
    }
    readable_old = redis_client.xadd(key, {"entry": json.dumps(lacking_lossy)})
    page = dlq.page(QUEUE, limit=50)
    by_id = {item.id: item for item in page.items}
    assert len(page.items) == 9
    for name, stream_id in bad.items():
        item = by_id[stream_id.decode()]
        assert isinstance(item, UnreadableEntry), name
        assert item.problem and "\n" not in item.problem
        assert item.as_dict() == {"id": item.id, "unreadable": True, "problem": item.problem}
    assert not isinstance(by_id[readable_old.decode()], UnreadableEntry)
    shown = dlq.get(QUEUE, bad["not json"].decode())
    assert isinstance(shown, UnreadableEntry) and "not json" in shown.raw
    assert len(dlq.get(QUEUE, bad["huge"].decode()).raw) < 70_000  # type: ignore[union-attr]

    report = dlq.requeue_all(app, QUEUE)
    assert set(report.skipped_unreadable) == {stream_id.decode() for stream_id in bad.values()}
    assert set(report.requeued) == {*good, readable_old.decode()}
    assert dlq.delete(QUEUE, *(stream_id.decode() for stream_id in bad.values())) == 6
    assert dlq.size(QUEUE) == 0


def test_a_requeue_that_stopped_before_confirming_its_publish_is_sent_again_and_said(
    app: Any, redis_client: redis.Redis
) -> None:
    """The publish and the release both failed (Redis restarting): the marker stays
    "claimed". Minutes later the entry is sent again, and the report names the earlier try,
    instead of calling it sent and inviting the operator to delete a task never sent."""
    dlq = DeadLetterQueue(redis_client)
    [entry_id] = fill(dlq, 1)
    redis_ms = int(redis_client.time()[0]) * 1000
    marker = {"task_id": "maybe-sent", "token": "t", "at_ms": redis_ms - 600_000}
    redis_client.set(dlq._marker_key(QUEUE, entry_id), json.dumps({**marker, "phase": "claimed"}))
    report = dlq.requeue_all(app, QUEUE)
    assert report.retried == {entry_id: "maybe-sent"}
    assert set(report.requeued) == {entry_id}
    assert sum(published(redis_client).values()) == 1
    assert dlq.size(QUEUE) == 0


def test_a_fresh_claimed_marker_is_busy_not_sent(app: Any, redis_client: redis.Redis) -> None:
    dlq = DeadLetterQueue(redis_client)
    [entry_id] = fill(dlq, 1)
    dlq._claim(QUEUE, entry_id, "in-flight")
    assert dlq.requeue_all(app, QUEUE).skipped_busy == [entry_id]
    assert not published(redis_client)


def test_a_refused_message_requeues_through_a_queue_whose_binding_is_not_its_name(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    """Celery publishes a direct queue through the default exchange by queue name; a raw
    republish must too, or it reaches no binding ('tasks.high' here) and is lost."""
    redis_client.delete("high")
    worker_app = Celery("proj", broker=redis_server.url)
    worker_app.conf.task_queues = [Queue("high", Exchange("tasks"), routing_key="tasks.high")]
    dlq = DeadLetterQueue(redis_client)
    entry = make_entry("raw-1", queue="high", delivery_info={"exchange": "", "routing_key": "high"})
    entry.reason = "rejected"
    body = json.dumps([[1], {}, {}]).encode()
    entry.options["raw_message"] = {
        "body": base64.b64encode(body).decode(),
        "content_type": "application/json",
        "content_encoding": "utf-8",
        "headers": {"id": "raw-1", "task": "proj.add"},
    }
    entry_id = dlq.add(entry)
    assert entry_id is not None
    new_id = dlq.requeue(worker_app, "high", entry_id)
    [raw] = redis_client.lrange("high", 0, -1)
    message = json.loads(raw)
    assert message["headers"]["id"] == new_id
    assert base64.b64decode(message["body"]) == body
    assert dlq.size("high") == 0
    worker_app.close()


def test_an_entry_whose_options_cannot_be_sent_is_kept_and_the_rest_go(
    app: Any, redis_client: redis.Redis
) -> None:
    dlq = DeadLetterQueue(redis_client)
    first, second = fill(dlq, 2)
    key = dlq.key(QUEUE)
    stored = json.loads(redis_client.xrange(key, min=first, max=first)[0][1][b"entry"])
    headers = {"id": "t", "task": "proj.add"}
    stored["options"] = {"raw_message": {"body": "%%% not base64", "headers": headers}}
    dlq.delete(QUEUE, first)
    bad = redis_client.xadd(key, {"entry": json.dumps(stored)}).decode()
    report = dlq.requeue_all(app, QUEUE)
    assert list(report.invalid) == [bad]
    assert set(report.requeued) == {second}
    assert dlq.size(QUEUE) == 1
    assert redis_client.get(dlq._marker_key(QUEUE, bad)) is None  # released, not stuck


def test_entries_with_malformed_contents_are_unreadable(redis_client: redis.Redis) -> None:
    dlq = DeadLetterQueue(redis_client)
    [good] = fill(dlq, 1)
    key = dlq.key(QUEUE)
    stored = json.loads(redis_client.xrange(key, min=good, max=good)[0][1][b"entry"])
    cases = {
        "lossy fields": {**stored, "lossy": True, "lossy_fields": [1, 2]},
        "exact args": {**stored, "exact_args": "not json"},
        "exact shape": {**stored, "exact_args": "[1, 2]"},
        "raw message": {**stored, "options": {"raw_message": {"body": 5}}},
    }
    ids = {
        name: redis_client.xadd(key, {"entry": json.dumps(data)}).decode()
        for name, data in cases.items()
    }
    items = {item.id: item for item in dlq.page(QUEUE).items}
    for name, stream_id in ids.items():
        assert isinstance(items[stream_id], UnreadableEntry), name
