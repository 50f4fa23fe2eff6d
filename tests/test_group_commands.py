"""`morgue dlq groups`, `morgue dlq regroup` and the groups count of `morgue queues`, on failures
from a real prefork worker."""

from __future__ import annotations

import json

import redis

from celery_morgue.core import DeadLetterQueue
from celery_morgue.tui.cli.output import cell_width
from celery_morgue.tui.demo.processes import RedisServer
from tests.helpers import Morgue, Worker, make_entry, one_error_line, wait_for_entry

GROUP_KEYS = {"group", "task", "exception", "where", "sample", "count", "first", "last"}


def fail_three_ways(worker: Worker, dlq: DeadLetterQueue) -> dict[str, str]:
    """Failures of three bugs (6, 3 and 2 of them, every message different): their groups."""
    sent = {
        "unknown user": [worker.send("load_user", n) for n in range(1, 7)],
        "negative id": [worker.send("load_user", -n) for n in range(1, 4)],
        "bad amount": [worker.send("parse_amount", f"{n} €") for n in range(2)],
    }
    groups = {}
    for bug, task_ids in sent.items():
        found = [wait_for_entry(dlq, "celery", task_id) for task_id in task_ids]
        groups[bug] = found[0].group
    return groups


def test_groups_json_largest_first_and_queues_counts_them(
    morgue: Morgue, redis_server: RedisServer, worker: Worker, dlq: DeadLetterQueue
) -> None:
    groups = fail_three_ways(worker, dlq)
    data = morgue.json("--url", redis_server.url, "dlq", "groups", "celery")
    assert set(data) == {"queue", "total", "ungrouped", "total_groups", "groups"}
    assert data["total_groups"] == 3
    assert (data["queue"], data["total"], data["ungrouped"]) == ("celery", 11, 0)
    assert all(set(group) == GROUP_KEYS for group in data["groups"])
    assert [(g["group"], g["count"]) for g in data["groups"]] == [
        (groups["unknown user"], 6),
        (groups["negative id"], 3),
        (groups["bad amount"], 2),
    ]
    unknown = data["groups"][0]
    assert unknown["task"] == "tests.workerapp.load_user"
    assert (unknown["exception"], unknown["where"]) == (
        "LookupError",
        "tests/workerapp.py:_find_user",
    )
    assert unknown["sample"].endswith(" not found")
    assert unknown["first"] <= unknown["last"] and unknown["last"].endswith("+00:00")

    queues = morgue.json("--url", redis_server.url, "queues")
    assert [(row["queue"], row["total"], row["groups"]) for row in queues] == [("celery", 11, 3)]


def test_groups_table_fits_80_columns_and_shows_task_text_literally(
    morgue: Morgue, redis_server: RedisServer, worker: Worker, dlq: DeadLetterQueue
) -> None:
    hostile = "[bold red]boom[/] \x1b[2J\x1b[31m ‮evil"
    boom = wait_for_entry(dlq, "celery", worker.send("boom", hostile)).group
    fail_three_ways(worker, dlq)
    result = morgue("--url", redis_server.url, "dlq", "groups", "celery")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["group", "count", "last", "(UTC)", "task", "exception", "sample"]
    assert len(lines) == 1 + 4 + 1
    assert lines[-1] == "4 groups, 12 entries in 'celery'"
    assert all(cell_width(line) <= 80 for line in lines), lines
    assert "\x1b" not in result.stdout and "\u202e" not in result.stdout
    assert next(line for line in lines if line.startswith(boom)).endswith("  [bold red]b…")
    wide = morgue("--url", redis_server.url, "dlq", "groups", "celery", env={"COLUMNS": "200"})
    row = next(line for line in wide.stdout.splitlines() if line.startswith(boom))
    assert row.endswith("[bold red]boom[/] \\x1b[2J\\x1b[31m \\u202eevil")


