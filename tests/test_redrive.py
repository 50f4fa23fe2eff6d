"""Paced, resumable redrive (core.redrive): what reaches the broker, when, and exactly once.

Publishes are counted at the broker: the Redis list of a queue no worker consumes, read back or
popped (with the time each arrived) as it fills.
"""

from __future__ import annotations

import base64
import json
import os
import pty
import random
import select
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from celery import Celery

from celery_morgue.core import DeadLetterQueue, redrive
from celery_morgue.core.dlq import REQUEUED_FROM_HEADER
from celery_morgue.core.filters import EntryFilter
from celery_morgue.core.redrive import Redrive, RedriveProgress
from celery_morgue.tui.demo.processes import RedisServer
from tests.helpers import (
    REPO,
    Morgue,
    Worker,
    child_env,
    make_entry,
    one_error_line,
    wait_for,
    wait_for_entry,
)

QUEUE = "nobody-consumes-redrive"


def published(client: redis.Redis, queue: str = QUEUE) -> Counter[str]:
    """How many messages in ``queue`` were requeued from each original task id."""
    counts: Counter[str] = Counter()
    for raw in client.lrange(queue, 0, -1):
        counts[json.loads(raw)["headers"][REQUEUED_FROM_HEADER]] += 1
    return counts


@pytest.fixture
def app(redis_server: RedisServer, redis_client: redis.Redis) -> Iterator[Celery]:
    redis_client.delete(QUEUE)
    publisher = Celery("redriver", broker=redis_server.url)
    publisher.conf.update(task_serializer="json", accept_content=["json"])
    yield publisher
    publisher.close()
    redis_client.delete(QUEUE)


def fill(dlq: DeadLetterQueue, count: int, **overrides: Any) -> list[str]:
    ids = dlq.add_many(make_entry(f"task-{n}", QUEUE, **overrides) for n in range(count))
    assert all(ids)
    return [str(entry_id) for entry_id in ids]


def after_publishes(app: Celery, count: int, action: Callable[[], object]) -> None:
    """Run ``action`` (another operator, a Ctrl+C) once, right after the ``count``-th publish."""
    send = app.send_task
    sent = []

    def send_then_act(*args: Any, **kwargs: Any) -> Any:
        result = send(*args, **kwargs)
        sent.append(True)
        if len(sent) == count:
            action()
        return result

    app.send_task = send_then_act  # type: ignore[method-assign]


class BrokerArrivals:
    """Pops the queue's Redis list as messages arrive, noting when each came."""

    def __init__(self, url: str, queue: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.queue = queue
        self.times: list[float] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._pop, daemon=True)

    def _pop(self) -> None:
        while not self.done.is_set():
            if self.client.blpop([self.queue], timeout=0.2):
                self.times.append(time.monotonic())

    def __enter__(self) -> BrokerArrivals:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join(timeout=5)
        self.client.close()


@pytest.mark.slow
def test_a_rate_of_50_spreads_150_messages_over_3_seconds(
    app: Celery, dlq: DeadLetterQueue, redis_server: RedisServer
) -> None:
    fill(dlq, 150)
    with BrokerArrivals(redis_server.url, QUEUE) as arrivals:
        report = Redrive(dlq, app, QUEUE, rate=50).run()
        wait_for(lambda: len(arrivals.times) == 150, timeout=10)
    assert len(report.requeued) == 150 and report.error is None
    times = arrivals.times
    span = times[-1] - times[0]
    # 150 messages are 149 gaps of 1/50 s: 2.98 s.
    assert 2.7 <= span <= 3.3, f"150 messages at 50/s took {span:.2f} s"
    busiest = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
    assert busiest <= 55, f"{busiest} messages in one second at --rate 50"
    assert dlq.size(QUEUE) == 0


