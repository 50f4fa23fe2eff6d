"""Snapshots of the UI from fixed data: a frozen clock, polling off, data fed as messages.

No Redis is needed: the app is built with ``poll=False`` and the dashboard receives the same
messages its thread workers would post. Regenerate with ``--snapshot-update`` and look at the
SVGs under tests/__snapshots__/ before committing them.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.pilot import Pilot

from celery_morgue.core.dlq import Page, QueueInfo
from celery_morgue.core.entry import Entry, UnreadableEntry
from celery_morgue.core.zombies import ActiveTask, ClusterSnapshot
from celery_morgue.tui.app import MorgueApp
from celery_morgue.tui.config_file import Config, save_config
from celery_morgue.tui.messages import ClusterRefreshed, DeadLettersRefreshed
from celery_morgue.tui.profiles import Profile

NOW = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC
# Nothing listens here: with polling off the app never connects.
PROFILE = Profile(name="prod", url="redis://:s3cret@redis.internal:6379/0", grace=30.0)


def frozen_clock() -> float:
    return NOW


@pytest.fixture(autouse=True)
def utc_clock_times() -> Iterator[None]:
    """The status line shows local times: pin the zone so snapshots match everywhere."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


def iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat()


def entry(n: int, ago: float, task: str, exception: str, message: str, **extra: object) -> Entry:
    failed = NOW - ago
    fields: dict[str, object] = {
        "id": f"{int(failed * 1000)}-0",
        "task_id": f"{n:08x}-1111-4222-8333-444455556666",
        "task": task,
        "queue": "celery",
        "args": [n, "order"],
        "kwargs": {"retry": False},
        "exception": exception,
        "message": message,
        "traceback": (
            "Traceback (most recent call last):\n"
            '  File "/srv/app/tasks.py", line 42, in charge\n'
            "    gateway.charge(order)\n"
            f"{exception}: {message}"
        ),
        "retries": 3,
        "hostname": "celery@worker-1",
        "failed_at": iso(failed),
    }
    fields.update(extra)
    return Entry(**fields)  # type: ignore[arg-type]


ENTRIES = [
    entry(1, 4, "shop.tasks.charge_card", "PaymentDeclined", "card declined for order 1000"),
    entry(2, 65, "shop.tasks.parse_invoice", "ValueError", "[red]unexpected[/red] token"),
    entry(3, 3_700, "shop.tasks.sync_inventory", "ConnectionError", "inventory API timed out"),
    entry(4, 90_000, "shop.tasks.send_receipt", "SMTPError", "421 try again later"),
]

TASKS = [
    ActiveTask(
        id="aaaaaaaa-0000-4000-8000-000000000001",
        name="shop.tasks.generate_report",
        worker="celery@worker-1",
        pid=4242,
        started_at=dt.datetime.fromtimestamp(NOW - 400, dt.UTC),
        age=400.0,
        hard_limit=300.0,
        zombie=True,
        redelivered=False,
        args="(7,)",
        kwargs="{}",
    ),
    ActiveTask(
        id="bbbbbbbb-0000-4000-8000-000000000002",
        name="shop.tasks.rebuild_index",
        worker="celery@worker-2",
        pid=4343,
        started_at=dt.datetime.fromtimestamp(NOW - 250, dt.UTC),
        age=250.0,
        hard_limit=300.0,
        zombie=False,
        redelivered=False,
        args="()",
        kwargs="{}",
    ),
    ActiveTask(
        id="cccccccc-0000-4000-8000-000000000003",
        name="shop.tasks.send_receipt",
        worker="celery@worker-1",
        pid=4244,
        started_at=dt.datetime.fromtimestamp(NOW - 12, dt.UTC),
        age=12.0,
        hard_limit=60.0,
        zombie=False,
        redelivered=True,
        args="(1000,)",
        kwargs="{}",
    ),
]


def dead_letters() -> DeadLettersRefreshed:
    queues = [
        QueueInfo("celery", 1204, dt.datetime.fromtimestamp(NOW - 90_000, dt.UTC), None),
        QueueInfo("emails", 3, None, None),
        QueueInfo("reports", 12_345_678, None, None),
    ]
    head = Page(queue="celery", total=1204, items=ENTRIES, next=None)
    return DeadLettersRefreshed(queues, head, taken_at=NOW)


def cluster() -> ClusterRefreshed:
    snapshot = ClusterSnapshot(
        tasks=TASKS,
        workers=["celery@worker-1", "celery@worker-2"],
        unreachable=["celery@worker-3"],
        taken_at=dt.datetime.fromtimestamp(NOW, dt.UTC),
    )
    return ClusterRefreshed(snapshot)


async def feed_dashboard(pilot: Pilot[None]) -> None:
    app = pilot.app
    assert isinstance(app, MorgueApp)
    app.dashboard.post_message(dead_letters())
    app.dashboard.post_message(cluster())
    await pilot.pause()
    await pilot.pause()


