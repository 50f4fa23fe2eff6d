"""The `morgue` command line against real Redis and workers, run in this process with click's
CliRunner; the real entry points (`python -m celery_morgue.tui.cli` on a terminal, `celery -A
proj morgue`) run as subprocesses.

Exit statuses under test: 0 done; 1 the work could not be done (one line on stderr, no
traceback); 2 usage error, including a destructive command without --yes when stdin is not a
terminal (CliRunner's stdin is not one).
"""

from __future__ import annotations

import json
import os
import pty
import select
import stat
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis
from celery import Celery
from click.testing import CliRunner

from celery_morgue import core
from celery_morgue.core import DeadLetterQueue
from celery_morgue.tui.cli import cli
from celery_morgue.tui.cli.output import cell_width
from celery_morgue.tui.cli.session import CelerySession
from celery_morgue.tui.demo.processes import RedisServer, free_port
from tests.helpers import (
    REPO,
    Morgue,
    Worker,
    celery_morgue,
    child_env,
    make_entry,
    one_error_line,
    wait_for,
    wait_for_entry,
)

ENTRY_KEYS = {
    "id",
    "task_id",
    "task",
    "queue",
    "args",
    "kwargs",
    "exception",
    "message",
    "traceback",
    "retries",
    "hostname",
    "failed_at",
}
PROFILE_KEYS = {
    "name",
    "default",
    "url",
    "broker_url",
    "prefix",
    "refresh",
    "inspect_timeout",
    "hard_limit",
    "grace",
    "readonly",
    "password_env",
    "username",
    "broker_password_env",
    "timeout",
    "cluster",
    "master_name",
}
TASK_KEYS = {"id", "task", "worker", "age", "hard_limit", "zombie"}


def assert_fits(text: str, width: int = 80) -> None:
    for line in text.splitlines():
        assert cell_width(line) <= width, f"{cell_width(line)} columns: {line!r}"


# -- no profile, --url -----------------------------------------------------------------------