def test_a_stopped_redrive_leaves_the_rest_and_the_next_run_continues(
    app: Celery, dlq: DeadLetterQueue, redis_client: redis.Redis
) -> None:
    ids = fill(dlq, 250)
    stop = threading.Event()
    after_publishes(app, 120, stop.set)
    first = Redrive(dlq, app, QUEUE, batch=50, stop=stop).run()
    assert first.stopped and first.error is None
    assert len(first.requeued) == 120 == first.sent
    assert first.remaining == 130 == dlq.size(QUEUE)
    # Oldest first: what stayed is the newest 130, untouched and unmarked.
    assert [entry.id for entry in dlq.iter_entries(QUEUE)][::-1] == ids[120:]
    assert not list(redis_client.scan_iter("dlq@requeue:*"))

    second = Redrive(dlq, app, QUEUE, batch=50).run()
    assert not second.stopped and second.remaining == 0
    assert set(first.requeued) | set(second.requeued) == set(ids)
    counts = published(redis_client)
    assert len(counts) == 250 and max(counts.values()) == 1
    assert dlq.size(QUEUE) == 0


def test_entries_another_operator_deletes_mid_run_are_not_sent(
    app: Celery, dlq: DeadLetterQueue, redis_client: redis.Redis
) -> None:
    ids = fill(dlq, 60)
    # After the third publish: some of the batch being sent, and some of a later batch.
    deleted = ids[5:8] + ids[33:40]
    after_publishes(app, 3, lambda: DeadLetterQueue(redis_client).delete(QUEUE, *deleted))
    report = Redrive(dlq, app, QUEUE, batch=10).run()
    assert set(report.requeued) == set(ids) - set(deleted)
    counts = published(redis_client)
    deleted_tasks = {f"task-{n}" for n in [*range(5, 8), *range(33, 40)]}
    assert not deleted_tasks & set(counts), "a deleted entry was sent"
    assert sum(counts.values()) == 50 and max(counts.values()) == 1
    assert dlq.size(QUEUE) == 0


def test_entries_stored_after_the_start_are_left_for_the_next_run(
    app: Celery, dlq: DeadLetterQueue, redis_client: redis.Redis
) -> None:
    ids = fill(dlq, 20)
    later: list[str | None] = []
    after_publishes(app, 1, lambda: later.append(dlq.add(make_entry("late", QUEUE))))
    run = Redrive(dlq, app, QUEUE, batch=7)
    assert run.plan() == 20
    report = run.run()
    assert set(report.requeued) == set(ids)
    assert [entry.id for entry in dlq.iter_entries(QUEUE)] == later
    assert report.remaining == 0
    assert "late" not in published(redis_client)


def test_a_filtered_plan_counts_and_a_run_sends_only_the_matching(
    app: Celery, dlq: DeadLetterQueue, redis_client: redis.Redis
) -> None:
    charge = fill(dlq, 30, task="shop.charge_card")
    ship = dlq.add_many(make_entry(f"ship-{n}", QUEUE, task="shop.ship") for n in range(12))
    flt = EntryFilter(task="shop.ship")
    progress: list[RedriveProgress] = []
    run = Redrive(dlq, app, QUEUE, flt, batch=5, on_progress=progress.append)
    assert run.plan() == 12
    report = run.run()
    assert set(report.requeued) == set(ship)
    assert set(published(redis_client)) == {f"ship-{n}" for n in range(12)}
    assert sorted(entry.id for entry in dlq.iter_entries(QUEUE)) == sorted(charge)
    assert progress[-1].sent == 12 and progress[-1].total == 12
    assert [p.sent for p in progress] == sorted(p.sent for p in progress)


def test_a_stop_while_waiting_for_the_next_slot_ends_the_run_at_once(
    app: Celery, dlq: DeadLetterQueue, redis_client: redis.Redis
) -> None:
    fill(dlq, 10)
    stop = threading.Event()
    # At one message a second the run would take 9 s more; the stop ends the wait.
    after_publishes(app, 2, stop.set)
    report = Redrive(dlq, app, QUEUE, rate=1, stop=stop).run()
    assert report.stopped and len(report.requeued) == 2 and report.remaining == 8
    assert sum(published(redis_client).values()) == 2


