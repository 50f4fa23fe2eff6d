"""The command line on entries that are not plain failures: unreadable, hidden, unregistered."""

from __future__ import annotations

import json

import redis

from celery_morgue.core import DeadLetterQueue, Entry
from celery_morgue.tui.demo.processes import RedisServer
from tests.helpers import Morgue, Worker, make_entry, one_error_line, wait_for

HOSTILE = "[bold red]x[/] \x1b[31m"
QUEUE = "trust-nobody-consumes"


def add_malformed(client: redis.Redis, queue: str = "celery") -> dict[str, str]:
    key = f"dlq:{queue}"
    ids = {
        "not json": client.xadd(key, {"entry": HOSTILE.encode() + b" {\xff"}),
        "wrong types": client.xadd(key, {"entry": json.dumps({"task_id": 1, "task": "t"})}),
        "foreign": client.xadd(key, {"payload": "someone else's"}),
    }
    client.hset("dlq@queues", queue, 7 * 24 * 3600 * 1000)
    return {name: stream_id.decode() for name, stream_id in ids.items()}


def test_a_malformed_entry_among_good_ones(
    morgue: Morgue, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    dlq = DeadLetterQueue(redis_client)
    # A queue no worker consumes: requeued entries do not come back as new failures.
    good = [dlq.add(make_entry(queue=QUEUE)) for _ in range(2)]
    bad = add_malformed(redis_client, QUEUE)
    good.append(dlq.add(make_entry(queue=QUEUE)))
    url = ["--url", redis_server.url]

    listed = morgue.json(*url, "dlq", "list", QUEUE)
    by_id = {item["id"]: item for item in listed["items"]}
    assert listed["total"] == 6 and set(by_id) == set(good) | set(bad.values())
    for stream_id in bad.values():
        assert by_id[stream_id]["unreadable"] is True
        assert set(by_id[stream_id]) == {"id", "unreadable", "problem"}
    assert all(by_id[g]["unreadable"] is False and by_id[g]["reason"] == "failed" for g in good)

    table = morgue(*url, "dlq", "list", QUEUE)
    assert table.returncode == 0, table.stderr
    assert "Traceback" not in table.stderr
    assert table.stdout.count("unreadable") == 3

    shown = morgue(*url, "dlq", "show", QUEUE, bad["not json"])
    assert shown.returncode == 0, shown.stderr
    assert "\x1b" not in shown.stdout and "[bold red]x[/] \\x1b[31m" in shown.stdout
    assert morgue.json(*url, "dlq", "show", QUEUE, bad["foreign"])["unreadable"] is True

    requeued = morgue(*url, "dlq", "requeue", QUEUE, "--all", "--yes", "--json")
    assert requeued.returncode == 1
    report = json.loads(requeued.stdout)
    assert sorted(report["skipped_unreadable"]) == sorted(bad.values())
    assert set(report["requeued"]) == set(good)
    assert "unreadable" in one_error_line(requeued)
    # Run again: it stops at nothing, and deleting them empties the queue.
    again = morgue.json(*url, "dlq", "list", QUEUE)
    assert again["total"] == 3
    deleted = morgue(*url, "dlq", "delete", QUEUE, *bad.values(), "--yes", "--json")
    assert deleted.returncode == 0, deleted.stderr
    assert sorted(json.loads(deleted.stdout)["deleted"]) == sorted(bad.values())
    assert dlq.size(QUEUE) == 0


def test_arguments_hidden_by_the_caller_stay_hidden_unless_asked(
    morgue: Morgue, redis_server: RedisServer, redis_client: redis.Redis, worker: Worker
) -> None:
    dlq = DeadLetterQueue(redis_client)
    secret, password = "tok-8f1c29d4e7", "hunter2-b9e1"
    result = worker.control_app.send_task(
        "tests.workerapp.odd_arguments",
        args=[secret],
        kwargs={"password": password},
        argsrepr="('<token>',)",
        kwargsrepr="{'password': '***'}",
    )

    def stored() -> Entry | None:
        for item in dlq.iter_entries("celery"):
            if isinstance(item, Entry) and item.task_id == result.id:
                return item
        return None

    entry = wait_for(stored, timeout=20)
    assert isinstance(entry, Entry)
    assert entry.arguments_hidden and entry.argsrepr == "('<token>',)"
    assert entry.args == [secret]  # kept, because requeue needs them
    url = ["--url", redis_server.url]
    for args in (
        ["dlq", "list", "celery"],
        ["dlq", "list", "celery", "--json"],
        ["dlq", "show", "celery", entry.id],
        ["dlq", "show", "celery", entry.id, "--json"],
    ):
        output = morgue(*url, *args)
        assert output.returncode == 0, output.stderr
        assert secret not in output.stdout and password not in output.stdout, args
    shown = morgue.json(*url, "dlq", "show", "celery", entry.id)
    assert shown["args"] is None and shown["argsrepr"] == "('<token>',)"
    assert "<token>" in morgue(*url, "dlq", "show", "celery", entry.id).stdout
    raw = morgue.json(*url, "dlq", "show", "celery", entry.id, "--raw")
    assert raw["args"] == [secret] and raw["kwargs"] == {"password": password}
    assert secret in morgue(*url, "dlq", "list", "celery", "--raw", "--json").stdout

    # Celery's own repr (nothing chosen by the caller) hides nothing.
    plain = worker.send("odd_arguments", "visible")
    wait_for(
        lambda: any(
            isinstance(item, Entry) and item.task_id == plain and not item.arguments_hidden
            for item in dlq.iter_entries("celery")
        ),
        timeout=20,
    )


def test_requeueing_an_unregistered_task_says_it_keeps_the_name(
    morgue: Morgue, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    dlq = DeadLetterQueue(redis_client)
    entry = make_entry(task="proj.tasks.renamed")
    entry.reason = "unregistered"
    entry_id = dlq.add(entry)
    assert entry_id is not None
    url = ["--url", redis_server.url]
    assert morgue.json(*url, "dlq", "show", "celery", entry_id)["reason"] == "unregistered"
    refused = morgue(*url, "dlq", "requeue", "celery", entry_id)
    assert refused.returncode == 2
    line = one_error_line(refused)
    assert "did not know" in line and "proj.tasks.renamed" in line
    every = morgue(*url, "dlq", "requeue", "celery", "--all")
    assert "proj.tasks.renamed" in one_error_line(every)
    assert dlq.size("celery") == 1
