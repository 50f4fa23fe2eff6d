"""core.install: which Redis it picks, what it refuses, and that a second call changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from celery import Celery, signals

from celery_morgue import core
from celery_morgue.core.urls import RedisURLError, redact_url, resolve_redis_url


def receivers_of(signal: object) -> int:
    return len(signal.receivers)  # type: ignore[attr-defined]


def test_install_twice_changes_nothing(tmp_path: Path) -> None:
    app = Celery("twice", broker="redis://127.0.0.1:6399/0")
    failures, received = receivers_of(signals.task_failure), receivers_of(signals.task_received)
    first = core.install(app, spool_dir=tmp_path)
    second = core.install(app, prefix="other:", spool_dir=tmp_path)
    assert second is first
    assert first.options.prefix == "dlq:"
    assert receivers_of(signals.task_failure) == failures + 1
    assert receivers_of(signals.task_received) == received + 1


def test_the_broker_is_the_default_redis() -> None:
    app = Celery("b", broker="redis://:secret@broker:6379/2", backend="redis://backend/0")
    assert resolve_redis_url(app) == "redis://:secret@broker:6379/2"


def test_the_result_backend_when_the_broker_is_not_redis() -> None:
    app = Celery("r", broker="amqp://guest@rabbit//", backend="rediss://backend:6380/1")
    assert resolve_redis_url(app) == "rediss://backend:6380/1"


def test_kombu_socket_urls_become_unix_urls() -> None:
    app = Celery("s", broker="redis+socket:///run/redis.sock")
    assert resolve_redis_url(app) == "unix:///run/redis.sock"


def test_no_redis_anywhere_is_a_clear_error() -> None:
    app = Celery("none", broker="amqp://guest:hunter2@rabbit//")
    with pytest.raises(RedisURLError, match="pass redis_url="):
        core.install(app)


def test_an_explicit_non_redis_url_is_refused_without_its_password() -> None:
    app = Celery("explicit", broker="redis://localhost/0")
    with pytest.raises(RedisURLError) as error:
        core.install(app, redis_url="http://user:hunter2@example/")
    assert "hunter2" not in str(error.value)


def test_unknown_and_bad_options_name_the_option(tmp_path: Path) -> None:
    app = Celery("opts", broker="redis://localhost/0")
    with pytest.raises(TypeError, match="retension"):
        core.install(app, retension=5)
    with pytest.raises(ValueError, match="max_entries"):
        core.install(app, max_entries=0)
    with pytest.raises(ValueError, match="retention"):
        core.install(app, retention=-1)


def test_redact_url_hides_only_the_password() -> None:
    assert redact_url("redis://user:s3cret@host:6380/1") == "redis://user:***@host:6380/1"
    assert redact_url("redis://:s3cret@host/0") == "redis://:***@host/0"
    assert redact_url("redis://host:6379/0") == "redis://host:6379/0"
    assert "s3cret" not in redact_url("rediss://:s3cret@[::1]:6380/0?ssl_cert_reqs=none")
    assert redact_url("rediss://:s3cret@[::1]:6380/0") == "rediss://:***@[::1]:6380/0"
    assert redact_url("redis://host/0?password=hunter2&db=1") == "redis://host/0?password=***&db=1"


def test_an_installation_never_shows_its_password(tmp_path: Path) -> None:
    app = Celery("secret", broker="redis://:hunter2@localhost:6399/0")
    installation = core.install(app, spool_dir=tmp_path)
    assert "hunter2" not in repr(installation)
    assert "hunter2" not in repr(installation.capture)
    assert "hunter2" not in str(installation.capture.spool.path)
