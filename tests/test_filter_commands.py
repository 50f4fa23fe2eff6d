"""`dlq list`, `dlq delete --all` and `dlq clear` under filters, through the command line
against a real Redis: JSON shapes, paging, confirmations that name the filter and the count,
--dry-run that changes nothing, and bad filter input as one line with exit 2."""

from __future__ import annotations

import collections
import json
from typing import Any

import pytest
import redis

from celery_morgue.core import DeadLetterQueue
from celery_morgue.core.entry import Entry
from celery_morgue.tui.demo.processes import RedisServer
from tests.helpers import Morgue, make_entry, one_error_line

QUEUE = "celery"
BUGS = {
    "find": ("shop.tasks.load", LookupError),
    "charge": ("shop.tasks.load", KeyError),
    "ship": ("shop.tasks.send", LookupError),
}
PAGE_KEYS = {"queue", "total", "items", "next"}


def failure(n: int, function: str) -> Entry:
    task, kind = BUGS[function]
    traceback = (
        "Traceback (most recent call last):\n"
        f'  File "/srv/app/shop/tasks.py", line 17, in {function}\n'
        "    raise Oops(text)\n"
    )
    return make_entry(
        f"t{n}-{function}", task=task, exception=kind(f"order {n} failed"), traceback=traceback
    )


def three_bugs(
    dlq: DeadLetterQueue, count: int = 140
) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Interleaved failures of the three bugs: each bug's ids (oldest first) and group."""
    pattern = ["find", "charge", "find", "ship", "find", "charge", "find"]
    functions = [pattern[n % len(pattern)] for n in range(count)]
    ids = dlq.add_many(failure(n, function) for n, function in enumerate(functions))
    by_bug: dict[str, list[str]] = collections.defaultdict(list)
    for function, entry_id in zip(functions, ids, strict=True):
        assert isinstance(entry_id, str)
        by_bug[function].append(entry_id)
    groups = {}
    for function, bug_ids in by_bug.items():
        entry = dlq.get(QUEUE, bug_ids[0])
        assert isinstance(entry, Entry)
        groups[function] = entry.group
    return dict(by_bug), groups


def newest_first(ids: list[str]) -> list[str]:
    return sorted(ids, key=lambda i: tuple(map(int, i.split("-"))), reverse=True)


def everything(client: redis.Redis, dlq: DeadLetterQueue) -> dict[str, Any]:
    """The stream, the group counts and every group index, to compare before and after."""
    groups = client.hgetall(dlq.groups_key(QUEUE))
    return {
        "stream": client.xrange(dlq.key(QUEUE)),
        "groups": groups,
        "indexes": {g: client.zrange(dlq.group_key(QUEUE, g.decode()), 0, -1) for g in groups},
    }


@pytest.fixture
def url(redis_server: RedisServer) -> str:
    return redis_server.url


def test_a_filtered_list_pages_by_cursor_with_the_matching_total(
    morgue: Morgue, url: str, dlq: DeadLetterQueue
) -> None:
    bugs, groups = three_bugs(dlq)
    ids: list[str] = []
    cursor: list[str] = []
    while True:
        data = morgue.json(
            "--url", url, "dlq", "list", QUEUE, "--group", groups["charge"], "--limit", "7", *cursor
        )
        assert set(data) == PAGE_KEYS | {"filter"}
        assert data["filter"] == {"group": groups["charge"]}
        assert (data["queue"], data["total"]) == (QUEUE, len(bugs["charge"]))
        ids += [item["id"] for item in data["items"]]
        if data["next"] is None:
            break
        cursor = ["--cursor", data["next"]]
    assert ids == newest_first(bugs["charge"])

    by_task = morgue.json(
        "--url",
        url,
        "dlq",
        "list",
        QUEUE,
        "--task",
        "shop.tasks.load",
        "--exception",
        "LookupError",
        "--grep",
        "ORDER 1",
    )
    expected = [i for n, i in enumerate(bugs["find"]) if "order 1" in entry_message(dlq, i)]
    assert [item["id"] for item in by_task["items"]] == newest_first(expected)
    assert by_task["total"] == len(expected) > 1
    assert by_task["filter"] == {
        "task": "shop.tasks.load",
        "exception": "LookupError",
        "grep": "ORDER 1",
    }
    # Without a filter the page is as it always was: no "filter" key.
    plain = morgue.json("--url", url, "dlq", "list", QUEUE, "--limit", "3")
    assert set(plain) == PAGE_KEYS and plain["total"] == 140