def test_without_keeping_ids_a_run_only_counts_what_it_sent(
    app: Celery, dlq: DeadLetterQueue, redis_client: redis.Redis
) -> None:
    fill(dlq, 30)
    report = Redrive(dlq, app, QUEUE, batch=8, keep_ids=False).run()
    assert report.sent == 30 and report.requeued == {}
    assert sum(published(redis_client).values()) == 30 and dlq.size(QUEUE) == 0


def test_bad_settings_are_refused(app: Celery, dlq: DeadLetterQueue) -> None:
    for rate in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="rate"):
            Redrive(dlq, app, QUEUE, rate=rate)
    with pytest.raises(ValueError, match="batch"):
        Redrive(dlq, app, QUEUE, batch=0)


def test_a_filtered_requeue_all_runs_exactly_the_matching_tasks(
    worker: Worker, redis_client: redis.Redis, redis_server: RedisServer, morgue: Morgue
) -> None:
    dlq = DeadLetterQueue(redis_client)
    flags = [f"flag:redrive-{n}" for n in range(4)]
    redis_client.delete(*flags, *(f"done:{flag}" for flag in flags))
    originals = {worker.send("fails_until_flag", flag): flag for flag in flags}
    booms = [worker.send("boom", f"still broken {n}") for n in range(3)]
    for task_id in [*originals, *booms]:
        wait_for_entry(dlq, "celery", task_id)
    for flag in flags:
        redis_client.set(flag, 1)

    task = ["--task", "tests.workerapp.fails_until_flag"]
    url = ["--url", redis_server.url]
    report = morgue.json(*url, "dlq", "requeue", "celery", "--all", *task, "--batch", "3", "--yes")
    assert report["sent"] == 4 and report["remaining"] == 0 and report["error"] is None
    for task_id, flag in originals.items():
        done = wait_for(lambda flag=flag: redis_client.get(f"done:{flag}"), timeout=20)
        ran = json.loads(done)  # type: ignore[arg-type]
        assert ran["requeued_from"] == task_id
        assert ran["task_id"] in report["requeued"].values()
    left = {entry.task_id for entry in dlq.iter_entries("celery")}
    assert left == set(booms)


def test_a_refused_message_among_others_is_sent_as_it_was_received(
    app: Celery, dlq: DeadLetterQueue, redis_client: redis.Redis
) -> None:
    """The raw republish takes the run's producer too, and passes the same claim first."""
    before = fill(dlq, 2)
    refused = make_entry("raw-1", QUEUE)
    refused.reason = "rejected"
    body = json.dumps([[1], {}, {}]).encode()
    refused.options["raw_message"] = {
        "body": base64.b64encode(body).decode(),
        "content_type": "application/json",
        "content_encoding": "utf-8",
        "headers": {"id": "raw-1", "task": "proj.add"},
    }
    raw_id = dlq.add(refused)
    after = dlq.add(make_entry("task-after", QUEUE))
    report = Redrive(dlq, app, QUEUE).run()
    assert list(report.requeued) == [*before, raw_id, after]
    messages = [json.loads(raw) for raw in redis_client.lrange(QUEUE, 0, -1)][::-1]
    assert [m["headers"][REQUEUED_FROM_HEADER] for m in messages] == [
        "task-0",
        "task-1",
        "raw-1",
        "task-after",
    ]
    assert messages[2]["headers"]["id"] == report.requeued[str(raw_id)]
    assert base64.b64decode(messages[2]["body"]) == body
    assert dlq.size(QUEUE) == 0


# -- the command line ----------------------------------------------------------------------------


def start_requeue(morgue: Morgue, url: str, *args: str, **popen: Any) -> subprocess.Popen[bytes]:
    """`morgue dlq requeue QUEUE --all --yes ...` as a subprocess (the real entry point)."""
    argv = morgue.argv(["--url", url, "dlq", "requeue", QUEUE, "--all", "--yes", *args])
    options: dict[str, Any] = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **popen}
    return subprocess.Popen(argv, env=child_env(morgue.config), cwd=REPO, **options)


