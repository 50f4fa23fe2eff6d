"""Render the README screenshots: ``python screenshots/make_screenshots.py [--out DIR]``.

The app runs headless (``App.run_test``) with polling off, a frozen clock and a small shop's
dead letters and running tasks fed through :mod:`celery_morgue.tui.messages`, the way its thread workers
would post them: no Redis, no Celery, and the same bytes on every run and every machine.
"""

# ruff: noqa: E402  (the environment is pinned before textual is first imported, below)

from __future__ import annotations

import os
import time

# Textual reads these once, when it is first imported, and the status line shows local time:
# pin them so that the developer's terminal settings never reach the pictures.
os.environ["TZ"] = "UTC"
os.environ["TEXTUAL_THEME"] = "textual-dark"
os.environ["TEXTUAL_ANIMATIONS"] = "none"
os.environ.pop("NO_COLOR", None)
time.tzset()

import argparse
import asyncio
import contextlib
import datetime as dt
import re
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from textual.containers import VerticalScroll
from textual.pilot import Pilot

from celery_morgue.core.dlq import Page, QueueInfo
from celery_morgue.core.entry import Entry, group_of
from celery_morgue.core.groups import GroupReport, GroupSummary
from celery_morgue.core.jsonable import JSON
from celery_morgue.core.zombies import ActiveTask, ClusterSnapshot
from celery_morgue.tui.app import MorgueApp
from celery_morgue.tui.config_file import Config, save_config
from celery_morgue.tui.messages import ClusterRefreshed, DeadLettersRefreshed
from celery_morgue.tui.profiles import Profile

HERE = Path(__file__).resolve().parent
THEME = "textual-dark"
NOW = dt.datetime(2026, 3, 14, 9, 41, tzinfo=dt.UTC).timestamp()
# Nothing listens there: with polling off the app never connects. The password shows that the
# status line redacts it.
PROFILE = Profile(name="shop", url="redis://:s3cret@redis.shop.internal:6379/0", grace=30.0)
README_SIZE = (100, 30)
# Under the throwaway home folder the script sets: the profiles screen shows it as ~/...
CONFIG_FILE = Path(".config", "morgue", "config.toml")


def frozen_clock() -> float:
    return NOW


def task_uuid(label: str) -> str:
    # uuid5: real-looking task ids that are the same on every run.
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"https://shop.example/{label}"))


def iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat()


# -- the dead letters ------------------------------------------------------------------------

CELERY_TRACE = '  File "/app/.venv/lib/python3.11/site-packages/celery/app/trace.py"'


@dataclass(frozen=True)
class Failure:
    task: str
    args: list[JSON]
    exception: str
    message: str
    line: int
    source: str
    retries: int = 0


def charge_card(order: int, amount: str) -> Failure:
    return Failure(
        "shop.charge_card",
        [order, amount],
        "PaymentDeclined",
        f"card declined for order {order} ({amount} EUR)",
        48,
        'raise PaymentDeclined(f"card declined for order {order_id} ({amount} EUR)")',
    )


def parse_invoice(payload: str) -> Failure:
    # Markup in a task's strings is shown as typed, never interpreted.
    return Failure(
        "shop.parse_invoice",
        [payload],
        "ValueError",
        f"[red]unexpected[/red] token in invoice {payload[:20]!r}",
        54,
        'raise ValueError(f"[red]unexpected[/red] token in invoice {payload[:20]!r}")',
    )


def sync_inventory(sku: str) -> Failure:
    return Failure(
        "shop.sync_inventory",
        [sku],
        "ConnectionError",
        f"inventory service refused sku {sku}",
        61,
        'raise ConnectionError(f"inventory service refused sku {sku}")',
        retries=3,
    )


def dead_letter(failure: Failure, ago: float, queue: str = "celery") -> Entry:
    failed = NOW - ago
    function = failure.task.rpartition(".")[2]
    return Entry(
        id=f"{int(failed * 1000)}-0",
        task_id=task_uuid(f"{failure.task}/{failure.args}"),
        task=failure.task,
        queue=queue,
        args=failure.args,
        kwargs={},
        exception=failure.exception,
        message=failure.message,
        traceback=(
            "Traceback (most recent call last):\n"
            f"{CELERY_TRACE}, line 453, in trace_task\n"
            "    R = retval = fun(*args, **kwargs)\n"
            f'  File "/app/shop/tasks.py", line {failure.line}, in {function}\n'
            f"    {failure.source}\n"
            f"{failure.exception}: {failure.message}"
        ),
        retries=failure.retries,
        hostname="celery@shop-1",
        failed_at=iso(failed),
        routing_key=queue,
    )


# The celery queue, newest first: the pane shown when the dashboard opens.
CELERY_DEAD_LETTERS = [
    dead_letter(charge_card(1042, "129.99"), 12),
    dead_letter(parse_invoice("INV-1041: total=??"), 47),
    dead_letter(sync_inventory("SKU-417"), 131),
    dead_letter(charge_card(1037, "54.10"), 388),
    dead_letter(parse_invoice("INV-1035: total=??"), 545),
    dead_letter(sync_inventory("SKU-233"), 1_390),
    dead_letter(charge_card(1029, "310.00"), 2_470),
    dead_letter(parse_invoice("INV-1024: total=??"), 4_330),
    dead_letter(charge_card(1018, "18.50"), 7_415),
    dead_letter(sync_inventory("SKU-908"), 19_800),
    dead_letter(charge_card(1003, "76.20"), 93_600),
]


