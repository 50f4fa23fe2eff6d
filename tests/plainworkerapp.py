"""A Celery app WITHOUT ``core.install``: a worker the reaper can only ask with ``inspect``.

Its tasks carry tests/workerapp.py's names, so ``tests.conftest.Worker.send`` reaches them.
Configured from MORGUE_TEST_BROKER, as tests/workerapp.py is.
"""

from __future__ import annotations

import os
import time

from celery import Celery

app = Celery("plainworkerapp", broker=os.environ["MORGUE_TEST_BROKER"])
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    result_backend=None,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="tests.workerapp.sleep")
def sleep(seconds: float) -> None:
    time.sleep(seconds)