def interrupted(
    process: subprocess.Popen[bytes], client: redis.Redis, signum: int, after: int
) -> tuple[int, str, str]:
    """Send ``signum`` once ``after`` messages reached the broker; the exit status and output."""
    try:
        wait_for(lambda: client.llen(QUEUE) >= after, timeout=60)
        process.send_signal(signum)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, out.decode(), err.decode()


@pytest.mark.slow
def test_ctrl_c_and_sigterm_stop_cleanly_and_running_again_finishes(
    app: Celery,
    dlq: DeadLetterQueue,
    redis_client: redis.Redis,
    redis_server: RedisServer,
    morgue: Morgue,
) -> None:
    url = redis_server.url
    ids = fill(dlq, 300)

    first = start_requeue(morgue, url, "--rate", "100", "--json")
    status, out, err = interrupted(first, redis_client, signal.SIGINT, after=30)
    assert status == 130, err
    report = json.loads(out)
    assert report["stopped"] is True and report["error"] is None
    sent = report["sent"]
    assert sent == len(report["requeued"]) == redis_client.llen(QUEUE)
    assert report["remaining"] == 300 - sent == dlq.size(QUEUE)

    second = start_requeue(morgue, url, "--rate", "100")
    status, out, err = interrupted(second, redis_client, signal.SIGTERM, after=sent + 30)
    assert status == 143, err
    left = dlq.size(QUEUE)
    assert err.strip() == (
        f"stopped: sent {redis_client.llen(QUEUE) - sent}, {left} remain in {QUEUE!r}; "
        "run the same command to continue"
    )
    assert out == ""

    third = start_requeue(morgue, url, "--json")
    out, err = (part.decode() for part in third.communicate(timeout=60))
    assert third.returncode == 0, err
    assert json.loads(out)["sent"] == left and json.loads(out)["stopped"] is False
    counts = published(redis_client)
    assert len(counts) == 300 and set(counts.values()) == {1}, "an entry was sent twice"
    assert dlq.size(QUEUE) == 0
    assert not list(redis_client.scan_iter("dlq@requeue:*"))
    assert set(report["requeued"]) == set(ids[:sent]), "not oldest first"


def test_a_dry_run_sends_nothing_and_says_how_many(
    app: Celery,
    dlq: DeadLetterQueue,
    redis_client: redis.Redis,
    redis_server: RedisServer,
    morgue: Morgue,
) -> None:
    url = ["--url", redis_server.url]
    ids = fill(dlq, 8)
    fill_ship = dlq.add_many(make_entry(f"s-{n}", QUEUE, task="shop.ship") for n in range(3))
    before = redis_client.xrange(dlq.key(QUEUE))
    plain = morgue(*url, "dlq", "requeue", QUEUE, "--all", "--dry-run")
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.startswith(f"would requeue 11 entries from {QUEUE!r} (up to ")
    data = morgue.json(*url, "dlq", "requeue", QUEUE, "--all", "--task", "shop.ship", "--dry-run")
    assert data["dry_run"] is True and data["count"] == 3
    assert data["filter"] == {"task": "shop.ship"}
    assert set(data["sample_ids"]) == set(fill_ship)
    by_id = morgue.json(*url, "dlq", "requeue", QUEUE, ids[0], "--dry-run")
    assert by_id["count"] == 1
    assert redis_client.xrange(dlq.key(QUEUE)) == before
    assert redis_client.llen(QUEUE) == 0
    assert not list(redis_client.scan_iter("dlq@requeue:*"))