def entry_message(dlq: DeadLetterQueue, entry_id: str) -> str:
    entry = dlq.get(QUEUE, entry_id)
    assert isinstance(entry, Entry)
    return entry.message


def test_the_table_says_what_the_filter_matched(
    morgue: Morgue, url: str, dlq: DeadLetterQueue
) -> None:
    bugs, groups = three_bugs(dlq)
    result = morgue("--url", url, "dlq", "list", QUEUE, "--group", groups["charge"], "--limit", "5")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1 + 5 + 1
    assert lines[-1].startswith(
        f"5 of {len(bugs['charge'])} entries of group {groups['charge']} (KeyError in load) "
        f"in 'celery'; next page: --cursor "
    )


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        (["--since", "yesterday"], "'yesterday' is not a time"),
        (["--until", "2x"], "'2x' is not a time"),
        (["--group", "zz"], "'zz' is not a group id"),
        (["--since", "1h", "--until", "2h"], "--since is after --until"),
        (["--task", ""], "must not be empty"),
        (["--until", "1969-12-31"], "--until is before 1970"),
        (["--since", "99999999999d"], "too long ago"),
        (["--since", "10000000000000h"], "too long ago"),
    ],
)
def test_bad_filter_input_is_one_line_and_exit_2(
    morgue: Morgue, url: str, dlq: DeadLetterQueue, options: list[str], complaint: str
) -> None:
    three_bugs(dlq, 10)
    for command in (["list", QUEUE], ["delete", QUEUE, "--all", "--yes"], ["clear", QUEUE]):
        result = morgue("--url", url, "dlq", *command, *options)
        assert result.returncode == 2
        assert complaint in one_error_line(result)
    assert dlq.size(QUEUE) == 10


def test_a_since_before_1970_is_no_lower_bound(
    morgue: Morgue, url: str, dlq: DeadLetterQueue
) -> None:
    three_bugs(dlq, 10)
    for since in ("0001-01-01", "1969-12-31T23:59:59"):
        listed = morgue("--url", url, "dlq", "list", QUEUE, "--since", since, "--json")
        assert listed.returncode == 0, listed.stderr
        assert json.loads(listed.stdout)["total"] == 10
        dry = morgue("--url", url, "dlq", "clear", QUEUE, "--since", since, "--dry-run", "--json")
        assert dry.returncode == 0, dry.stderr
        assert json.loads(dry.stdout)["count"] == 10
    assert dlq.size(QUEUE) == 10


def test_ids_and_all_do_not_mix_and_filters_need_all(
    morgue: Morgue, url: str, dlq: DeadLetterQueue
) -> None:
    bugs, groups = three_bugs(dlq, 10)
    some = bugs["find"][0]
    both = morgue("--url", url, "dlq", "delete", QUEUE, some, "--all", "--yes")
    assert both.returncode == 2 and "not both" in one_error_line(both)
    neither = morgue("--url", url, "dlq", "delete", QUEUE, "--yes")
    assert neither.returncode == 2 and "not both" in one_error_line(neither)
    filtered = morgue("--url", url, "dlq", "delete", QUEUE, some, "--group", groups["find"], "-y")
    assert filtered.returncode == 2 and "go with --all" in one_error_line(filtered)
    assert dlq.size(QUEUE) == 10


def test_dry_run_changes_nothing_and_says_what_and_how_many(
    morgue: Morgue, url: str, dlq: DeadLetterQueue, redis_client: redis.Redis
) -> None:
    bugs, groups = three_bugs(dlq)
    before = everything(redis_client, dlq)
    newest = dlq.newest_id(QUEUE)
    data = morgue.json(
        "--url", url, "dlq", "delete", QUEUE, "--all", "--group", groups["ship"], "--dry-run"
    )
    assert data == {
        "queue": QUEUE,
        "dry_run": True,
        "filter": {"group": groups["ship"]},
        "count": len(bugs["ship"]),
        "up_to": newest,
        "sample_ids": newest_first(bugs["ship"])[:5],
    }
    text = morgue("--url", url, "dlq", "clear", QUEUE, "--task", "shop.tasks.load", "--dry-run")
    assert text.returncode == 0, text.stderr
    count = len(bugs["find"] + bugs["charge"])
    assert text.stdout.startswith(
        f"would delete {count} entries of task shop.tasks.load from 'celery' "
        f"(up to {newest}; newer ones are kept), e.g. "
    )
    whole = morgue.json("--url", url, "dlq", "clear", QUEUE, "--dry-run")
    assert (whole["count"], whole["filter"]) == (140, {})
    ids = morgue.json("--url", url, "dlq", "delete", QUEUE, bugs["find"][0], "--dry-run")
    assert (ids["count"], ids["sample_ids"]) == (1, [bugs["find"][0]])
    assert everything(redis_client, dlq) == before


