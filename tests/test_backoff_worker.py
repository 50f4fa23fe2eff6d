"""retry_with_backoff in a real prefork worker: the countdowns used, then one DLQ entry."""

from __future__ import annotations

import itertools
import json
import re
import uuid

import redis

from celery_morgue.core import DeadLetterQueue, Entry
from celery_morgue.core.backoff import calculate_backoff
from tests.helpers import Worker, wait_for

BASE = 0.5
MAX_DELAY = 0.8  # below base * 2: the second retry is capped


def entries_for(dlq: DeadLetterQueue, task_id: str) -> list[Entry]:
    return [entry for entry in dlq.iter_entries("celery") if entry.task_id == task_id]


def test_retries_wait_the_backoff_then_fail_into_the_dlq_once(
    worker: Worker, redis_client: redis.Redis
) -> None:
    dlq = DeadLetterQueue(redis_client)
    runs_key = f"backoff-runs:{uuid.uuid4().hex}"
    try:
        task_id = worker.send("retries_with_backoff", runs_key, BASE, MAX_DELAY)
        found = wait_for(lambda: entries_for(dlq, task_id), timeout=30)
        assert isinstance(found, list)
        entry = found[0]
        assert entry.retries == 2
        assert entry.exception == "RuntimeError"
        assert entry.message == "x"
        assert entry.task == "tests.workerapp.retries_with_backoff"

        # max_retries=2: the first run and two retries, and nothing after the failure. The
        # worker logs the last run's failure once its task_failure receivers have run; a retry
        # instead would log "retry:".
        wait_for(
            lambda: f"[{task_id}] raised unexpected" in worker.log_path.read_text(errors="replace"),
            timeout=10,
        )
        assert len(entries_for(dlq, task_id)) == 1
        runs = [json.loads(raw) for raw in redis_client.lrange(runs_key, 0, -1)]
        assert [run["retries"] for run in runs] == [0, 1, 2]

        expected = [calculate_backoff(n, base=BASE, max_delay=MAX_DELAY) for n in (0, 1)]
        assert expected == [0.5, 0.8]
        # The worker logged the countdown each retry was sent with...
        log = worker.log_path.read_text(errors="replace")
        logged = re.findall(rf"\[{task_id}\] retry: Retry in ([0-9.]+)s", log)
        assert [float(seconds) for seconds in logged] == expected
        # ...and held each retry at least that long (the ETA is stored to the microsecond).
        gaps = [later["at"] - earlier["at"] for earlier, later in itertools.pairwise(runs)]
        for gap, delay in zip(gaps, expected, strict=True):
            assert gap >= delay - 1e-3, (gaps, expected)
    finally:
        redis_client.delete(runs_key)