def dead_letters() -> DeadLettersRefreshed:
    newest = dt.datetime.fromtimestamp(NOW - 12, dt.UTC)
    queues = [
        QueueInfo("celery", len(CELERY_DEAD_LETTERS), newest, newest),
        QueueInfo("payments", 4, None, None),
        QueueInfo("reports", 2, None, None),
    ]
    head = Page(
        queue="celery", total=len(CELERY_DEAD_LETTERS), items=CELERY_DEAD_LETTERS, next=None
    )
    return DeadLettersRefreshed(queues, head, taken_at=NOW)


def failure_groups() -> DeadLettersRefreshed:
    """The poll while the groups view is open: the celery queue's groups, from its entries."""
    members: dict[str, list[Entry]] = {}
    for entry in CELERY_DEAD_LETTERS:  # newest first
        members.setdefault(group_of(entry), []).append(entry)
    groups = [
        GroupSummary(
            group=group,
            task=entries[0].task,
            exception=entries[0].exception,
            where=f"shop/tasks.py:{entries[0].task.rpartition('.')[2]}",
            sample=entries[0].message,
            count=len(entries),
            first=dt.datetime.fromtimestamp(int(entries[-1].id.split("-")[0]) / 1000, dt.UTC),
            last=dt.datetime.fromtimestamp(int(entries[0].id.split("-")[0]) / 1000, dt.UTC),
        )
        for group, entries in members.items()
    ]
    groups.sort(key=lambda g: (-g.count, g.group))
    report = GroupReport("celery", len(CELERY_DEAD_LETTERS), groups, distinct=len(groups))
    refreshed = dead_letters()
    return DeadLettersRefreshed(refreshed.queues, refreshed.head, taken_at=NOW, groups=report)


async def groups_view(pilot: Pilot[None]) -> None:
    await feed(pilot)
    await pilot.press("f")
    await settle(pilot)
    app = pilot.app
    assert isinstance(app, MorgueApp)
    app.dashboard.post_message(failure_groups())
    await settle(pilot)


# -- the running tasks -----------------------------------------------------------------------


def running(
    name: str, worker: str, pid: int, age: float, hard_limit: float, args: str, **flags: bool
) -> ActiveTask:
    return ActiveTask(
        id=task_uuid(f"running/{name}/{args}"),
        name=name,
        worker=worker,
        pid=pid,
        started_at=dt.datetime.fromtimestamp(NOW - age, dt.UTC),
        age=age,
        hard_limit=hard_limit,
        # Past its hard limit plus the profile's grace: the reaper's and the R key's target.
        zombie=age > hard_limit + PROFILE.grace,
        redelivered=flags.get("redelivered", False),
        args=args,
        kwargs="{}",
        queue="reports" if name == "shop.generate_report" else "celery",
    )


def cluster() -> ClusterRefreshed:
    tasks = [  # oldest first, as core.zombies.active_tasks returns them
        running("shop.generate_report", "reports@shop-2", 5120, 662, 300, "(17, 'monthly')"),
        running("shop.generate_report", "reports@shop-2", 5121, 251, 300, "(18, 'weekly')"),
        running("shop.sync_inventory", "celery@shop-1", 4311, 41, 120, "('SKU-512',)"),
        running(
            "shop.charge_card", "celery@shop-1", 4312, 9, 30, "(1043, '89.00')", redelivered=True
        ),
        running("shop.send_receipt", "celery@shop-1", 4313, 2, 60, "(1042,)"),
    ]
    snapshot = ClusterSnapshot(
        tasks=tasks,
        workers=["celery@shop-1", "reports@shop-2"],
        unreachable=["celery@shop-3"],
        taken_at=dt.datetime.fromtimestamp(NOW, dt.UTC),
    )
    return ClusterRefreshed(snapshot)


# -- the config file of the profiles screen --------------------------------------------------


def demo_config(path: Path) -> Config:
    profiles = [
        PROFILE,
        Profile(
            name="shop-ro",
            url="redis://redis.shop.internal:6379/0",
            password_env="SHOP_REDIS_PASSWORD",  # noqa: S106 (the name of a variable)
            readonly=True,
        ),
        Profile(
            name="staging",
            url="redis://redis.staging.internal:6379/1",
            broker_url="amqp://shop@mq.staging:5672//",
            broker_password_env="STAGING_MQ_PASSWORD",  # noqa: S106 (the name of a variable)
        ),
        Profile(name="local", url="redis://127.0.0.1:6379/0"),
    ]
    return Config(path, profiles={p.name: p for p in profiles}, default=PROFILE.name)


