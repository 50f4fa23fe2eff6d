"""The Celery app the integration tests run in real prefork workers.

Configured from the environment the test fixtures set: MORGUE_TEST_BROKER (required),
MORGUE_TEST_DLQ (the DLQ Redis, default the broker), MORGUE_SPOOL_DIR and
MORGUE_TEST_MASTER_NAME (a sentinel:// broker's master, as broker_transport_options).
"""

from __future__ import annotations

import json
import os
import signal
import time

import redis
from celery import Celery, signals
from celery.exceptions import Reject

from celery_morgue import core

BROKER = os.environ["MORGUE_TEST_BROKER"]

app = Celery("workerapp", broker=BROKER)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    result_backend=None,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
if os.environ.get("MORGUE_TEST_MASTER_NAME"):
    app.conf.broker_transport_options = {"master_name": os.environ["MORGUE_TEST_MASTER_NAME"]}

core.install(
    app,
    redis_url=os.environ.get("MORGUE_TEST_DLQ") or None,
    spool_dir=os.environ.get("MORGUE_SPOOL_DIR") or None,
    socket_timeout=0.5,
    # tests/test_beat.py runs `celery beat` on this app with a short interval.
    reap_interval=float(os.environ.get("MORGUE_TEST_REAP_INTERVAL") or 300),
    capture_expired=os.environ.get("MORGUE_TEST_CAPTURE_EXPIRED") == "1",
    cluster=os.environ.get("MORGUE_TEST_DLQ_CLUSTER") == "1",
    # The UI flags zombies by each installed worker's own options (tests/test_tui.py).
    # "none": install(hard_limit=None), tasks without a known limit are never reaped.
    hard_limit=(
        None
        if os.environ.get("MORGUE_TEST_HARD_LIMIT") == "none"
        else float(os.environ.get("MORGUE_TEST_HARD_LIMIT") or 300)
    ),
    grace=float(os.environ.get("MORGUE_TEST_GRACE") or 30),
)


def _redis() -> redis.Redis:
    return redis.Redis.from_url(BROKER)


@app.task
def boom(message: str = "boom") -> None:
    raise ValueError(message)


@app.task
def slow_boom(seconds: float) -> None:
    """Fails after ``seconds``: a stream of these is still flowing when Redis fails over."""
    time.sleep(seconds)
    raise ValueError("slow boom")


@app.task(bind=True, max_retries=2)
def always_retry(self) -> None:
    raise self.retry(exc=RuntimeError("still failing"), countdown=0.05)


@app.task(time_limit=1)
def past_hard_limit(seconds: float) -> None:
    time.sleep(seconds)


@app.task
def kill_own_process() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@app.task
def reject_for_good() -> None:
    raise Reject("not processable", requeue=False)


@app.task
def odd_arguments(*args: object, **kwargs: object) -> None:
    raise TypeError("cannot use these arguments")


@app.task(bind=True)
def fails_until_flag(self, flag: str) -> None:
    """Fails until ``flag`` is set in Redis; then records how it ran under ``done:{flag}``."""
    client = _redis()
    if not client.exists(flag):
        raise RuntimeError(f"flag {flag} not set")
    client.set(
        f"done:{flag}",
        json.dumps(
            {
                "task_id": self.request.id,
                "requeued_from": self.request.get("morgue_requeued_from"),
            }
        ),
    )


@app.task
def sleep(seconds: float) -> None:
    time.sleep(seconds)


# -- for tests/test_zombies.py --------------------------------------------------------------


@app.task(time_limit=60)
def sleep_with_time_limit(seconds: float) -> None:
    time.sleep(seconds)


