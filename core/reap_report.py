"""What one run of the reaper (``celery_morgue.cleanup_zombie_tasks``) did.

A run returns a :class:`ReapReport`, or a :class:`SkippedReap` when another run held the lock.
``as_dict()`` of either is the JSON the run logs, keeps in Redis (``<namespace>reaper:last``,
``<namespace>reaper:skipped``) and returns from the Celery task: result backends and readers of
those keys depend on its keys, so a key is only ever added, and one not known is left out
rather than written as null.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from celery_morgue.core.revoke import RevokeReport


@dataclass(frozen=True)
class ReapReport:
    """A run that asked the workers (or tried to) and signalled its zombies."""

    ran_at: str  # ISO 8601, UTC
    dry_run: bool
    hard_limit: float | None  # the run's own; with worker defaults each worker uses its own
    grace: float
    # Each of ``reap_signals`` -> what sending it did; empty reports for signals not sent.
    signals: Mapping[str, RevokeReport]
    # The zombies signalled (in a dry run: to be signalled), each with its signal and step.
    zombies: tuple[dict[str, Any], ...] = ()
    # The zombies of workers this reaper leaves alone, each with the reason.
    skipped: tuple[dict[str, Any], ...] = ()
    errors: tuple[str, ...] = ()
    workers: tuple[str, ...] = ()
    unreachable: tuple[str, ...] = ()
    # Unknown (None) when the broker could not be reached: the run stopped before it.
    dlq: str | None = None
    # Dry runs only: the tasks signalled before, no longer listed, that a run would ask after.
    followed_up: tuple[dict[str, Any], ...] | None = None
    # Unknown when the run lost its lock before the housekeeping (and for the trim, Redis away).
    spool_replayed: int | None = None
    dlq_remaining: Mapping[str, int] | None = None

    status: ClassVar[str] = "completed"

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "ran_at": self.ran_at,
            "status": self.status,
            "dry_run": self.dry_run,
            "hard_limit": self.hard_limit,
            "grace": self.grace,
            "signals": {name: report.as_dict() for name, report in self.signals.items()},
            "zombies": [dict(zombie) for zombie in self.zombies],
            "skipped": [dict(zombie) for zombie in self.skipped],
            "errors": list(self.errors),
            "workers": list(self.workers),
            "unreachable": list(self.unreachable),
        }
        if self.dlq is not None:
            data["dlq"] = self.dlq
        if self.followed_up is not None:
            data["followed_up"] = [dict(task) for task in self.followed_up]
        if self.spool_replayed is not None:
            data["spool_replayed"] = self.spool_replayed
        if self.dlq_remaining is not None:
            data["dlq_remaining"] = dict(self.dlq_remaining)
        return data


@dataclass(frozen=True)
class SkippedReap:
    """A run that found another one holding the reaper lock, and did nothing else."""

    ran_at: str  # ISO 8601, UTC
    dry_run: bool
    holder: Mapping[str, Any] | None  # the lock holder's host, pid and start; None: unknown

    status: ClassVar[str] = "skipped"
    reason: ClassVar[str] = "another run holds the reaper lock"

    def as_dict(self) -> dict[str, Any]:
        return {
            "ran_at": self.ran_at,
            "status": self.status,
            "reason": self.reason,
            "holder": None if self.holder is None else dict(self.holder),
            "dry_run": self.dry_run,
        }
