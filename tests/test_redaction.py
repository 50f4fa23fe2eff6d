"""Passwords never shown: every URL of a failover list, on every path that prints or stores one.

The output paths are run for real: the `morgue` command (in this process, with CliRunner), a
reaper run whose report is read back from the test Redis, and the log records of capture and
reaper.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import click
import pytest
import redis
from celery import Celery
from click.testing import CliRunner

from celery_morgue import core
from celery_morgue.core.dlq import DeadLetterQueue
from celery_morgue.core.urls import (
    UNPARSEABLE,
    RedisURLError,
    normalise_redis_url,
    redact_url,
    redact_urls,
    resolve_redis_url,
    url_passwords,
)
from celery_morgue.core.zombies import ClusterUnavailable, active_tasks
from celery_morgue.tui.cli.session import MorgueGroup, ProfileSession
from celery_morgue.tui.connection import connect_profile, scrub, with_password
from celery_morgue.tui.demo.processes import RedisServer
from celery_morgue.tui.profiles import Profile
from tests.helpers import Morgue, make_entry, one_error_line

SECRET = "S3cretPw"  # noqa: S105 - the test password
REDIS_FAILOVER = f"redis://:{SECRET}@127.0.0.1:1;redis://:{SECRET}@127.0.0.1:2"
SENTINELS = f"sentinel://:{SECRET}@h1:26379;sentinel://:{SECRET}@h2:26379"
AMQP_FAILOVER = f"amqp://user:{SECRET}@127.0.0.1:1;amqp://user:{SECRET}@127.0.0.1:2"


# -- redact_url ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (REDIS_FAILOVER, "redis://:***@127.0.0.1:1;redis://:***@127.0.0.1:2"),
        (SENTINELS, "sentinel://:***@h1:26379;sentinel://:***@h2:26379"),
        (AMQP_FAILOVER, "amqp://user:***@127.0.0.1:1;amqp://user:***@127.0.0.1:2"),
        (f"redis://h/0?password={SECRET};redis://h2/0", "redis://h/0?password=***;redis://h2/0"),
        (f"redis://h;rediss://u:{SECRET}@h2", "redis://h;rediss://u:***@h2"),
        (f"unix:///run/redis.sock?PassWord={SECRET}", "unix:///run/redis.sock?PassWord=***"),
        (f"sqs://key:{SECRET}@", "sqs://key:***@"),
        (f"redis://u:{quote('p@;ss', safe='')}@h/0", "redis://u:***@h/0"),
        (f"  redis://:{SECRET}@h  ", "redis://:***@h"),
        ("redis://h:6379/0", "redis://h:6379/0"),
        ("redis://h;redis://i", "redis://h;redis://i"),
        ("", ""),
        # Not parseable: nothing of it is shown.
        (f"redis://:{SECRET}@[::1", UNPARSEABLE),
        (f"redis://:{SECRET}@h:port", UNPARSEABLE),
        (f"1redis://:{SECRET}@h", UNPARSEABLE),
        (f"redis::{SECRET}@h", UNPARSEABLE),
        # An unencoded ';' in a password: kombu would split there; either way nothing leaks.
        (f"redis://:{SECRET[:4]};{SECRET[4:]}@h", f"{UNPARSEABLE};{UNPARSEABLE}"),
    ],
)
def test_every_password_of_every_url_is_redacted(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert SECRET not in redact_url(url)


def test_a_list_of_urls_is_redacted_as_one_line() -> None:
    urls = REDIS_FAILOVER.split(";")
    assert redact_urls(urls) == redact_url(REDIS_FAILOVER)
    assert redact_urls(tuple(urls)) == redact_url(REDIS_FAILOVER)
    assert redact_urls(None) == ""
    assert redact_urls([urls[0], 3]) == f"redis://:***@127.0.0.1:1;{UNPARSEABLE}"


def test_the_passwords_of_every_url_are_found_for_scrubbing() -> None:
    assert url_passwords(REDIS_FAILOVER) == [SECRET]
    assert url_passwords(["redis://:a@h;amqp://u:b@r", ("ignored",)]) == ["a", "b"]
    assert url_passwords(f"redis://:{quote('p@ss', safe='')}@h") == ["p%40ss", "p@ss"]
    # redis-py would send "pa;ss" here, kombu would split it: both are caught.
    assert "pa;ss" in url_passwords("redis://:pa;ss@h")
    text = f"failed: {REDIS_FAILOVER} and {SENTINELS} ({SECRET})"
    scrubbed = scrub(text, [REDIS_FAILOVER, SENTINELS])
    assert SECRET not in scrubbed
    assert redact_url(REDIS_FAILOVER) in scrubbed


def test_with_password_puts_it_in_every_url_of_a_list() -> None:
    assert with_password("redis://a;redis://u@b/1", "p w") == "redis://:p%20w@a;redis://u:p%20w@b/1"


def test_the_dlq_of_a_failover_broker_is_its_first_url() -> None:
    app = Celery("failover", broker=REDIS_FAILOVER, set_as_current=False)
    assert resolve_redis_url(app) == f"redis://:{SECRET}@127.0.0.1:1"
    app.conf.broker_url = REDIS_FAILOVER.split(";")
    assert resolve_redis_url(app) == f"redis://:{SECRET}@127.0.0.1:1"
    with pytest.raises(RedisURLError) as caught:
        normalise_redis_url(REDIS_FAILOVER)
    assert "list of URLs" in str(caught.value)
    assert SECRET not in str(caught.value)
    app.close()


@pytest.mark.parametrize("broker", [REDIS_FAILOVER, REDIS_FAILOVER.split(";"), AMQP_FAILOVER])
def test_an_unreachable_failover_broker_is_reported_without_passwords(broker: object) -> None:
    app = Celery("away", broker=broker, set_as_current=False)
    with pytest.raises(ClusterUnavailable) as caught:
        active_tasks(app, timeout=1)
    assert SECRET not in str(caught.value)
    assert "127.0.0.1:1" in str(caught.value)
    app.close()


def test_a_connection_scrubs_every_password_it_knows() -> None:
    profile = Profile(name="p", url="redis://127.0.0.1:1/0", broker_url=REDIS_FAILOVER)
    with connect_profile(profile, environ={}) as connection:
        assert SECRET not in connection.broker
        assert connection.scrub(f"{REDIS_FAILOVER} said {SECRET}") == (
            f"{redact_url(REDIS_FAILOVER)} said ***"
        )
    app = Celery("theirs", broker=AMQP_FAILOVER.split(";"), set_as_current=False)
    with connect_profile(Profile(name="q", url="redis://127.0.0.1:1/0"), app=app) as connection:
        assert connection.broker == redact_url(AMQP_FAILOVER)
        assert SECRET not in connection.scrub(f"no {SECRET} at {AMQP_FAILOVER}")
    app.close()


# -- the command line ------------------------------------------------------------------------


def assert_never_shown(morgue: Morgue) -> None:
    everything = "\n".join(morgue.transcript)
    assert SECRET not in everything
    assert "S3cret" not in everything


@pytest.mark.parametrize("broker", [REDIS_FAILOVER, AMQP_FAILOVER])
def test_the_cli_never_shows_a_failover_brokers_passwords(
    morgue: Morgue, redis_server: RedisServer, redis_client: redis.Redis, broker: str
) -> None:
    entry_id = DeadLetterQueue(redis_client).add(make_entry(queue="celery"))
    added = morgue("profiles", "add", "x", "--url", redis_server.url, "--broker-url", broker)
    assert added.returncode == 0, added.stderr
    assert SECRET in morgue.config.read_text()  # stored, as asked; never shown
    for args in (
        ["tasks"],
        ["tasks", "--json"],
        ["zombies", "--json"],
        ["zombies", "--revoke", "--yes"],
        ["dlq", "requeue", "celery", entry_id, "--yes"],
    ):
        result = morgue("--profile", "x", *args)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert "127.0.0.1:1" in one_error_line(result)
    requeued = morgue("--profile", "x", "dlq", "requeue", "celery", "--all", "--yes", "--json")
    assert requeued.returncode == 1
    for args in (
        ["profiles", "show", "x"],
        ["profiles", "show", "x", "--json"],
        ["profiles", "list"],
        ["profiles", "list", "--json"],
    ):
        result = morgue(*args)
        assert result.returncode == 0, (args, result.stderr)
    shown = morgue.json("profiles", "show", "x")
    assert shown["broker_url"] == redact_url(broker)
    assert [p["broker_url"] for p in morgue.json("profiles", "list")] == [redact_url(broker)]
    # A sentinel list is redacted in the profile's output too.
    added = morgue("profiles", "add", "s", "--url", redis_server.url, "--broker-url", SENTINELS)
    assert added.returncode == 0, added.stderr
    assert morgue.json("profiles", "show", "s")["broker_url"] == redact_url(SENTINELS)
    assert morgue("profiles", "list").returncode == 0
    # kombu refuses a sentinel broker without a master name: one line, every host, no password.
    tasks = morgue("--profile", "s", "tasks")
    assert tasks.returncode == 1
    assert "h1:26379;sentinel://:***@h2:26379" in one_error_line(tasks)
    assert_never_shown(morgue)


def test_the_cli_never_shows_the_passwords_of_a_failover_dlq_url(morgue: Morgue) -> None:
    # The DLQ is one Redis: a list is refused, without showing what it holds. A Sentinel list
    # is one Redis, its master, and must name it.
    for args, reason in (
        (["--url", REDIS_FAILOVER, "queues"], "list of URLs"),
        (["profiles", "add", "x", "--url", SENTINELS], "names no Redis master"),
    ):
        result = morgue(*args)
        assert result.returncode == 2
        assert reason in one_error_line(result)
    morgue.config.write_text(f'[profiles.x]\nurl = "{REDIS_FAILOVER}"\n')
    result = morgue("--profile", "x", "queues")
    assert result.returncode == 1
    assert "profile 'x': url:" in one_error_line(result)
    assert_never_shown(morgue)


def test_a_crash_prints_a_scrubbed_traceback(tmp_path: Path) -> None:
    # A bug (an error no command translates) still shows its traceback, without passwords.
    config = tmp_path / "config.toml"
    config.write_text(f'[profiles.x]\nurl = "redis://h"\nbroker_url = "{REDIS_FAILOVER}"\n')

    @click.group(cls=MorgueGroup)
    @click.pass_context
    def root(ctx: click.Context) -> None:
        ctx.obj = ProfileSession(str(config), "x", None)

    @root.command()
    def boom() -> None:
        raise RuntimeError(f"cannot use {REDIS_FAILOVER} with {SECRET}")

    result = CliRunner().invoke(root, ["boom"], prog_name="morgue", catch_exceptions=False)
    assert result.exit_code == 1
    assert "Traceback" in result.stderr
    assert f"RuntimeError: cannot use {redact_url(REDIS_FAILOVER)} with ***" in result.stderr
    assert SECRET not in result.stdout + result.stderr


# -- the reaper's stored report and the logs -------------------------------------------------


@pytest.fixture
def failover_app() -> Iterator[Celery]:
    app = Celery("failover-broker", broker=REDIS_FAILOVER, set_as_current=False)
    app.conf.update(task_serializer="json", accept_content=["json"])
    yield app
    app.close()


def test_the_reaper_report_never_holds_a_password(
    failover_app: Celery,
    redis_server: RedisServer,
    redis_client: redis.Redis,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    installation = core.install(
        failover_app,
        redis_url=redis_server.url,
        prefix="redacted:",
        spool_dir=str(tmp_path),
        reap_interval=None,
        inspect_timeout=0.5,
    )
    key = "redacted@reaper:last"
    redis_client.delete(key)
    with caplog.at_level(logging.DEBUG):
        report = installation.reaper.run().as_dict()
    assert report["errors"], report
    stored = redis_client.get(key)
    assert stored is not None
    assert "cannot reach the broker at redis://:***@127.0.0.1:1;" in stored.decode()
    assert SECRET not in stored.decode()
    assert SECRET not in json.dumps(report)
    assert caplog.records
    assert SECRET not in caplog.text
    redis_client.delete(key, "redacted@reaper:signalled", "redacted@reaper:lock")


def test_capture_and_reaper_logs_never_hold_a_password(
    failover_app: Celery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The DLQ is the failover broker's first Redis, with the password, and it is down.
    installation = core.install(
        failover_app, spool_dir=str(tmp_path), reap_interval=None, inspect_timeout=0.5
    )
    assert SECRET in installation.redis_url
    with caplog.at_level(logging.DEBUG):
        installation.capture.store(make_entry(queue="celery"))
        installation.reaper.run()
    assert "spooled" in caplog.text
    assert "redis://:***@127.0.0.1:1" in caplog.text
    assert SECRET not in caplog.text
    assert SECRET not in repr(installation) + repr(installation.capture)


def test_the_profile_form_takes_every_password_out_of_a_failover_url() -> None:
    from celery_morgue.tui.screens.profile_draft import split_password

    bare, password = split_password("redis://:S3cretPw@a:1/0;redis://:S3cretPw@b:2/0")
    assert "S3cretPw" not in bare
    assert bare == "redis://a:1/0;redis://b:2/0"
    assert password == "S3cretPw"  # noqa: S105 - the test password
    assert split_password("redis://a:1/0;redis://b:2/0") == ("redis://a:1/0;redis://b:2/0", "")
