"""What `dlq requeue --all` shows and hears while it runs: a progress bar on a terminal, and
Ctrl+C / SIGTERM turned into a clean stop.

The bar goes to stderr, redrawn in place, only when stderr is a terminal (never under a pipe,
a log or --json). A signal only sets the run's stop event: nothing is raised in the middle of
a publish, so the message in flight is either sent and its entry removed, or not sent and kept.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import TextIO

from celery_morgue.core.redrive import RedriveProgress
from celery_morgue.tui.cli.output import fit, terminal_width

BAR_WIDTH = 24
# The signals that stop a requeue, and the exit status after each (128 + the signal number).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def exit_status(signum: int) -> int:
    return 128 + signum


def describe_duration(seconds: float) -> str:
    """``45s``, ``2m08s``, ``1h04m``."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def progress_line(progress: RedriveProgress) -> str:
    """``[#########...............]  1,204/40,000  312/s  ETA 2m04s``."""
    total = max(progress.total, progress.sent)
    done = progress.sent / total if total else 1.0
    filled = round(done * BAR_WIDTH)
    bar = "#" * filled + "." * (BAR_WIDTH - filled)
    eta = progress.eta
    rest = f"ETA {describe_duration(eta)}" if eta is not None and progress.sent else "ETA -"
    return f"[{bar}]  {progress.sent:,}/{progress.total:,}  {progress.rate:,.0f}/s  {rest}"


class ProgressBar:
    """Draws the run's progress on one line of ``stream``, in place; ``close`` clears it."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.drawn = False

    def __call__(self, progress: RedriveProgress) -> None:
        line = fit(progress_line(progress), terminal_width() - 1)
        self.stream.write("\r" + line + "\x1b[K")
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.drawn = False


def progress_bar(as_json: bool) -> ProgressBar | None:
    """A bar on stderr when it is a terminal and the output is not JSON; else None."""
    if as_json or not sys.stderr.isatty():
        return None
    return ProgressBar(sys.stderr)


class StopSignals:
    """Which stop signal arrived first, if any; each sets ``stop``."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.received: int | None = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
        self.stop.set()


@contextlib.contextmanager
def stopping_on_signals(stop: threading.Event) -> Iterator[StopSignals]:
    """SIGINT and SIGTERM set ``stop`` while inside; the previous handlers come back after."""
    signals = StopSignals(stop)
    previous = {signum: signal.signal(signum, signals._handle) for signum in STOP_SIGNALS}
    try:
        yield signals
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