def test_delete_all_asks_with_the_filter_and_count_then_deletes_only_those(
    morgue: Morgue, url: str, dlq: DeadLetterQueue, redis_client: redis.Redis
) -> None:
    bugs, groups = three_bugs(dlq)
    group = groups["charge"]
    asked = morgue("--url", url, "dlq", "delete", QUEUE, "--all", "--group", group)
    assert asked.returncode == 2
    assert one_error_line(asked) == (
        f"Error: Delete {len(bugs['charge'])} entries of group {group} (KeyError in load) "
        "from 'celery': not confirmed (stdin is not a terminal); pass --yes"
    )
    assert dlq.size(QUEUE) == 140
    done = morgue.json("--url", url, "dlq", "delete", QUEUE, "--all", "--group", group, "--yes")
    assert done == {
        "queue": QUEUE,
        "filter": {"group": group},
        "up_to": newest_first([i for ids in bugs.values() for i in ids])[0],
        "deleted": len(bugs["charge"]),
    }
    left = {entry.id for entry in dlq.iter_entries(QUEUE)}
    assert left == set(bugs["find"] + bugs["ship"])
    report = morgue.json("--url", url, "dlq", "groups", QUEUE)
    assert {g["group"]: g["count"] for g in report["groups"]} == {
        groups["find"]: len(bugs["find"]),
        groups["ship"]: len(bugs["ship"]),
    }
    again = morgue("--url", url, "dlq", "delete", QUEUE, "--all", "--group", group)
    assert again.returncode == 0
    assert again.stdout == f"nothing to delete in 'celery': no entries of group {group}\n"


def test_a_filtered_clear_keeps_the_rest(morgue: Morgue, url: str, dlq: DeadLetterQueue) -> None:
    bugs, groups = three_bugs(dlq)
    result = morgue("--url", url, "dlq", "clear", QUEUE, "--exception", "LookupError", "--yes")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f"cleared {len(bugs['find'] + bugs['ship'])} entries with exception LookupError "
        "from 'celery'\n"
    )
    assert {entry.id for entry in dlq.iter_entries(QUEUE)} == set(bugs["charge"])
    report = morgue.json("--url", url, "dlq", "groups", QUEUE)
    assert [(g["group"], g["count"]) for g in report["groups"]] == [
        (groups["charge"], len(bugs["charge"]))
    ]
    newest = dlq.newest_id(QUEUE)
    done = morgue.json("--url", url, "dlq", "clear", QUEUE, "--since", "1h", "--yes")
    assert done == {
        "queue": QUEUE,
        "filter": {"since": done["filter"]["since"]},
        "up_to": newest,
        "cleared": len(bugs["charge"]),
    }


def test_malformed_rows_do_not_break_filtered_commands(
    morgue: Morgue, url: str, dlq: DeadLetterQueue, redis_client: redis.Redis
) -> None:
    bugs, _ = three_bugs(dlq, 30)
    key = dlq.key(QUEUE)
    garbage = [
        redis_client.xadd(key, {"entry": b"{not json \xff"}).decode(),
        redis_client.xadd(key, {"payload": "someone else's", "group": "zz"}).decode(),
        redis_client.xadd(
            key, {"entry": json.dumps({"task_id": 1, "task": "shop.tasks.send"})}
        ).decode(),
    ]
    listed = morgue.json("--url", url, "dlq", "list", QUEUE, "--task", "shop.tasks.send")
    assert [item["id"] for item in listed["items"]] == newest_first(bugs["ship"])
    grep = morgue.json("--url", url, "dlq", "list", QUEUE, "--grep", "order")
    assert grep["total"] == 30 and len(grep["items"]) == 30
    done = morgue.json("--url", url, "dlq", "delete", QUEUE, "--all", "--grep", "order", "--yes")
    assert done["deleted"] == 30
    left = morgue.json("--url", url, "dlq", "list", QUEUE)
    assert [item["id"] for item in left["items"]] == newest_first(garbage)
    assert all(item["unreadable"] for item in left["items"])
