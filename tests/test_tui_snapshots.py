"""Snapshots of the UI from fixed data: a frozen clock, polling off, data fed as messages.

No Redis is needed: the app is built with ``poll=False`` and the dashboard receives the same
messages its thread workers would post. Regenerate with ``--snapshot-update`` and look at the
SVGs under tests/__snapshots__/ before committing them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.pilot import Pilot

from celery_morgue.core.dlq import Page, QueueInfo
from celery_morgue.core.entry import Entry, UnreadableEntry
from celery_morgue.tui.app import MorgueApp
from celery_morgue.tui.config_file import Config, save_config
from celery_morgue.tui.messages import DeadLettersRefreshed
from celery_morgue.tui.profiles import Profile
from tests.helpers import (
    ENTRIES,
    NOW,
    PROFILE,
    feed_dashboard,
    frozen_clock,
    make_app,
    shop_entry,
)


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


def dropped_and_unreadable() -> DeadLettersRefreshed:
    """Rows of every kind, as an 80x24 terminal shows them."""
    items: list[Entry | UnreadableEntry] = [
        shop_entry(
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
        shop_entry(
            6,
            40,
            "shop.tasks.old_name",
            "NotRegistered",
            "task 'shop.tasks.old_name' is not registered on worker-1",
            reason="unregistered",
        ),
        shop_entry(
            7, 50, "shop.tasks.send_receipt", "Expired", "expired before it ran", reason="expired"
        ),
        *ENTRIES[1:],
    ]
    queues = [QueueInfo("celery", len(items), None, None)]
    page = Page(queue="celery", total=len(items), items=items, next=None)
    return DeadLettersRefreshed(queues, page, taken_at=NOW)


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
        await feed_dashboard(pilot, dropped_and_unreadable())

    assert snap_compare(make_app(), run_before=feed, terminal_size=(80, 24))  # type: ignore[operator]


def test_hidden_arguments_detail(snap_compare: object) -> None:
    """The caller's argsrepr/kwargsrepr, labelled; the raw arguments only after v."""
    hidden = shop_entry(
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