def test_the_confirmation_names_the_filter_and_the_count(
    app: Celery,
    dlq: DeadLetterQueue,
    redis_client: redis.Redis,
    redis_server: RedisServer,
    morgue: Morgue,
) -> None:
    url = ["--url", redis_server.url]
    fill(dlq, 5)
    dlq.add_many(make_entry(f"s-{n}", QUEUE, task="shop.ship") for n in range(2))
    refused = morgue(*url, "dlq", "requeue", QUEUE, "--all", "--task", "shop.ship", "--rate", "5")
    assert refused.returncode == 2
    line = one_error_line(refused)
    assert "Requeue 2 entries of task shop.ship" in line and "at 5 a second" in line
    assert redis_client.llen(QUEUE) == 0

    done = morgue.json(*url, "dlq", "requeue", QUEUE, "--all", "--task", "shop.ship", "--yes")
    assert done["sent"] == 2 and done["remaining"] == 0 and done["filter"] == {"task": "shop.ship"}
    assert set(published(redis_client)) == {"s-0", "s-1"}
    assert dlq.size(QUEUE) == 5


def test_filters_rate_and_batch_go_with_all(
    app: Celery,
    dlq: DeadLetterQueue,
    redis_client: redis.Redis,
    redis_server: RedisServer,
    morgue: Morgue,
) -> None:
    url = ["--url", redis_server.url]
    [entry_id] = fill(dlq, 1)
    for extra in (["--task", "x"], ["--rate", "3"], ["--batch", "7"]):
        result = morgue(*url, "dlq", "requeue", QUEUE, entry_id, *extra, "--yes")
        assert result.returncode == 2, result
        assert "go with --all" in one_error_line(result)
    for bad in (["--rate", "0"], ["--batch", "0"], ["--batch", "100000"]):
        result = morgue(*url, "dlq", "requeue", QUEUE, "--all", *bad, "--yes")
        assert result.returncode == 2, result
    for rate in ("nan", "inf", "-inf", "-1", "1e999"):
        result = morgue(*url, "dlq", "requeue", QUEUE, "--all", f"--rate={rate}", "--yes")
        assert result.returncode == 2, result
        assert "--rate" in one_error_line(result)
    assert dlq.size(QUEUE) == 1


def test_on_a_terminal_a_progress_bar_is_drawn_on_stderr_and_not_elsewhere(
    app: Celery,
    dlq: DeadLetterQueue,
    redis_client: redis.Redis,
    redis_server: RedisServer,
    morgue: Morgue,
) -> None:
    url = redis_server.url
    fill(dlq, 40)
    leader, follower = pty.openpty()
    process = start_requeue(morgue, url, "--rate", "40", stderr=follower)
    os.close(follower)
    drawn = b""
    try:
        while process.poll() is None or select.select([leader], [], [], 0)[0]:
            if select.select([leader], [], [], 0.2)[0]:
                try:
                    drawn += os.read(leader, 4096)
                except OSError:  # the terminal closed with the process
                    break
        out, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(leader)
    assert process.returncode == 0
    text = drawn.decode()
    assert "\r[" in text and "/40  " in text and "/s  ETA" in text
    assert "\x1b[K" in text  # redrawn in place, then cleared
    assert out.decode() == f"requeued 40 entries from {QUEUE!r}\n"

    fill(dlq, 5)
    piped = start_requeue(morgue, url)
    out, err = piped.communicate(timeout=30)
    assert piped.returncode == 0 and err == b"", err


# -- what a run leaves after each publish, and after a kill -9 -----------------------------------


def marker_phase(client: redis.Redis, dlq: DeadLetterQueue, entry_id: str) -> str | None:
    raw = client.get(dlq._marker_key(QUEUE, entry_id))
    return None if raw is None else str(json.loads(raw)["phase"])


def stored(client: redis.Redis, dlq: DeadLetterQueue, entry_id: str) -> bool:
    return bool(client.xrange(dlq.key(QUEUE), entry_id, entry_id))