@app.task
def ignore_sigterm(seconds: float) -> None:
    """Sleeps through SIGTERM, as code stuck in a C call or with its own handler would."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(seconds)


@signals.task_revoked.connect
def record_revoked(
    sender: object = None,
    request: object = None,
    terminated: object = None,
    signum: object = None,
    **_: object,
) -> None:
    """Evidence for the tests that a revoke really reached the worker: ``revoked:{task id}``."""
    task_id = getattr(request, "id", None)
    if task_id:
        _redis().set(
            f"revoked:{task_id}",
            json.dumps({"terminated": bool(terminated), "signum": str(signum)}),
            ex=600,
        )


# -- for tests/test_backoff_worker.py ---------------------------------------------------------


@app.task(bind=True, max_retries=2)
def retries_with_backoff(self, runs_key: str, base: float, max_delay: float) -> None:
    """Always fails; records each run as ``{"retries": n, "at": epoch}`` on list ``runs_key``."""
    from celery_morgue.core.backoff import (
        retry_with_backoff,  # here, so this addition stays at the file's end
    )

    _redis().rpush(runs_key, json.dumps({"retries": self.request.retries, "at": time.time()}))
    retry_with_backoff(self, RuntimeError("x"), base=base, max_delay=max_delay)


# -- for tests/test_requeue.py and tests/test_capture.py ----------------------------------


@app.task(bind=True)
def record_arguments(self, key: str, *args: object, **kwargs: object) -> None:
    """Fails until ``flag:{key}`` is set; then records the types it was called with."""
    client = _redis()
    if not client.exists(f"flag:{key}"):
        raise RuntimeError(f"flag:{key} not set")
    client.set(
        f"arguments:{key}",
        json.dumps(
            {
                "args": [type(value).__name__ for value in args],
                "kwargs": {name: type(value).__name__ for name, value in kwargs.items()},
                "priority": self.request.delivery_info.get("priority"),
                "root_id": self.request.root_id,
                "parent_id": self.request.parent_id,
                "timelimit": list(self.request.timelimit or ()),
            }
        ),
    )


@app.task
def record_link(key: str) -> None:
    _redis().set(f"linked:{key}", 1)


@app.task(acks_late=True, acks_on_timeout=False, time_limit=1)
def redelivered_after_timeout(seconds: float) -> None:
    time.sleep(seconds)


# -- for tests/test_reaper_limits.py --------------------------------------------------------


@app.task(time_limit=2)
def sleep_limit_2(seconds: float, key: str = "") -> None:
    """Registered with a 2 s limit. Sleeps ``seconds``; with ``key``, ends early once
    ``release:{key}`` is set, then records that it ended well under ``finished:{key}``."""
    client = _redis() if key else None
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if client is not None and client.exists(f"release:{key}"):
            break
        time.sleep(0.1)
    if client is not None:
        client.set(f"finished:{key}", 1, ex=600)


# -- for tests/test_reaper_scope.py ---------------------------------------------------------


@app.task(soft_time_limit=500)
def sleep_soft_limit_500(seconds: float) -> None:
    """Only a soft limit: the reaper must not end it before 500 s (its soft limit)."""
    time.sleep(seconds)


# -- for tests/test_groups.py: three distinct bugs, their messages varying with the arguments --


def _find_user(user_id: int) -> None:
    raise LookupError(f"user {user_id} not found")


def _check_user_id(user_id: int) -> None:
    if user_id < 0:
        raise ValueError(f"user id {user_id} is negative")


def _parse_amount(text: str) -> None:
    raise ValueError(f"amount {text!r} is not a number")


@app.task
def load_user(user_id: int) -> None:
    """Two bugs in one task: a negative id (ValueError), an unknown one (LookupError)."""
    _check_user_id(user_id)
    _find_user(user_id)


@app.task
def parse_amount(text: str) -> None:
    """The third: a ValueError like load_user's, raised elsewhere."""
    _parse_amount(text)


def _ping(depth: int) -> None:
    _pong(depth + 1)


def _pong(depth: int) -> None:
    _ping(depth + 1)


@app.task
def recurse_forever() -> None:
    """A RecursionError through two functions in turn, which Python does not fold: a
    traceback of about a thousand frames, cut to fit the entry."""
    _ping(0)


@app.task
def raise_huge_message(size: int, marker: str) -> None:
    raise RuntimeError(marker + "x" * size)
