"""A project with its own ``core`` package (a Django app named ``core`` is common) uses ours."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

import celery_morgue
from celery_morgue import core
from celery_morgue.core import DeadLetterQueue, Entry
from celery_morgue.tui.demo.processes import RedisServer
from tests.helpers import Worker, wait_for

PROJECT_APP = """
import os

from celery import Celery

import core as their_core
from celery_morgue import core

assert their_core.WHOSE == "theirs", their_core.__file__

app = Celery("thatproj", broker=os.environ["MORGUE_TEST_BROKER"])
app.conf.update(task_serializer="json", accept_content=["json"], result_backend=None)
core.install(app, spool_dir=os.environ["MORGUE_SPOOL_DIR"])


@app.task
def parse_invoice(number):
    raise ValueError(f"invoice {number} is unreadable")
"""


def make_project(root: Path) -> Path:
    """A worker project whose own ``core`` package comes first on sys.path."""
    (root / "core").mkdir(parents=True)
    (root / "core" / "__init__.py").write_text('WHOSE = "theirs"\n')
    (root / "core" / "models.py").write_text("")
    (root / "thatproj.py").write_text(textwrap.dedent(PROJECT_APP))
    return root


def test_the_package_and_its_install_have_one_name() -> None:
    assert celery_morgue.install is core.install
    assert celery_morgue.core is core
    assert core.__name__ == "celery_morgue.core"


def test_nothing_named_core_or_tui_is_installed(tmp_path: Path) -> None:
    # From a folder that has neither, as a user's shell would be.
    probe = "import importlib.util as u; print(u.find_spec('core'), u.find_spec('tui'))"
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.split() == ["None", "None"]


@pytest.mark.slow
def test_a_project_with_its_own_core_captures_and_runs_morgue(
    redis_server: RedisServer,
    redis_client: redis.Redis,
    tmp_path: Path,
    start_worker: Callable[..., Worker],
) -> None:
    project = make_project(tmp_path / "thatproj")
    # Its own queue: the suite's shared worker consumes "celery" and knows no thatproj task.
    worker = start_worker(redis_server.url, app="thatproj", project=project, queues="invoices")
    worker.control_app.send_task("thatproj.parse_invoice", args=[17], queue="invoices")

    dlq = DeadLetterQueue(redis_client)
    wait_for(lambda: dlq.size("invoices") == 1, timeout=30)
    [entry] = dlq.page("invoices").items
    assert isinstance(entry, Entry)
    assert (entry.task, entry.exception, entry.args) == (
        "thatproj.parse_invoice",
        "ValueError",
        [17],
    )

    environment = {**os.environ, "PYTHONPATH": str(project), "MORGUE_TEST_BROKER": redis_server.url,
                   "MORGUE_SPOOL_DIR": str(tmp_path / "spool")}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "thatproj", "morgue", "queues", "--json"],
        cwd=project,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    queues = {queue["queue"]: queue["total"] for queue in json.loads(result.stdout)}
    assert queues == {"invoices": 1}