@contextlib.contextmanager
def demo_home() -> Iterator[Path]:
    """A throwaway home folder holding the demo's config file; the config path inside it.

    The profiles screen shows the config path with the home folder as ``~``, so under a fresh
    home it reads the same on every machine; and the user's own config is never read.
    """
    before = os.environ.get("HOME")
    with tempfile.TemporaryDirectory(prefix="morgue-screenshots-") as home:
        os.environ["HOME"] = home
        try:
            path = Path(home) / CONFIG_FILE
            save_config(demo_config(path))
            yield path
        finally:
            if before is None:
                del os.environ["HOME"]
            else:
                os.environ["HOME"] = before


# -- driving the app -------------------------------------------------------------------------

Steps = Callable[[Pilot[None]], Awaitable[None]]


async def settle(pilot: Pilot[None]) -> None:
    # Screen switches are delayed and layout runs after messages: wait until all is drawn.
    await pilot.pause()
    await pilot.wait_for_scheduled_animations()
    await pilot.pause()


async def feed(pilot: Pilot[None]) -> None:
    app = pilot.app
    assert isinstance(app, MorgueApp)
    app.dashboard.post_message(dead_letters())
    app.dashboard.post_message(cluster())
    await settle(pilot)


def pressing(*keys: str) -> Steps:
    async def steps(pilot: Pilot[None]) -> None:
        await feed(pilot)
        await pilot.press(*keys)
        await settle(pilot)

    return steps


# Rows: more than any screen here needs, so that nothing scrolls while it is measured.
TALL = 200


def fitted(*keys: str, dialog: bool = False) -> Steps:
    """Press ``keys`` in a very tall terminal, then shrink it to what the screen's box needs.

    The help and the entry detail grow with every key and field the app gains: sized by hand,
    their pictures would one day be cut off without anyone noticing. They are measured in a
    terminal too tall rather than by growing a short one: a box with a scrollbar is narrower,
    wraps more lines, and can keep its scrollbar however tall the terminal becomes.
    """

    async def steps(pilot: Pilot[None]) -> None:
        await feed(pilot)
        app = pilot.app
        width, height = app.size
        await pilot.resize_terminal(width, TALL)
        await pilot.press(*keys)
        await settle(pilot)
        box = app.screen.query_one(VerticalScroll)
        if dialog:
            # A centred box as tall as what it holds: a row of the dashboard above and below.
            needed = box.outer_size.height + 2
        else:
            # A box filling the screen: without the rows it leaves empty.
            region = box.content_region
            content = box.get_content_height(region.size, app.size, region.width)
            needed = TALL - region.height + content
        await pilot.resize_terminal(width, max(height, needed))
        await settle(pilot)
        if box.max_scroll_y:
            raise RuntimeError(f"{app.screen!r} scrolls: part of it would be cut off")

    return steps


@dataclass(frozen=True)
class Shot:
    name: str  # the file is screenshots/<name>.svg
    steps: Steps
    size: tuple[int, int] = README_SIZE


SHOTS = [
    Shot("dashboard", feed),
    # The second entry: its message holds markup, shown as typed.
    Shot("entry", fitted("down", "enter")),
    Shot("clear-confirm", pressing("c"), size=(80, 24)),
    Shot("groups", groups_view, size=(80, 24)),
    Shot("help", fitted("question_mark", dialog=True)),
    Shot("profiles", pressing("p"), size=(100, 16)),
]

# Rich's export_svg prefixes every CSS class and clip-path id with "terminal-<n>", <n> being an
# adler32 of the repr of every rendered segment (styles with Textual's hidden metadata included)
# and the title. It is the same from run to run today, but it rests on reprs nobody sees, and any
# change anywhere on screen changes it on every line of the file, burying the real change in the
# diff. Textual's export_screenshot does not pass Rich's unique_id through, so the prefix is
# replaced afterwards by one named after the file (still unique when several screenshots are
# inlined into one page).
RICH_ID = re.compile(r'<clipPath id="(terminal-\d+)-clip-terminal">')


def stable_ids(svg: str, name: str) -> str:
    found = RICH_ID.search(svg)
    if found is None:
        raise RuntimeError("the SVG has no Rich terminal id: has Rich's export format changed?")
    return svg.replace(f"{found.group(1)}-", f"morgue-{name}-")


async def shoot(shot: Shot, out_dir: Path, config: Path) -> Path:
    app = MorgueApp(PROFILE, clock=frozen_clock, poll=False, theme=THEME, config_path=config)
    async with app.run_test(size=shot.size) as pilot:
        await shot.steps(pilot)
        svg = app.export_screenshot()
    path = out_dir / f"{shot.name}.svg"
    # Bytes, not text: no newline translation on any platform.
    path.write_bytes(stable_ids(svg, shot.name).encode("utf-8"))
    return path


def main(out_dir: Path = HERE) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)

    async def shoot_all(config: Path) -> list[Path]:
        return [await shoot(shot, out_dir, config) for shot in SHOTS]

    with demo_home() as config:
        return asyncio.run(shoot_all(config))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder for the SVGs")
    for written in main(parser.parse_args().out):
        print(written)