@pytest.mark.parametrize("rate", [None, 2000.0], ids=["unpaced", "paced"])
def test_after_every_publish_its_marker_says_published_or_its_entry_is_gone(
    app: Celery,
    dlq: DeadLetterQueue,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    rate: float | None,
) -> None:
    ids = fill(dlq, 12)
    monkeypatch.setattr(redrive, "PROGRESS_INTERVAL", 0)  # a progress call after every publish
    checked: list[str] = []

    def settled(entry_id: str) -> bool:
        gone = not stored(redis_client, dlq, entry_id)
        return (gone and marker_phase(redis_client, dlq, entry_id) is None) or (
            marker_phase(redis_client, dlq, entry_id) == "published"
        )

    def check(progress: RedriveProgress) -> None:
        entry_id = ids[progress.sent - 1] if progress.sent else None
        if entry_id is None or entry_id in checked:
            return
        # The run waits for this call: if the marker still says "claimed", it stays so.
        wait_for(lambda: settled(entry_id), timeout=5)
        checked.append(entry_id)

    # Batches of 5: the ends of batches, where the next claim waits for the next read, too.
    report = Redrive(dlq, app, QUEUE, rate=rate, batch=5, on_progress=check).run()
    assert report.sent == 12 and report.error is None
    assert checked == ids
    assert dlq.size(QUEUE) == 0 and not list(redis_client.scan_iter("dlq@requeue:*"))


def age_markers(client: redis.Redis, seconds: float) -> int:
    """Make every requeue marker ``seconds`` older, as if that long had passed; how many."""
    now_ms = int(client.time()[0]) * 1000
    aged = 0
    for key in client.scan_iter("dlq@requeue:*"):
        raw = client.get(key)
        if raw is None:
            continue
        marker = json.loads(raw)
        marker["at_ms"] = now_ms - int(seconds * 1000)
        client.set(key, json.dumps(marker, separators=(",", ":")), keepttl=True)
        aged += 1
    return aged


@pytest.mark.slow
def test_a_requeue_killed_at_a_random_point_never_sends_an_entry_twice(
    app: Celery,
    dlq: DeadLetterQueue,
    redis_client: redis.Redis,
    redis_server: RedisServer,
    morgue: Morgue,
) -> None:
    # Few matching entries far apart, among rows that hold the text outside their message: they
    # pass Redis's look at the raw row, so each is read and decoded. Under --grep and --batch 1,
    # reading the next entry takes far longer than a publish: that read is where a run spends
    # its time, and where a kill lands.
    matching = 8
    entry_of: dict[str, str] = {}
    for n in range(matching):
        noise = (make_entry(f"noise-{n}-{k}", QUEUE, args=["needle"]) for k in range(1100))
        dlq.add_many(noise)
        [entry_id] = dlq.add_many([make_entry(f"task-{n}", QUEUE, message="needle")])
        entry_of[f"task-{n}"] = str(entry_id)
    grep = ["--grep", "needle"]
    url = redis_server.url
    kill_after = random.randint(1, matching - 2)

    def newest_settled() -> bool:
        """The entry of the newest message has left, or its marker says it was published."""
        newest = redis_client.lindex(QUEUE, 0)
        if newest is None:
            return False
        entry_id = entry_of[json.loads(newest)["headers"][REQUEUED_FROM_HEADER]]
        if marker_phase(redis_client, dlq, entry_id) == "published":
            return True
        return not stored(redis_client, dlq, entry_id)

    first = start_requeue(morgue, url, *grep, "--batch", "1")
    try:
        wait_for(lambda: redis_client.llen(QUEUE) >= kill_after, timeout=60)
        # Not inside a publish: whether the broker got that one nobody can know. The run waits
        # for nothing once a publish returned, so this comes at once.
        # Polled tightly: on a loaded machine (CI runs six test processes on two cores) a slower
        # poll let the run claim the next entry first, which then rightly stays busy.
        wait_for(lambda: newest_settled() or first.poll() is not None, timeout=60, interval=0.002)
        assert first.poll() is None, "the newest message's entry stayed 'claimed' to the end"
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    sent_first = redis_client.llen(QUEUE)
    assert 0 < sent_first < matching, "the kill came after the run had ended"

    requeue = ["--url", url, "dlq", "requeue", QUEUE, "--all", *grep, "--yes", "--json"]
    again = json.loads(morgue(*requeue).stdout)
    assert again["skipped_busy"] == [], "an entry sent before the kill is left as busy"

    age_markers(redis_client, 120)  # past the claim window, without waiting for it
    past_window = json.loads(morgue(*requeue).stdout)
    assert past_window["sent"] == 0 and past_window["retried"] == {}

    counts = published(redis_client)
    assert set(counts.values()) == {1}, f"sent twice: {[t for t, n in counts.items() if n > 1]}"
    assert set(counts) == set(entry_of), (again, past_window)
    # Left of the matching: only what was sent before the kill and is marked so.
    left = {entry_of[t] for t in entry_of if stored(redis_client, dlq, entry_of[t])}
    assert left == set(past_window["already_requeued"])