def test_regroup_groups_entries_stored_before_groups(
    morgue: Morgue, redis_server: RedisServer, redis_client: redis.Redis, dlq: DeadLetterQueue
) -> None:
    redis_client.hset(dlq.index_key, "celery", 7 * 24 * 3600 * 1000)
    for n in range(1200):  # the previous version's rows: no group in the row or the entry
        data = json.loads(make_entry(f"old-{n}", message=f"order {n} failed").to_json())
        del data["group"]
        redis_client.xadd(dlq.key("celery"), {"task_id": f"old-{n}", "entry": json.dumps(data)})
    before = morgue("--url", redis_server.url, "dlq", "groups", "celery")
    assert before.returncode == 0, before.stderr
    assert before.stdout.splitlines()[-1] == (
        "0 groups, 1,200 entries in 'celery'; 1,200 entries stored before groups existed, "
        "not grouped yet: morgue dlq regroup celery"
    )
    assert morgue.json("--url", redis_server.url, "dlq", "groups", "celery")["ungrouped"] == 1200

    done = morgue.json("--url", redis_server.url, "dlq", "regroup", "celery")
    assert done == {"queue": "celery", "scanned": 1200, "grouped": 1200}
    data = morgue.json("--url", redis_server.url, "dlq", "groups", "celery")
    assert (data["ungrouped"], [g["count"] for g in data["groups"]]) == (0, [1200])
    again = morgue("--url", redis_server.url, "dlq", "regroup", "celery")
    assert again.stdout == "grouped 0 entries of the 1,200 read in 'celery'\n"


def test_groups_of_an_unknown_queue_fail_with_one_line(
    morgue: Morgue, redis_server: RedisServer, dlq: DeadLetterQueue
) -> None:
    dlq.add(make_entry("t1", queue="known"))
    for command in ("groups", "regroup"):
        result = morgue("--url", redis_server.url, "dlq", command, "nope")
        assert result.returncode == 1
        assert one_error_line(result) == "Error: no queue 'nope' in the DLQ (queues: known)"


def test_groups_limit_lists_the_largest_and_counts_them_all(
    morgue: Morgue, redis_server: RedisServer, dlq: DeadLetterQueue
) -> None:
    # 300 groups: a message formatted into the task's name (one group per failure).
    dlq.add_many(make_entry(f"t{n}", task=f"proj.tasks.order_{n}") for n in range(300))
    dlq.add_many(make_entry(f"big{n}", task="proj.tasks.order_7") for n in range(4))
    data = morgue.json("--url", redis_server.url, "dlq", "groups", "celery", "--limit", "2")
    assert (data["total"], data["total_groups"], len(data["groups"])) == (304, 300, 2)
    assert [g["count"] for g in data["groups"]] == [5, 1]
    table = morgue("--url", redis_server.url, "dlq", "groups", "celery")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert len(lines) == 1 + 50 + 1
    assert lines[-1] == "300 groups, 304 entries in 'celery'; the largest 50 shown (--limit)"
    bad = morgue("--url", redis_server.url, "dlq", "groups", "celery", "--limit", "0")
    assert bad.returncode == 2 and "--limit" in one_error_line(bad)


def test_regroup_rebuild_recounts_from_the_entries(
    morgue: Morgue, redis_server: RedisServer, redis_client: redis.Redis, dlq: DeadLetterQueue
) -> None:
    ids = dlq.add_many(make_entry(f"t{n}", task=f"proj.tasks.t{n % 3}") for n in range(30))
    group = dlq.get("celery", str(ids[0])).group
    redis_client.hincrby(dlq.groups_key("celery"), group, 100)
    redis_client.xdel(dlq.key("celery"), str(ids[1]))  # by hand: still counted
    done = morgue.json("--url", redis_server.url, "dlq", "regroup", "celery", "--rebuild")
    assert done == {"queue": "celery", "scanned": 29, "indexed": 0, "stale": 1}
    data = morgue.json("--url", redis_server.url, "dlq", "groups", "celery")
    assert sorted(g["count"] for g in data["groups"]) == [9, 10, 10]
    text = morgue("--url", redis_server.url, "dlq", "regroup", "celery", "--rebuild")
    assert text.stdout == (
        "recounted the groups of the 29 entries in 'celery': 0 entries indexed, "
        "0 stale records removed\n"
    )
