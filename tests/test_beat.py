"""The cleanup's beat entry: added by core.install without touching the user's, and really sent."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from celery_morgue import core
from celery_morgue.core.zombies import CLEANUP_TASK
from celery_morgue.tui.demo.processes import ManagedProcess, RedisServer, celery_argv, group_pids
from tests.helpers import REPO, Worker, wait_for

USER_ENTRY = {"task": "proj.nightly", "schedule": 86400.0}


def new_app(name: str) -> Celery:
    return Celery(name, broker="redis://127.0.0.1:6399/0")


def test_install_adds_the_cleanup_once_and_keeps_the_users_entries(tmp_path: Path) -> None:
    app = new_app("keeps")
    app.conf.beat_schedule = {"nightly": dict(USER_ENTRY)}
    first = core.install(app, spool_dir=tmp_path)
    schedule = app.conf.beat_schedule
    assert schedule["nightly"] == USER_ENTRY
    assert schedule[CLEANUP_TASK] == {
        "task": CLEANUP_TASK,
        "schedule": 300.0,
        "options": {"expires": 300.0},
    }
    second = core.install(app, spool_dir=tmp_path, reap_interval=5)
    assert second is first
    assert list(app.conf.beat_schedule) == ["nightly", CLEANUP_TASK]
    assert app.conf.beat_schedule[CLEANUP_TASK]["schedule"] == 300.0
    assert CLEANUP_TASK in app.tasks
    assert first.cleanup_task.name == CLEANUP_TASK


def test_the_interval_is_an_option_and_none_schedules_nothing(tmp_path: Path) -> None:
    fast = new_app("fast")
    core.install(fast, spool_dir=tmp_path, reap_interval=60)
    assert fast.conf.beat_schedule[CLEANUP_TASK]["schedule"] == 60
    assert fast.conf.beat_schedule[CLEANUP_TASK]["options"] == {"expires": 60}

    manual = new_app("manual")
    core.install(manual, spool_dir=tmp_path, reap_interval=None)
    assert CLEANUP_TASK not in manual.conf.beat_schedule
    assert CLEANUP_TASK in manual.tasks  # still there to run by hand


def test_an_entry_of_that_name_written_by_the_user_is_left_alone(tmp_path: Path) -> None:
    app = new_app("own-entry")
    mine = {"task": CLEANUP_TASK, "schedule": 42.0, "kwargs": {"dry_run": True}}
    app.conf.beat_schedule = {CLEANUP_TASK: dict(mine)}
    core.install(app, spool_dir=tmp_path)
    assert app.conf.beat_schedule == {CLEANUP_TASK: mine}


def test_the_entry_comes_back_when_the_user_replaces_the_schedule_later(tmp_path: Path) -> None:
    app = new_app("late")
    core.install(app, spool_dir=tmp_path)
    # A module that assigns the whole schedule after install() ...
    app.conf.beat_schedule = {"nightly": dict(USER_ENTRY)}
    assert CLEANUP_TASK not in app.conf.beat_schedule
    # ... gets the entry back when beat finalizes the app, before it reads the schedule.
    app.finalize()
    assert set(app.conf.beat_schedule) == {"nightly", CLEANUP_TASK}

    reloaded = new_app("reloaded")
    core.install(reloaded, spool_dir=tmp_path)
    reloaded.config_from_object({"beat_schedule": {"nightly": dict(USER_ENTRY)}})
    assert set(reloaded.conf.beat_schedule) == {"nightly", CLEANUP_TASK}


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("hard_limit", 0),
        ("hard_limit", "300"),
        ("grace", -1),
        ("grace", True),
        ("reap_interval", 0),
        ("reap_interval", "5m"),
        ("reap_signals", []),
        ("reap_signals", "SIGTERM"),
        ("reap_signals", ["SIGTERM", "SIGNOPE"]),
        ("reap_dry_run", "yes"),
        ("inspect_timeout", -0.5),
    ],
)
def test_reaper_options_are_checked(tmp_path: Path, option: str, value: Any) -> None:
    with pytest.raises(ValueError, match=option):
        core.install(new_app(f"bad-{option}"), spool_dir=tmp_path, **{option: value})


def test_signal_names_are_normalised(tmp_path: Path) -> None:
    installed = core.install(new_app("signals"), spool_dir=tmp_path, reap_signals=["term", "KILL"])
    assert installed.options.reap_signals == ("SIGTERM", "SIGKILL")
    assert installed.options.grace == 30.0
    assert installed.options.hard_limit == 300.0


@pytest.mark.slow
def test_celery_beat_sends_the_cleanup_to_a_worker(
    tmp_path: Path, start_worker: Callable[..., Worker]
) -> None:
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        worker = start_worker(server.url)
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "MORGUE_TEST_BROKER": server.url,
            "MORGUE_SPOOL_DIR": str(tmp_path / "beat-spool"),
            "MORGUE_TEST_REAP_INTERVAL": "1",
        }
        argv = celery_argv(
            "tests.workerapp",
            "beat",
            "--schedule",
            str(tmp_path / "beat-schedule"),
            "--max-interval",
            "1",
            "--loglevel",
            "INFO",
        )
        beat_log = tmp_path / "beat.log"
        beat = ManagedProcess(argv, env=env, cwd=REPO, log_path=beat_log)
        with beat:
            # Only the cleanup, run in the worker, writes its report under the DLQ namespace.
            raw = wait_for(lambda: client.get("dlq@reaper:last"), timeout=60, interval=0.2)
            assert isinstance(raw, bytes)
            report = json.loads(raw)
            assert report["workers"] == [worker.name]
            assert report["dry_run"] is False
            assert report["errors"] == []
            wait_for(lambda: f"Sending due task {CLEANUP_TASK}" in beat_log.read_text(), 10)
            wait_for(lambda: f"Task {CLEANUP_TASK}[" in worker.log(), timeout=10)
            assert "celery-morgue: reaper: 0 zombie(s)" in worker.log()
        assert not beat.running()
        assert not group_pids(beat.pid)
        client.close()