def commands_processed(client: redis.Redis) -> int:
    return int(client.info("stats")["total_commands_processed"])


def test_a_grep_requeue_scans_the_queue_once_besides_its_confirmation_count(
    app: Celery,
    dlq: DeadLetterQueue,
    redis_client: redis.Redis,
    redis_server: RedisServer,
    morgue: Morgue,
) -> None:
    dlq.add_many(make_entry(f"noise-{k}", QUEUE) for k in range(8000))
    dlq.add_many(make_entry(f"task-{n}", QUEUE, message="needle") for n in range(5))
    flt = EntryFilter(grep="needle")
    before = commands_processed(redis_client)
    assert dlq.count_matching(QUEUE, flt) == 5
    one_scan = commands_processed(redis_client) - before

    before = commands_processed(redis_client)
    url = ["--url", redis_server.url]
    report = morgue.json(*url, "dlq", "requeue", QUEUE, "--all", "--grep", "needle", "--yes")
    run = commands_processed(redis_client) - before
    assert report["sent"] == 5 and report["remaining"] == 0
    assert sorted(published(redis_client)) == [f"task-{n}" for n in range(5)]
    # The confirmation's count and the read of the entries: two scans, and a few calls a
    # message (before: the run and its "remaining" counted again, four scans).
    print(f"one scan: {one_scan} commands; the requeue: {run}")
    assert run < 2 * one_scan + 200, f"{run} commands; one scan is {one_scan}"


def test_a_published_entry_leaves_even_when_the_next_claim_is_lost(
    app: Celery, dlq: DeadLetterQueue, redis_client: redis.Redis
) -> None:
    ids = fill(dlq, 10)
    # Right after the third publish, every other connection to Redis is cut: the run's held
    # one too, so the call that was to remove the third entry (with the fourth's claim) is lost.
    after_publishes(app, 3, lambda: redis_client.client_kill_filter(_type="normal", skipme=True))
    report = Redrive(dlq, app, QUEUE, batch=10).run()
    counts = published(redis_client)
    assert set(counts.values()) == {1} and sum(counts.values()) == report.sent >= 3
    sent = ids[: report.sent]
    assert not [entry_id for entry_id in sent if stored(redis_client, dlq, entry_id)]
    assert not [e for e in sent if marker_phase(redis_client, dlq, e) is not None]
    assert dlq.size(QUEUE) == 10 - report.sent


def test_a_slow_progress_hook_does_not_confuse_replies_with_a_health_check(
    redis_server: RedisServer, app: Celery
) -> None:
    """redis-py PINGs a connection idle past its health_check_interval before the next command;
    on the run's held connection a reply of ours is still unread then (a terminal paused with
    ctrl+s stalls the progress bar that long)."""
    client = redis.Redis.from_url(redis_server.url, health_check_interval=1)
    dlq = DeadLetterQueue(client)
    dlq.clear(QUEUE)
    ids = fill(dlq, 6)
    stalls = iter([True, False, True])

    def stall(_: RedriveProgress) -> None:
        if next(stalls, False):
            time.sleep(1.2)  # past the client's interval: what a paused terminal does

    report = Redrive(dlq, app, QUEUE, batch=2, on_progress=stall).run()
    assert report.error is None, report.error
    assert set(report.requeued) == set(ids)
    assert dlq.size(QUEUE) == 0
    client.close()
