"""The options of :func:`core.install`, checked once so that a typo fails at start-up."""

from __future__ import annotations

import dataclasses
import signal as signal_module
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celery_morgue.core.dlq import DEFAULT_MAX_ENTRIES, DEFAULT_PREFIX, DEFAULT_RETENTION
from celery_morgue.core.redis_cluster import cluster_prefix
from celery_morgue.core.spool import DEFAULT_MAX_BYTES as DEFAULT_SPOOL_MAX_BYTES

# The reaper's defaults. A zombie has run past its hard limit by more than the grace: long
# enough for a prefork pool's own kill (and its WorkerLostError bookkeeping) to land first.
DEFAULT_HARD_LIMIT = 300.0
DEFAULT_GRACE = 30.0
DEFAULT_REAP_INTERVAL = 300.0
DEFAULT_REAP_SIGNALS = ("SIGTERM", "SIGKILL")
# The longest wait for a worker that does not answer an inspect or a revoke.
DEFAULT_INSPECT_TIMEOUT = 1.0


def signal_number(name: str) -> int:
    """``'SIGKILL'``, ``'KILL'`` or ``'kill'`` -> 9; a ValueError naming anything else."""
    if not isinstance(name, str):
        raise ValueError(f"signal must be a name such as 'SIGTERM', got {name!r}")
    try:
        return int(signal_module.Signals["SIG" + name.upper().removeprefix("SIG")])
    except KeyError:
        raise ValueError(f"unknown signal {name!r} (expected e.g. 'SIGTERM', 'SIGKILL')") from None


def _positive_seconds(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{name} must be positive seconds, got {value!r}")


@dataclass(frozen=True)
class Options:
    prefix: str = DEFAULT_PREFIX
    retention: int = DEFAULT_RETENTION  # seconds an entry is kept after it failed
    max_entries: int = DEFAULT_MAX_ENTRIES  # per queue; the oldest go first
    spool_dir: Path | str | None = None  # default: platformdirs' user state dir
    spool_max_bytes: int = DEFAULT_SPOOL_MAX_BYTES  # per spool; past it the oldest entries go
    socket_timeout: float = 1.0  # the main-process receiver runs in the worker's event loop
    capture_expired: bool = False  # also keep tasks whose `expires` passed before they ran
    # The reaper: a task with no time limit of its own (per call or on the task) nor a pool
    # default gets ``hard_limit``; None: such a task is never reaped.
    hard_limit: float | None = DEFAULT_HARD_LIMIT
    grace: float = DEFAULT_GRACE  # seconds past the hard limit before a task is a zombie
    reap_interval: float | None = DEFAULT_REAP_INTERVAL  # beat period; None: no beat entry
    reap_signals: tuple[str, ...] = DEFAULT_REAP_SIGNALS  # one more per run a task survives
    reap_dry_run: bool = False  # list zombies, revoke nothing
    inspect_timeout: float = DEFAULT_INSPECT_TIMEOUT
    # Also reap workers that do not say they write to this DLQ: no core.install there (asked
    # with inspect) or an older celery-morgue. Workers of another DLQ are never reaped.
    reap_uninstalled_workers: bool = False
    # The DLQ Redis is a Redis Cluster; the prefix then carries a hash tag (see redis_cluster).
    cluster: bool = False

    def __post_init__(self) -> None:
        if (
            not isinstance(self.prefix, str)
            or len(self.prefix) < 2
            or not self.prefix.endswith(":")
        ):
            raise ValueError(
                f"prefix must be a string ending in ':' (like 'dlq:'), got {self.prefix!r}"
            )
        if not isinstance(self.cluster, bool):
            raise ValueError(f"cluster must be True or False, got {self.cluster!r}")
        if self.cluster:
            object.__setattr__(self, "prefix", cluster_prefix(self.prefix))
        for name in ("retention", "max_entries"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        _positive_seconds("socket_timeout", self.socket_timeout)
        if (
            isinstance(self.spool_max_bytes, bool)
            or not isinstance(self.spool_max_bytes, int)
            or self.spool_max_bytes <= 0
        ):
            raise ValueError(
                f"spool_max_bytes must be a positive integer, got {self.spool_max_bytes!r}"
            )
        if self.hard_limit is not None:
            _positive_seconds("hard_limit", self.hard_limit)
        _positive_seconds("inspect_timeout", self.inspect_timeout)
        if (
            isinstance(self.grace, bool)
            or not isinstance(self.grace, int | float)
            or not self.grace >= 0
        ):
            raise ValueError(f"grace must be zero or positive seconds, got {self.grace!r}")
        if self.reap_interval is not None:
            _positive_seconds("reap_interval", self.reap_interval)
        if not isinstance(self.capture_expired, bool):
            raise ValueError(f"capture_expired must be True or False, got {self.capture_expired!r}")
        if not isinstance(self.reap_dry_run, bool):
            raise ValueError(f"reap_dry_run must be True or False, got {self.reap_dry_run!r}")
        if not isinstance(self.reap_uninstalled_workers, bool):
            raise ValueError(
                "reap_uninstalled_workers must be True or False, "
                f"got {self.reap_uninstalled_workers!r}"
            )
        object.__setattr__(self, "reap_signals", _signal_names(self.reap_signals))

    @classmethod
    def from_kwargs(cls, options: dict[str, Any]) -> Options:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(
                f"unknown celery-morgue option(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        return cls(**options)


def _signal_names(value: Any) -> tuple[str, ...]:
    """Normalised names (``'kill'`` -> ``'SIGKILL'``) of a non-empty sequence of signals."""
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise ValueError(f"reap_signals must be a non-empty list of signal names, got {value!r}")
    names = []
    for item in value:
        try:
            signal_number(item)
        except ValueError as exc:
            raise ValueError(f"reap_signals: {exc}") from None
        names.append("SIG" + item.upper().removeprefix("SIG"))
    return tuple(names)
