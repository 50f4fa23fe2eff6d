"""The options of :func:`core.install`, checked once so that a typo fails at start-up."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.dlq import DEFAULT_MAX_ENTRIES, DEFAULT_PREFIX, DEFAULT_RETENTION


@dataclass(frozen=True)
class Options:
    prefix: str = DEFAULT_PREFIX
    retention: int = DEFAULT_RETENTION  # seconds an entry is kept after it failed
    max_entries: int = DEFAULT_MAX_ENTRIES  # per queue; the oldest go first
    spool_dir: Path | str | None = None  # default: platformdirs' user state dir
    socket_timeout: float = 1.0  # the main-process receiver runs in the worker's event loop

    def __post_init__(self) -> None:
        if not isinstance(self.prefix, str) or not self.prefix:
            raise ValueError(f"prefix must be a non-empty string, got {self.prefix!r}")
        for name in ("retention", "max_entries"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.socket_timeout, int | float) or self.socket_timeout <= 0:
            raise ValueError(
                f"socket_timeout must be positive seconds, got {self.socket_timeout!r}"
            )

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
