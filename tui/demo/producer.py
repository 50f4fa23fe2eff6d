"""Keeps the demo busy: sends a mix of tasks until its parent (the demo) goes away.

Bounded: it stops by itself after ``MORGUE_DEMO_MAX_SECONDS`` (two hours by default) even if
nobody stops it.
"""

from __future__ import annotations

import decimal
import itertools
import os
import random
import time

from celery_morgue.tui.demo.tasks import (
    charge_card,
    generate_report,
    parse_invoice,
    send_receipt,
    sync_inventory,
)

PACE = 1.0  # seconds between two sends


def produce(parent: int, max_seconds: float) -> None:
    deadline = time.monotonic() + max_seconds
    for tick in itertools.count():
        if os.getppid() != parent or time.monotonic() > deadline:
            return
        order = 1000 + tick
        send_receipt.delay(order)
        if tick % 2 == 0:
            charge_card.delay(order, decimal.Decimal(random.randint(500, 50000)) / 100)
        if tick % 3 == 0:
            parse_invoice.delay(f"INV-{order}: total=??")
        if tick % 5 == 0:
            sync_inventory.delay(f"SKU-{random.randint(100, 999)}")
        if tick % 12 == 0:
            generate_report.delay(tick, 45.0)
        time.sleep(PACE)


if __name__ == "__main__":
    produce(os.getppid(), float(os.environ.get("MORGUE_DEMO_MAX_SECONDS", 7200)))
