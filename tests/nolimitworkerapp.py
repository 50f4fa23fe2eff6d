"""A Celery app with ``core.install(hard_limit=None)``: tasks without a known limit are never
reaped, by its own reaper or any other.

Its tasks carry tests/workerapp.py's names, so ``tests.conftest.Worker.send`` reaches them.
Configured from MORGUE_TEST_BROKER, MORGUE_TEST_DLQ and MORGUE_SPOOL_DIR, as tests/workerapp.py.
"""

from __future__ import annotations

import os
import time

from celery import Celery

import core

app = Celery("nolimitworkerapp", broker=os.environ["MORGUE_TEST_BROKER"])
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    result_backend=None,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

core.install(
    app,
    redis_url=os.environ.get("MORGUE_TEST_DLQ") or None,
    spool_dir=os.environ.get("MORGUE_SPOOL_DIR") or None,
    socket_timeout=0.5,
    reap_interval=None,
    hard_limit=None,
)


@app.task(name="tests.workerapp.sleep")
def sleep(seconds: float) -> None:
    time.sleep(seconds)
