"""What the reaper has done, ever: tasks it signalled, by signal, and when it last ran.

One hash under the DLQ namespace (``dlq@reaper:totals``) that nothing expires or lowers, so a
Prometheus counter read from it survives exporter and worker restarts. Fields:
``revoked:SIGTERM`` (revokes with that signal that ended a task, dry runs not counted; a task
that ignored SIGTERM and was then killed counts once under each) and ``last_run_at`` (epoch
seconds when the last run that reached the workers finished, dry runs too: a run that could
not reach the broker did nothing, and must not look like one that ran).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from celery_morgue.core.dlq import namespace_for
from celery_morgue.core.reap_report import ReapReport

_REVOKED = "revoked:"
_LAST_RUN = "last_run_at"


def totals_key(prefix: str) -> str:
    return f"{namespace_for(prefix)}reaper:totals"


def count_run(pipe: Any, prefix: str, report: ReapReport) -> None:
    """Queue on ``pipe`` what ``report``'s run adds to the totals."""
    key = totals_key(prefix)
    if not report.dry_run:
        for signal, result in report.signals.items():
            pipe.hincrby(key, f"{_REVOKED}{signal}", len(result.terminated))
    if report.dlq is not None:  # None: the broker could not be reached
        pipe.hset(key, _LAST_RUN, repr(time.time()))


@dataclass(frozen=True)
class ReaperTotals:
    revoked: dict[str, int]  # signal name -> tasks it terminated, ever
    last_run_at: float | None  # epoch seconds; None: no run recorded


def reaper_totals(client: Any, prefix: str) -> ReaperTotals:
    fields = {
        _text(name): _text(value) for name, value in client.hgetall(totals_key(prefix)).items()
    }
    revoked = {
        name[len(_REVOKED) :]: int(value)
        for name, value in fields.items()
        if name.startswith(_REVOKED)
    }
    last = fields.get(_LAST_RUN)
    return ReaperTotals(revoked=revoked, last_run_at=float(last) if last else None)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
