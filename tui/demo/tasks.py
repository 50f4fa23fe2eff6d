"""The demo's Celery app: a small shop whose tasks fail in every way celery-morgue handles.

Run by the demo's worker (``celery -A celery_morgue.tui.demo.tasks worker -B``); the broker
comes from ``MORGUE_DEMO_BROKER``. The demo's hard limit is short so zombies show up within seconds.
"""

from __future__ import annotations

import decimal
import os
import random
import time
from typing import Any

from celery import Celery

from celery_morgue import core

DEMO_HARD_LIMIT = 8.0
DEMO_GRACE = 2.0
DEMO_REAP_INTERVAL = 20.0

app = Celery("shop", broker=os.environ.get("MORGUE_DEMO_BROKER", "redis://127.0.0.1:6379/0"))
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    result_backend=None,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    worker_send_task_events=True,
    task_routes={"shop.generate_report": {"queue": "reports"}},
)
core.install(
    app,
    spool_dir=os.environ.get("MORGUE_DEMO_SPOOL") or None,
    hard_limit=DEMO_HARD_LIMIT,
    grace=DEMO_GRACE,
    reap_interval=DEMO_REAP_INTERVAL,
)


class PaymentDeclined(Exception):
    pass


@app.task(name="shop.charge_card")
def charge_card(order_id: int, amount: decimal.Decimal) -> None:
    raise PaymentDeclined(f"card declined for order {order_id} ({amount} EUR)")


@app.task(name="shop.parse_invoice")
def parse_invoice(payload: str) -> None:
    # Task strings are shown literally by the UI, markup and all.
    raise ValueError(f"[red]unexpected[/red] token in invoice {payload[:20]!r}")


@app.task(name="shop.sync_inventory", bind=True, max_retries=3)
def sync_inventory(self: Any, sku: str) -> None:
    try:
        raise ConnectionError(f"inventory service refused sku {sku}")
    except ConnectionError as exc:
        core.retry_with_backoff(self, exc, base=0.5, max_delay=2.0, jitter="full")


@app.task(name="shop.generate_report")
def generate_report(report_id: int, seconds: float) -> None:
    """Runs past the demo's hard limit: a zombie until the reaper terminates it."""
    time.sleep(seconds)


@app.task(name="shop.send_receipt")
def send_receipt(order_id: int) -> None:
    time.sleep(random.uniform(0.1, 1.5))