def dropped_and_unreadable() -> DeadLettersRefreshed:
    """Rows of every kind, as an 80x24 terminal shows them."""
    items: list[Entry | UnreadableEntry] = [
        entry(
            5,
            2,
            "shop.tasks.charge_card",
            "Terminated",
            "terminated by a revoke (signal 15)",
            reason="terminated",
        ),
        UnreadableEntry(
            f"{int((NOW - 30) * 1000)}-0", "not JSON (Expecting value: line 1)", "{not json"
        ),
        entry(
            6,
            40,
            "shop.tasks.old_name",
            "NotRegistered",
            "task 'shop.tasks.old_name' is not registered on worker-1",
            reason="unregistered",
        ),
        entry(
            7, 50, "shop.tasks.send_receipt", "Expired", "expired before it ran", reason="expired"
        ),
        *ENTRIES[1:],
    ]
    queues = [QueueInfo("celery", len(items), None, None)]
    page = Page(queue="celery", total=len(items), items=items, next=None)
    return DeadLettersRefreshed(queues, page, taken_at=NOW)


def make_app(**options: object) -> MorgueApp:
    return MorgueApp(PROFILE, clock=frozen_clock, poll=False, **options)  # type: ignore[arg-type]


def test_dashboard(snap_compare: object) -> None:
    assert snap_compare(make_app(), run_before=feed_dashboard)  # type: ignore[operator]


def test_entry_detail(snap_compare: object) -> None:
    # The second entry: its message holds markup, which must show as typed.
    assert snap_compare(  # type: ignore[operator]
        make_app(), press=["down", "enter"], run_before=feed_dashboard
    )


def test_clear_confirmation(snap_compare: object) -> None:
    assert snap_compare(make_app(), press=["c"], run_before=feed_dashboard)  # type: ignore[operator]


def test_help_screen(snap_compare: object) -> None:
    assert snap_compare(  # type: ignore[operator]
        make_app(), press=["question_mark"], run_before=feed_dashboard, terminal_size=(80, 40)
    )


def test_readonly_dashboard_in_ansi_theme(snap_compare: object) -> None:
    app = MorgueApp(
        Profile(name="ro", url="redis://127.0.0.1:6379/0", readonly=True),
        clock=frozen_clock,
        poll=False,
        theme="ansi-dark",
    )
    assert snap_compare(app, run_before=feed_dashboard)  # type: ignore[operator]


def test_dashboard_without_colour(snap_compare: object) -> None:
    """NO_COLOR: the zombie still reads ZOMBIE, the cursor row is reverse video."""
    os.environ["NO_COLOR"] = "1"
    try:
        app = make_app()  # Textual reads (and removes) NO_COLOR while constructing the app
    finally:
        os.environ.pop("NO_COLOR", None)
    assert app.no_color
    assert snap_compare(app, run_before=feed_dashboard)  # type: ignore[operator]


def test_profiles_screen(
    snap_compare: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The profiles of a config file under a stand-in home (so the path reads ~/...)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    path = tmp_path / ".config" / "celery-morgue" / "config.toml"
    profiles = [
        PROFILE,
        Profile(
            name="staging",
            url="rediss://redis.staging:6380/2",
            broker_url="amqp://celery:hunter2@rabbit.staging:5672//",
            readonly=True,
        ),
        Profile(name="local", url="unix:///run/redis/redis.sock", refresh=0.5),
    ]
    save_config(Config(path=path, profiles={p.name: p for p in profiles}, default="staging"))
    app = make_app(config_path=path)
    assert snap_compare(app, press=["p", "down"], run_before=feed_dashboard)  # type: ignore[operator]


def test_dropped_and_unreadable_rows_at_80x24(snap_compare: object) -> None:
    """A word for every reason but "failed", and an unreadable entry among the others."""

    async def feed(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, MorgueApp)
        app.dashboard.post_message(dropped_and_unreadable())
        app.dashboard.post_message(cluster())
        await pilot.pause()
        await pilot.pause()

    assert snap_compare(make_app(), run_before=feed, terminal_size=(80, 24))  # type: ignore[operator]


def test_hidden_arguments_detail(snap_compare: object) -> None:
    """The caller's argsrepr/kwargsrepr, labelled; the raw arguments only after v."""
    hidden = entry(
        8,
        5,
        "shop.tasks.charge_card",
        "PaymentDeclined",
        "card declined",
        args=["4111-1111-1111-1111"],
        kwargs={"cvv": "123"},
        argsrepr="('<card>',)",
        kwargsrepr="{'cvv': '***'}",
    )

    async def feed(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, MorgueApp)
        page = Page(queue="celery", total=1, items=[hidden], next=None)
        app.dashboard.post_message(
            DeadLettersRefreshed([QueueInfo("celery", 1, None, None)], page, taken_at=NOW)
        )
        await pilot.pause()
        await pilot.pause()

    assert snap_compare(  # type: ignore[operator]
        make_app(), press=["enter"], run_before=feed, terminal_size=(80, 30)
    )