def test_no_config_and_no_url_says_how_to_add_a_profile(morgue: Morgue) -> None:
    for args in (["queues"], [], ["dlq", "list", "celery"], ["tasks"]):
        result = morgue(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert "morgue profiles add NAME --url" in one_error_line(result)
    assert not morgue.config.exists()


def test_url_alone_works_without_a_config_file(
    morgue: Morgue, redis_server: RedisServer, dlq: DeadLetterQueue
) -> None:
    dlq.add(make_entry(queue="celery"))
    data = morgue.json("--url", redis_server.url, "queues")
    assert [row["queue"] for row in data] == ["celery"]
    assert not morgue.config.exists()


def test_a_bad_url_is_a_usage_error(morgue: Morgue) -> None:
    result = morgue("--url", "http://example.com", "queues")
    assert result.returncode == 2
    assert "not a Redis URL" in one_error_line(result)


# -- reading the DLQ ---------------------------------------------------------------------------


def test_queues_human_and_json_from_real_failures(
    morgue: Morgue, redis_server: RedisServer, worker: Worker, dlq: DeadLetterQueue
) -> None:
    wait_for_entry(dlq, "celery", worker.send("boom", "first"))
    wait_for_entry(dlq, "celery", worker.send("boom", "second"))
    wait_for_entry(dlq, "other", worker.send("boom", "third", queue="other"))

    data = morgue.json("--url", redis_server.url, "queues")
    assert [set(row) for row in data] == [{"queue", "total", "oldest", "newest", "groups"}] * 2
    assert [(row["queue"], row["total"]) for row in data] == [("celery", 2), ("other", 1)]
    assert data[0]["oldest"] <= data[0]["newest"]

    result = morgue("--url", redis_server.url, "queues")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["queue", "total", "oldest", "(UTC)", "newest", "(UTC)"]
    assert lines[1].split()[:2] == ["celery", "2"]
    assert lines[2].split()[:2] == ["other", "1"]
    assert_fits(result.stdout)


def test_queues_on_an_empty_dlq(
    morgue: Morgue, redis_server: RedisServer, dlq: DeadLetterQueue
) -> None:
    assert morgue.json("--url", redis_server.url, "queues") == []
    result = morgue("--url", redis_server.url, "queues")
    assert (result.returncode, result.stdout) == (0, "the DLQ is empty\n")


def test_dlq_list_pages_in_json_and_in_a_table(
    morgue: Morgue, redis_server: RedisServer, worker: Worker, dlq: DeadLetterQueue
) -> None:
    ids = [worker.send("boom", f"failure number {n} " + "x" * 80) for n in range(3)]
    for task_id in ids:
        wait_for_entry(dlq, "celery", task_id)
    url = ["--url", redis_server.url]

    first = morgue.json(*url, "dlq", "list", "celery", "--limit", "2")
    assert set(first) == {"queue", "total", "items", "next"}
    assert (first["queue"], first["total"], len(first["items"])) == ("celery", 3, 2)
    for item in first["items"]:
        assert set(item) >= ENTRY_KEYS
        assert item["exception"] == "ValueError"
        assert item["task"] == "tests.workerapp.boom"
    assert first["next"] == first["items"][-1]["id"]
    second = morgue.json(*url, "dlq", "list", "celery", "--limit", "2", "--cursor", first["next"])
    assert len(second["items"]) == 1
    assert second["next"] is None
    # Newest first, and together the pages hold every failure exactly once.
    both = first["items"] + second["items"]
    assert sorted(item["task_id"] for item in both) == sorted(ids)
    stream_ids = [tuple(map(int, item["id"].split("-"))) for item in both]
    assert stream_ids == sorted(stream_ids, reverse=True)

    result = morgue(*url, "dlq", "list", "celery", "--limit", "2")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["id", "failed", "(UTC)"]
    assert lines[1].startswith(first["items"][0]["id"])
    assert "ValueError" in lines[1]
    assert lines[-1] == f"2 of 3 in 'celery'; next page: --cursor {first['next']}"
    assert "…" in lines[1]  # the long message was cut to fit
    assert_fits(result.stdout)


def test_dlq_show_in_json_and_literally_in_text(
    morgue: Morgue, redis_server: RedisServer, dlq: DeadLetterQueue
) -> None:
    hostile = "red \x1b[31mALERT\x1b[0m \u202egnp.exe [bold]x[/bold]"
    entry = make_entry(
        queue="celery",
        message=hostile,
        args=[hostile, 2],
        traceback=f"Traceback (most recent call last):\n  line\nValueError: {hostile}\n",
    )
    entry_id = dlq.add(entry)
    url = ["--url", redis_server.url]

    shown = morgue.json(*url, "dlq", "show", "celery", entry_id)
    assert shown == dlq.get("celery", entry_id).as_dict()
    assert set(shown) >= ENTRY_KEYS
    assert shown["message"] == hostile

    result = morgue(*url, "dlq", "show", "celery", entry_id)
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout
    assert "\u202e" not in result.stdout
    assert "red \\x1b[31mALERT\\x1b[0m \\u202egnp.exe [bold]x[/bold]" in result.stdout
    assert f"id:        {entry_id}" in result.stdout
    assert "traceback:\n  Traceback (most recent call last):\n    line\n" in result.stdout


def test_unknown_queue_and_entry_fail_with_one_line(
    morgue: Morgue, redis_server: RedisServer, dlq: DeadLetterQueue
) -> None:
    dlq.add(make_entry(queue="celery"))
    url = ["--url", redis_server.url]
    for args in (["dlq", "list", "nope"], ["dlq", "show", "nope", "1-0"]):
        result = morgue(*url, *args)
        assert result.returncode == 1
        assert one_error_line(result) == "Error: no queue 'nope' in the DLQ (queues: celery)"
    result = morgue(*url, "dlq", "show", "celery", "1-0")
    assert result.returncode == 1
    assert one_error_line(result) == "Error: no entry 1-0 in queue 'celery'"
    result = morgue(*url, "dlq", "show", "celery", "not-an-id")
    assert result.returncode == 2
    assert "is not an entry id" in result.stderr


# -- changing the DLQ ------------------------------------------------------------------------


def test_delete_needs_yes_without_a_terminal(
    morgue: Morgue, redis_server: RedisServer, dlq: DeadLetterQueue
) -> None:
    keep, gone = dlq.add(make_entry()), dlq.add(make_entry())
    url = ["--url", redis_server.url]
    refused = morgue(*url, "dlq", "delete", "celery", gone)
    assert refused.returncode == 2
    assert "stdin is not a terminal" in one_error_line(refused)
    assert "--yes" in refused.stderr
    assert dlq.size("celery") == 2

    done = morgue(*url, "dlq", "delete", "celery", gone, "--yes")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "deleted 1 entry from 'celery'\n"
    assert [e.id for e in dlq.iter_entries("celery")] == [keep]

    partial = morgue(*url, "dlq", "delete", "celery", keep, "1-0", "--yes", "--json")
    assert partial.returncode == 1
    assert json.loads(partial.stdout) == {
        "queue": "celery",
        "deleted": [keep],
        "not_found": ["1-0"],
    }
    assert one_error_line(partial) == "Error: not found in 'celery': 1-0"


def test_clear_refuses_without_yes_naming_queue_and_count(
    morgue: Morgue, redis_server: RedisServer, dlq: DeadLetterQueue
) -> None:
    for _ in range(3):
        dlq.add(make_entry(queue="other"))
    url = ["--url", redis_server.url]
    refused = morgue(*url, "dlq", "clear", "other")
    assert refused.returncode == 2
    line = one_error_line(refused)
    assert "Clear queue 'other': delete its 3 entries" in line
    assert dlq.size("other") == 3
    data = morgue.json(*url, "dlq", "clear", "other", "--yes")
    assert data["cleared"] == 3
    assert data["queue"] == "other"
    assert dlq.size("other") == 0
    again = morgue(*url, "dlq", "clear", "other", "--yes")
    assert again.returncode == 1
    assert "no queue 'other'" in one_error_line(again)


def run_in_terminal(
    argv: list[str], env: dict[str, str], answer: bytes, meanwhile: Callable[[], None]
) -> tuple[int, str, str]:
    """Run with stdin on a pseudo-terminal; call ``meanwhile`` at the prompt, then answer."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        argv, env=env, cwd=REPO, stdin=follower, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    os.close(follower)
    try:
        assert process.stderr is not None
        prompt = b""
        deadline = time.monotonic() + 60
        while b"[y/N]" not in prompt:
            assert time.monotonic() < deadline, f"no prompt: {prompt!r}"
            ready, _, _ = select.select([process.stderr], [], [], 0.2)
            if ready:
                chunk = os.read(process.stderr.fileno(), 4096)
                assert chunk, f"stderr closed before the prompt: {prompt!r}"
                prompt += chunk
        meanwhile()
        os.write(leader, answer)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(leader)
    return process.returncode, out.decode(), (prompt + err).decode()


def test_clear_on_a_terminal_asks_and_keeps_what_arrived_meanwhile(
    morgue: Morgue, redis_server: RedisServer, dlq: DeadLetterQueue
) -> None:
    first = [dlq.add(make_entry(queue="celery")) for _ in range(2)]
    late: list[str] = []
    code, out, err = run_in_terminal(
        morgue.argv(["--url", redis_server.url, "dlq", "clear", "celery"]),
        child_env(morgue.config),
        b"y\n",
        lambda: late.append(dlq.add(make_entry(queue="celery"))),
    )
    assert code == 0, err
    assert f"Clear queue 'celery': delete its 2 entries (up to {first[-1]}" in err
    assert out == "cleared 2 entries from 'celery'\n"
    assert [e.id for e in dlq.iter_entries("celery")] == late


def test_a_no_on_the_terminal_changes_nothing(
    morgue: Morgue, redis_server: RedisServer, dlq: DeadLetterQueue
) -> None:
    entry_id = dlq.add(make_entry(queue="celery"))
    code, _out, err = run_in_terminal(
        morgue.argv(["--url", redis_server.url, "dlq", "delete", "celery", entry_id]),
        child_env(morgue.config),
        b"n\n",
        lambda: None,
    )
    assert code == 1
    assert "Aborted" in err
    assert dlq.get("celery", entry_id).id == entry_id


def test_requeue_sends_the_task_again_through_the_worker(
    morgue: Morgue,
    redis_server: RedisServer,
    worker: Worker,
    redis_client: redis.Redis,
    dlq: DeadLetterQueue,
) -> None:
    flag = f"flag:cli-{uuid.uuid4().hex[:6]}"
    task_id = worker.send("fails_until_flag", flag, queue="other")
    entry = wait_for_entry(dlq, "other", task_id)
    redis_client.set(flag, 1)
    data = morgue.json("--url", redis_server.url, "dlq", "requeue", "other", entry.id, "--yes")
    new_id = data["requeued"][entry.id]
    assert data == {
        "queue": "other",
        "requeued": {entry.id: new_id},
        "skipped_lossy": [],
        "skipped_busy": [],
        "skipped_unreadable": [],
        "already_requeued": {},
        "unroutable": {},
        "invalid": {},
        "retried": {},
        "not_found": [],
        "error": None,
    }
    done = wait_for(lambda: redis_client.get(f"done:{flag}"), timeout=30)
    assert json.loads(done) == {"task_id": new_id, "requeued_from": task_id}  # type: ignore[arg-type]
    assert dlq.size("other") == 0


def test_requeue_refuses_lossy_entries_unless_told(
    morgue: Morgue, redis_server: RedisServer, redis_client: redis.Redis, dlq: DeadLetterQueue
) -> None:
    # Nobody consumes "parked": what requeue sends stays in its Redis list to be counted.
    redis_client.delete("parked")
    lossy = dlq.add(make_entry(queue="parked", task="tests.workerapp.odd_arguments", args=[{1, 2}]))
    exact = dlq.add(make_entry(queue="parked", args=["fine"]))
    url = ["--url", redis_server.url]

    refused = morgue(*url, "dlq", "requeue", "parked", lossy, "--yes")
    assert refused.returncode == 1
    assert "pass --lossy" in one_error_line(refused)
    assert dlq.get("parked", lossy).id == lossy
    assert redis_client.llen("parked") == 0

    partial = morgue(*url, "dlq", "requeue", "parked", "--all", "--yes")
    assert partial.returncode == 1
    assert partial.stdout == "requeued 1 entry from 'parked'\n"
    assert f"1 lossy entry left in the queue ({lossy})" in one_error_line(partial)
    assert redis_client.llen("parked") == 1
    assert [e.id for e in dlq.iter_entries("parked")] == [lossy]

    done = morgue.json(*url, "dlq", "requeue", "parked", "--all", "--lossy", "--yes")
    assert list(done["requeued"]) == [lossy]
    assert redis_client.llen("parked") == 2
    assert exact not in done["requeued"]
    redis_client.delete("parked")


def test_requeue_needs_ids_or_all(morgue: Morgue, redis_server: RedisServer) -> None:
    result = morgue("--url", redis_server.url, "dlq", "requeue", "celery", "--yes")
    assert result.returncode == 2
    assert "give entry ids or --all" in result.stderr


# -- profiles ----------------------------------------------------------------------------------


def test_profile_round_trip_leaves_a_0600_file(morgue: Morgue, redis_server: RedisServer) -> None:
    added = morgue("profiles", "add", "local", "--url", redis_server.url)
    assert added.returncode == 0, added.stderr
    assert "it is the default" in added.stdout
    assert stat.S_IMODE(morgue.config.stat().st_mode) == 0o600
    added = morgue(
        "profiles", "add", "prod", "--url", "redis://prod.example:6379/0",
        "--readonly", "--refresh", "5", "--password-env", "PROD_REDIS_PW",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "default" not in added.stdout

    listed = morgue.json("profiles", "list")
    assert [(p["name"], p["default"], p["readonly"]) for p in listed] == [
        ("local", True, False),
        ("prod", False, True),
    ]
    assert set(listed[0]) == PROFILE_KEYS

    assert morgue("profiles", "default", "prod").returncode == 0
    shown = morgue.json("profiles", "show", "prod")
    assert (shown["default"], shown["refresh"], shown["password_env"]) == (
        True,
        5.0,
        "PROD_REDIS_PW",
    )
    table = morgue("profiles", "list")
    assert table.stdout.splitlines()[2].startswith("*  prod")
    assert_fits(table.stdout)

    refused = morgue("profiles", "remove", "local")
    assert refused.returncode == 2
    assert "--yes" in one_error_line(refused)
    assert morgue("profiles", "remove", "local", "--yes").returncode == 0
    assert [p["name"] for p in morgue.json("profiles", "list")] == ["prod"]
    assert morgue("profiles", "remove", "prod", "--yes").returncode == 0
    assert morgue.json("profiles", "list") == []
    assert stat.S_IMODE(morgue.config.stat().st_mode) == 0o600
    assert sorted(p.name for p in morgue.config.parent.iterdir()) == ["config.toml"]


def test_the_default_profile_is_used_and_unknown_ones_are_listed(
    morgue: Morgue, redis_server: RedisServer, dlq: DeadLetterQueue
) -> None:
    dlq.add(make_entry(queue="celery"))
    morgue("profiles", "add", "local", "--url", redis_server.url)
    morgue("profiles", "add", "dead", "--url", f"redis://127.0.0.1:{free_port()}/0")
    assert [row["queue"] for row in morgue.json("queues")] == ["celery"]
    result = morgue("--profile", "nope", "queues")
    assert result.returncode == 2
    assert one_error_line(result).endswith("(known profiles: dead, local)")
    result = morgue("profiles", "default", "nope")
    assert result.returncode == 2
    assert "known profiles: dead, local" in one_error_line(result)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--url", "http://x"], "--url: 'http://x' is not a Redis URL"),
        (["--url", "redis://h", "--refresh", "-1"], "--refresh: must be more than zero"),
        (["--url", "redis://h", "--grace", "-1"], "--grace: must be zero or more"),
        (["--url", "redis://h", "--password-env", "A-B"], "--password-env: must be an env"),
        (["--url", "redis://h", "--broker-url", "nope://x"], "--broker-url:"),
    ],
)
def test_profile_add_rejects_bad_values(morgue: Morgue, args: list[str], words: str) -> None:
    result = morgue("profiles", "add", "p", *args)
    assert result.returncode == 2
    assert words in one_error_line(result)
    assert not morgue.config.exists()


def test_profile_add_does_not_overwrite_without_replace(morgue: Morgue) -> None:
    assert morgue("profiles", "add", "p", "--url", "redis://a").returncode == 0
    result = morgue("profiles", "add", "p", "--url", "redis://b")
    assert result.returncode == 1
    assert "--replace" in one_error_line(result)
    assert morgue.json("profiles", "show", "p")["url"] == "redis://a"
    assert morgue("profiles", "add", "p", "--url", "redis://b", "--replace").returncode == 0
    assert morgue.json("profiles", "show", "p")["url"] == "redis://b"


CORRUPT = b'default = "a"\n[profiles.a\nurl = "redis://h"\n# hand-written notes\n'


@pytest.mark.parametrize(
    "args",
    [
        ["queues"],
        ["profiles", "list"],
        ["profiles", "add", "b", "--url", "redis://h"],
        ["profiles", "default", "a"],
        ["profiles", "remove", "a", "--yes"],
    ],
)
def test_a_corrupt_config_is_reported_and_left_unchanged(morgue: Morgue, args: list[str]) -> None:
    morgue.config.write_bytes(CORRUPT)
    result = morgue(*args)
    assert result.returncode == 1
    line = one_error_line(result)
    assert str(morgue.config) in line
    assert "line 2, column 12" in line
    assert morgue.config.read_bytes() == CORRUPT


def test_unknown_keys_are_one_line_errors(morgue: Morgue) -> None:
    morgue.config.write_text('[profiles.a]\nurl = "redis://h"\nrefesh = 3\n')
    result = morgue("queues")
    assert result.returncode == 1
    assert one_error_line(result) == (
        f"Error: {morgue.config}: profile 'a': refesh: unknown setting (known: url, "
        "broker_url, prefix, refresh, inspect_timeout, hard_limit, grace, readonly, "
        "password_env, username, broker_password_env, timeout, cluster, master_name)"
    )


def test_a_readonly_profile_refuses_every_destructive_command(
    morgue: Morgue, redis_server: RedisServer, dlq: DeadLetterQueue
) -> None:
    entry_id = dlq.add(make_entry(queue="celery"))
    morgue("profiles", "add", "ro", "--url", redis_server.url, "--readonly")
    for args in (
        ["dlq", "delete", "celery", entry_id, "--yes"],
        ["dlq", "clear", "celery", "--yes"],
        ["dlq", "requeue", "celery", entry_id, "--yes"],
        ["dlq", "requeue", "celery", "--all", "--yes"],
        ["zombies", "--revoke", "--yes"],
    ):
        result = morgue(*args)
        assert result.returncode == 1, args
        assert one_error_line(result).startswith("Error: profile 'ro' is read-only: refusing to")
    assert [e.id for e in dlq.iter_entries("celery")] == [entry_id]
    assert morgue.json("dlq", "list", "celery")["total"] == 1  # reading still works


# -- passwords -------------------------------------------------------------------------------

PASSWORD = "cli-s3cret/p@ss:word%"  # noqa: S105 - the test password


@pytest.fixture(scope="module")
def locked_redis() -> Iterator[RedisServer]:
    server = RedisServer(password=PASSWORD)
    server.start()
    yield server
    server.close()


def test_a_password_from_password_env_is_never_printed(
    morgue: Morgue, locked_redis: RedisServer
) -> None:
    client = redis.Redis.from_url(locked_redis.url, password=PASSWORD)
    locked = DeadLetterQueue(client)
    client.delete("parked")
    ids = [locked.add(make_entry(queue="celery", message=f"failure {n}")) for n in range(4)]
    env = {"LOCKED_PW": PASSWORD}
    added = morgue(
        "profiles", "add", "locked", "--url", locked_redis.url, "--password-env", "LOCKED_PW"
    )
    assert added.returncode == 0
    assert PASSWORD not in morgue.config.read_text()

    ok = [
        ["queues"],
        ["queues", "--json"],
        ["dlq", "list", "celery"],
        ["dlq", "list", "celery", "--json"],
        ["dlq", "show", "celery", ids[0]],
        ["dlq", "show", "celery", ids[0], "--json"],
        ["dlq", "delete", "celery", ids[0], "--yes"],
        ["dlq", "requeue", "celery", ids[1], "--yes"],  # the broker is this Redis: it needs it too
        ["tasks"],
        ["tasks", "--json"],
        ["zombies", "--json"],
        ["dlq", "clear", "celery", "--yes"],
        ["profiles", "list"],
        ["profiles", "list", "--json"],
        ["profiles", "show", "locked"],
        ["profiles", "show", "locked", "--json"],
    ]
    for args in ok:
        result = morgue(*args, env=env)
        assert result.returncode == 0, (args, result.stderr)
    assert client.llen("parked") == 0
    assert client.llen("celery") == 1  # the requeued task waits in the broker's queue
    assert locked.size("celery") == 0

    wrong = morgue("queues", env={"LOCKED_PW": "not-it"})
    assert wrong.returncode == 1
    assert "refused the credentials" in one_error_line(wrong)
    unset = morgue("queues")
    assert unset.returncode == 1
    assert "LOCKED_PW is not set" in one_error_line(unset)
    in_url = f"redis://:{quote(PASSWORD, safe='')}@127.0.0.1:{free_port()}/0"
    down = morgue("--url", in_url, "queues")
    assert down.returncode == 1
    assert ":***@127.0.0.1" in one_error_line(down)
    assert morgue("profiles", "add", "inurl", "--url", in_url).returncode == 0
    assert morgue("profiles", "show", "inurl").returncode == 0

    everything = "\n".join(morgue.transcript)
    assert PASSWORD not in everything
    assert quote(PASSWORD, safe="") not in everything
    assert "cli-s3cret" not in everything
    client.delete("celery")
    client.close()


# -- failures --------------------------------------------------------------------------------


def test_redis_down_is_exit_1_and_one_line(morgue: Morgue) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    for args in (
        ["queues"],
        ["dlq", "list", "celery", "--json"],
        ["dlq", "clear", "celery", "--yes"],
        ["tasks"],
        ["zombies", "--json"],
    ):
        result = morgue("--url", url, *args)
        assert result.returncode == 1, args
        line = one_error_line(result)
        assert line.startswith("Error: cannot reach ")
        assert line.count("cannot reach") == 1
        assert url in line
        assert result.stdout == ""


# -- the cluster -----------------------------------------------------------------------------


def test_tasks_and_zombies_from_a_real_worker(
    morgue: Morgue, redis_server: RedisServer, start_worker: Callable[..., Worker]
) -> None:
    sleeper = start_worker(redis_server.url, queues="sleepers", concurrency=1)
    task_id = sleeper.send("sleep", 60, queue="sleepers")
    url = ["--url", redis_server.url]

    def listed() -> dict[str, Any] | None:
        data = morgue.json(*url, "tasks")
        return next((t for t in data["tasks"] if t["id"] == task_id and t["age"]), None)

    task = wait_for(listed, timeout=30)
    assert isinstance(task, dict)
    assert set(task) >= TASK_KEYS
    assert (task["task"], task["worker"], task["hard_limit"]) == (
        "tests.workerapp.sleep",
        sleeper.name,
        300.0,
    )
    assert task["zombie"] is False
    wait_for(lambda: (listed() or {}).get("age", 0) > 1.5, timeout=30)
    snapshot = morgue.json(*url, "tasks", "--hard-limit", "1", "--grace", "0")
    assert set(snapshot) == {"taken_at", "workers", "unreachable", "tasks"}
    assert sleeper.name in snapshot["workers"]
    mine = next(t for t in snapshot["tasks"] if t["id"] == task_id)
    assert (mine["hard_limit"], mine["zombie"]) == (1.0, True)

    table = morgue(*url, "tasks", "--hard-limit", "1", "--grace", "0")
    row = next(line for line in table.stdout.splitlines() if line.startswith(task_id[:8]))
    assert row.rstrip().endswith("ZOMBIE")
    assert_fits(table.stdout)

    zombies = morgue.json(*url, "zombies", "--hard-limit", "1", "--grace", "0")
    assert set(zombies) == {"taken_at", "workers", "unreachable", "zombies", "revoke"}
    assert task_id in [t["id"] for t in zombies["zombies"]]
    assert zombies["revoke"] is None
    assert morgue(*url, "zombies").returncode == 0  # the default 300 s: no zombie yet

    refused = morgue(*url, "zombies", "--hard-limit", "1", "--grace", "0", "--revoke")
    assert refused.returncode == 2
    assert "--yes" in one_error_line(refused)
    assert wait_for(listed, timeout=5)  # still running

    bad = morgue(*url, "zombies", "--revoke", "--signal", "NOPE", "--yes")
    assert bad.returncode == 2

    revoked = morgue.json(
        *url,
        "zombies",
        "--hard-limit",
        "1",
        "--grace",
        "0",
        "--revoke",
        "--signal",
        "KILL",
        "--yes",
    )
    assert task_id in revoked["revoke"]["terminated"]
    wait_for(lambda: not any(t["id"] == task_id for t in morgue.json(*url, "tasks")["tasks"]))


# -- celery -A proj morgue -------------------------------------------------------------------


def test_celery_plugin_uses_the_apps_broker_and_dlq(
    redis_server: RedisServer, dlq: DeadLetterQueue, tmp_path: Path
) -> None:
    entry_id = dlq.add(make_entry(queue="celery"))
    env = child_env(tmp_path / "absent.toml", {"MORGUE_TEST_BROKER": redis_server.url})

    def celery(*args: str) -> subprocess.CompletedProcess[str]:
        return celery_morgue(env, *args)

    result = celery("queues")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1].split()[:2] == ["celery", "1"]
    result = celery("queues", "--json")
    assert [row["queue"] for row in json.loads(result.stdout)] == ["celery"]
    result = celery("dlq", "list", "celery", "--json")
    assert [item["id"] for item in json.loads(result.stdout)["items"]] == [entry_id]
    result = celery("dlq", "delete", "celery", entry_id)
    assert result.returncode == 2  # the same confirmation rules
    assert not (tmp_path / "absent.toml").exists()


def test_celery_plugin_takes_the_prefix_from_core_install(redis_server: RedisServer) -> None:
    app = Celery("prefixed", broker=redis_server.url, set_as_current=False)
    core.install(app, prefix="custom:")
    session = CelerySession(app)
    profile = session.profile()
    assert (profile.url, profile.prefix, profile.name) == (redis_server.url, "custom:", "prefixed")
    assert session.connection().dlq.key("q") == "custom:q"
    session.close()
    plain = CelerySession(Celery("plain", broker=redis_server.url, set_as_current=False))
    assert plain.profile().prefix == "dlq:"


# -- the UI ----------------------------------------------------------------------------------


def test_an_unknown_theme_is_a_usage_error_before_the_ui_starts(
    morgue: Morgue, redis_server: RedisServer
) -> None:
    for args in (["--theme", "no-such-theme"], ["ui", "--theme", "no-such-theme"]):
        result = morgue("--url", redis_server.url, *args)
        assert result.returncode == 2
        assert "unknown theme 'no-such-theme'" in one_error_line(result)


def test_the_ui_gets_the_resolved_profile_theme_mouse_and_keymap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only the UI's entry point is replaced: this checks what the CLI hands it.
    from celery_morgue.tui import app as ui_app

    calls: list[tuple[Any, dict[str, Any]]] = []

    def run_ui(profile: Any, *, theme: Any = None, mouse: bool = True, keymap: Any = None) -> None:
        calls.append((profile, {"theme": theme, "mouse": mouse, "keymap": keymap}))

    monkeypatch.setattr(ui_app, "run_ui", run_ui)
    config = tmp_path / "config.toml"
    config.write_text(
        'default = "b"\ntheme = "ansi-light"\n'
        '[profiles.a]\nurl = "redis://a"\n[profiles.b]\nurl = "redis://b"\nreadonly = true\n'
        '[keymap]\nquit_app = "ctrl+q"\n'
    )
    runner = CliRunner()
    assert runner.invoke(cli, ["--config", str(config)]).exit_code == 0
    assert runner.invoke(cli, ["--config", str(config), "--profile", "a", "ui", "--no-mouse",
                               "--theme", "ansi-dark"]).exit_code == 0  # fmt: skip
    assert runner.invoke(cli, ["--url", "redis://c", "ui"]).exit_code == 0
    assert [(p.name, p.url, p.readonly) for p, _ in calls] == [
        ("b", "redis://b", True),
        ("a", "redis://a", False),
        ("url", "redis://c", False),
    ]
    assert [options for _, options in calls] == [
        {"theme": "ansi-light", "mouse": True, "keymap": {"quit_app": "ctrl+q"}},
        {"theme": "ansi-dark", "mouse": False, "keymap": {"quit_app": "ctrl+q"}},
        {"theme": None, "mouse": True, "keymap": None},
    ]


def test_requeue_all_with_the_broker_down_fails_and_keeps_the_entries(
    morgue: Morgue, redis_server: RedisServer, dlq: DeadLetterQueue
) -> None:
    dlq.add_many([make_entry("a"), make_entry("b")])
    added = morgue(
        "profiles",
        "add",
        "nobroker",
        "--url",
        redis_server.url,
        "--broker-url",
        "redis://127.0.0.1:1/0",
    )
    assert added.returncode == 0, added.stderr
    result = morgue("--profile", "nobroker", "dlq", "requeue", "celery", "--all", "--yes", "--json")
    assert result.returncode == 1, result
    assert len(result.stderr.strip().splitlines()) == 1
    assert "requeue stopped part-way" in result.stderr
    assert json.loads(result.stdout)["error"]
    assert dlq.size("celery") == 2
    # Nothing stays claimed: a retry is not refused as "being requeued".
    again = morgue("--profile", "nobroker", "dlq", "requeue", "celery", "--all", "--yes")
    assert "being requeued" not in again.stderr


def test_click_usage_errors_are_one_line(morgue: Morgue, redis_server: RedisServer) -> None:
    for args in (
        ("dlq", "list", "celery", "--cursor", "garbage"),
        ("dlq", "list", "celery", "--limit", "0"),
        ("no-such-command",),
    ):
        result = morgue("--url", redis_server.url, *args)
        assert result.returncode == 2, result
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
