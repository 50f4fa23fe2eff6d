"""Redis ACL users: the three rule sets README publishes, against real ACL-enabled Redis.

The rules live in tests/acl_users.acl (ACL-file lines, passwords as placeholders) and README
quotes that file exactly. Each rule set is loaded into a real redis-server, the venv's 6.2 and
Debian's 7 where present (7 denies pub/sub channels by default, 6.2 allows them), and the role
does its work logged in as that user: a prefork worker captures, `morgue` operates, a
read-only operator lists and is refused the rest in one line.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from textual.pilot import Pilot

from celery_morgue.core import DeadLetterQueue
from celery_morgue.tui.app import MorgueApp
from celery_morgue.tui.demo.processes import RedisServer, find_redis_server
from celery_morgue.tui.dialogs import ConfirmScreen
from tests.helpers import (
    REPO,
    Morgue,
    Worker,
    add_entries,
    make_entry,
    notices,
    one_error_line,
    open_queue,
    profile_for,
    select_entry,
    stream_ms,
    until,
    wait_for_entry,
    wait_for_redis_clock,
    with_app,
)

RULES_FILE = REPO / "tests" / "acl_users.acl"
PASSWORDS = {
    "WORKER_PASSWORD": "w0rker-pw",
    "OPERATOR_PASSWORD": "0perator-pw",
    "READONLY_PASSWORD": "re4der-pw",
    "INSPECTOR_PASSWORD": "insp3ctor-pw",
}
USERS = {
    "worker": "morgue-worker",
    "operator": "morgue-operator",
    "readonly": "morgue-readonly",
    "inspector": "morgue-inspector",
}
DEBIAN_REDIS = "/usr/bin/redis-server"


def acl_lines() -> list[str]:
    return [line for line in RULES_FILE.read_text().splitlines() if line.strip()]


def binaries() -> list[str]:
    found = [find_redis_server()]
    if shutil.which(DEBIAN_REDIS) and DEBIAN_REDIS not in found:
        found.append(DEBIAN_REDIS)
    return found


@pytest.fixture(scope="module", params=binaries())
def acl_redis(request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    """A redis-server with the three users as the rules say (the default user stays the admin)."""
    server = RedisServer()
    server.binary = request.param
    server.start()
    admin = redis.Redis.from_url(server.url)
    for line in acl_lines():
        for placeholder, password in PASSWORDS.items():
            line = line.replace(placeholder, password)
        keyword, name, *rules = line.split()
        assert keyword == "user"
        admin.execute_command("ACL", "SETUSER", name, *rules)
    admin.close()
    yield server
    server.close()


@pytest.fixture
def admin(acl_redis: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(acl_redis.url)
    client.flushall()
    yield client
    client.close()


def url_of(server: RedisServer, role: str) -> str:
    password = PASSWORDS[f"{role.upper()}_PASSWORD"]
    return f"redis://{USERS[role]}:{password}@127.0.0.1:{server.port}/0"


def test_readme_quotes_the_rules_exactly() -> None:
    readme = (REPO / "README.md").read_text()
    assert "## ACL users" in readme
    assert "```\n" + RULES_FILE.read_text() + "```" in readme


@pytest.mark.redis
@pytest.mark.worker
@pytest.mark.slow
def test_a_worker_logged_in_as_the_worker_user_captures_failures(
    acl_redis: RedisServer, admin: redis.Redis, tmp_path: Path
) -> None:
    started = Worker(acl_redis.url, tmp_path, env={"MORGUE_TEST_DLQ": url_of(acl_redis, "worker")})
    started.start()
    try:
        task_id = started.send("boom", "refused by nobody")
        entry = wait_for_entry(DeadLetterQueue(admin), "celery", task_id)
        assert entry.exception == "ValueError"
    finally:
        started.stop()
    assert "NOPERM" not in started.log()


@pytest.mark.redis
def test_the_worker_user_cannot_touch_other_keys(
    acl_redis: RedisServer, admin: redis.Redis
) -> None:
    admin.set("orders:1", "paid")
    client = redis.Redis.from_url(url_of(acl_redis, "worker"))
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.get("orders:1")
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.flushall()
    client.close()


@pytest.mark.redis
def test_the_operator_user_runs_every_morgue_command(
    acl_redis: RedisServer, admin: redis.Redis, morgue: Morgue
) -> None:
    dlq = DeadLetterQueue(admin)
    ids = add_entries(dlq, "celery", 4)
    url = url_of(acl_redis, "operator")
    run = ["--url", url]
    assert morgue.json(*run, "queues")[0]["total"] == 4
    assert morgue.json(*run, "dlq", "list", "celery")["total"] == 4
    assert morgue.json(*run, "dlq", "groups", "celery")
    assert morgue.json(*run, "dlq", "show", "celery", ids[0])["id"] == ids[0]
    assert morgue(*run, "tasks", "--json").returncode == 0
    assert morgue(*run, "zombies", "--revoke", "--yes").returncode == 0
    for args in (
        ["dlq", "requeue", "celery", ids[0], "--yes"],
        ["dlq", "delete", "celery", ids[1], "--yes"],
        ["dlq", "clear", "celery", "--yes"],
    ):
        result = morgue(*run, *args)
        assert result.returncode == 0, (args, result.stderr)
    assert dlq.size("celery") == 0
    assert admin.llen("celery") == 1  # the requeued task, on the broker's queue


@pytest.mark.redis
def test_the_readonly_users_list_and_are_refused_the_rest_in_one_line(
    acl_redis: RedisServer, admin: redis.Redis, morgue: Morgue
) -> None:
    """The read-only operator: morgue-readonly on the DLQ, morgue-inspector on the broker's
    pidbox (the same Redis here), in a profile that is not ``readonly``: Redis refuses."""
    dlq = DeadLetterQueue(admin)
    entry_id = dlq.add(make_entry(queue="celery"))
    admin.rpush("celery", "a task message")
    host = f"127.0.0.1:{acl_redis.port}"
    env = {"RO_PW": PASSWORDS["READONLY_PASSWORD"], "INSPECT_PW": PASSWORDS["INSPECTOR_PASSWORD"]}
    added = morgue(
        *("profiles", "add", "ro", "--url", f"redis://{host}/0", "--username", USERS["readonly"]),
        *("--password-env", "RO_PW", "--broker-url", f"redis://{USERS['inspector']}@{host}/0"),
        *("--broker-password-env", "INSPECT_PW"),
    )
    assert added.returncode == 0, added.stderr
    assert morgue.json("queues", env=env)[0]["total"] == 1
    assert morgue.json("dlq", "list", "celery", env=env)["total"] == 1
    assert morgue.json("dlq", "groups", "celery", env=env)
    assert morgue("tasks", "--json", env=env).returncode == 0
    assert morgue("zombies", "--json", env=env).returncode == 0
    for args in (
        ["dlq", "delete", "celery", str(entry_id), "--yes"],
        ["dlq", "clear", "celery", "--yes"],
        ["dlq", "requeue", "celery", str(entry_id), "--yes"],
    ):
        result = morgue(*args, env=env)
        assert result.returncode != 0, args
        line = one_error_line(result)
        assert "ACL user may not do this" in line, line
        assert "NOPERM" in line
        assert PASSWORDS["READONLY_PASSWORD"] not in line
        as_json = morgue(*args, "--json", env=env)
        assert as_json.returncode == result.returncode
        assert one_error_line(as_json) == line
    assert [e.id for e in dlq.iter_entries("celery")] == [entry_id]
    assert admin.lrange("celery", 0, -1) == [b"a task message"]


@pytest.mark.redis
def test_the_ui_as_the_readonly_user_starts_and_says_noperm_on_the_first_delete(
    acl_redis: RedisServer, admin: redis.Redis
) -> None:
    dlq = DeadLetterQueue(admin)
    ids = add_entries(dlq, "celery", 2)
    password = PASSWORDS["READONLY_PASSWORD"]
    profile = profile_for(
        f"redis://127.0.0.1:{acl_redis.port}/0",
        username=USERS["readonly"],
        password_env="MORGUE_TEST_RO_PW",  # noqa: S106 - a variable name
        broker_url=f"redis://{USERS['inspector']}@127.0.0.1:{acl_redis.port}/0",
        broker_password_env="MORGUE_TEST_INSPECT_PW",  # noqa: S106
    )

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        found = await open_queue(pilot, app, "celery")
        await select_entry(pilot, found, ids[0])
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="delete dialog")
        await pilot.press("y")
        await until(
            pilot,
            lambda: any("NOPERM" in notice for notice in notices(app)),
            what="a NOPERM notice",
        )
        shown = [notice for notice in notices(app) if "NOPERM" in notice]
        assert "ACL user may not do this" in shown[0]
        assert "\n" not in shown[0] and password not in shown[0]

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MORGUE_TEST_RO_PW", password)
        patch.setenv("MORGUE_TEST_INSPECT_PW", PASSWORDS["INSPECTOR_PASSWORD"])
        with_app(profile, scenario)
    assert dlq.size("celery") == 2


def test_the_readonly_users_are_enough_for_the_metrics_exporter(
    acl_redis: RedisServer, admin: redis.Redis, morgue: Morgue
) -> None:
    dlq = DeadLetterQueue(admin)
    dlq.add(make_entry(queue="celery"))
    host = f"127.0.0.1:{acl_redis.port}"
    env = {"RO_PW": PASSWORDS["READONLY_PASSWORD"], "INSPECT_PW": PASSWORDS["INSPECTOR_PASSWORD"]}
    added = morgue(
        *("profiles", "add", "ro", "--url", f"redis://{host}/0", "--username", USERS["readonly"]),
        *("--password-env", "RO_PW", "--broker-url", f"redis://{USERS['inspector']}@{host}/0"),
        *("--broker-password-env", "INSPECT_PW", "--readonly"),
    )
    assert added.returncode == 0, added.stderr
    scraped = morgue("metrics", "--once", env=env)
    assert scraped.returncode == 0, scraped.stderr
    lines = scraped.stdout.splitlines()
    assert "morgue_up 1.0" in lines
    assert 'morgue_dlq_entries{queue="celery"} 1.0' in lines
    assert 'morgue_dlq_captured_total{queue="celery",reason="failed"} 1.0' in lines
    # The inspector may broadcast: the workers were asked (none answer here).
    assert "morgue_inspect_up 1.0" in lines and "morgue_workers_up 0.0" in lines
    assert PASSWORDS["READONLY_PASSWORD"] not in scraped.stdout + scraped.stderr


def test_the_readonly_user_lists_queues_whose_rows_are_past_retention(
    acl_redis: RedisServer, admin: redis.Redis, morgue: Morgue
) -> None:
    """Reads apply retention, which writes: a read-only user reads on without it."""
    writer = DeadLetterQueue(admin, retention=5)
    old = [writer.add(make_entry(queue="celery")) for _ in range(3)]
    # A newer entry keeps the stream alive (its TTL is the retention since the last write)
    # past the old rows' own retention.
    wait_for_redis_clock(admin, stream_ms(old[-1]) + 3500)
    new = writer.add(make_entry(queue="celery"))
    wait_for_redis_clock(admin, stream_ms(old[-1]) + 5100)
    url = url_of(acl_redis, "readonly")
    queues = morgue.json("--url", url, "queues")
    assert [(q["queue"], q["total"]) for q in queues] == [("celery", 4)]
    listed = morgue.json("--url", url, "dlq", "list", "celery")
    assert [item["id"] for item in listed["items"]] == [new, *reversed(old)]
    assert morgue.json("--url", url, "dlq", "groups", "celery")
    # The reader trimmed nothing; a writer's read does.
    assert admin.xlen("dlq:celery") == 4
    assert writer.size("celery") == 1
