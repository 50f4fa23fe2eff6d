"""``python -m celery_morgue.tui.demo [--headless]``: the demo without the `morgue` command."""

import sys

from celery_morgue.tui.demo.runner import run_demo

run_demo(headless="--headless" in sys.argv[1:])
