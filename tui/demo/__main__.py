"""``python -m tui.demo [--headless]``: the demo without the `morgue` command."""

import sys

from tui.demo.runner import run_demo

run_demo(headless="--headless" in sys.argv[1:])
