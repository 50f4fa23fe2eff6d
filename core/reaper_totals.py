"""What the reaper has done, ever: tasks it signalled, by signal, and when it last ran.

One hash under the DLQ namespace (``dlq@reaper:totals``) that nothing expires or lowers, so a
Prometheus counter read from it survives exporter and worker restarts. Fields:
``revoked:SIGTERM`` (tasks a signal terminated, dry runs not counted) and ``last_run_at``
(epoch seconds of the last run that finished, dry runs too).
"""

from __future__ import annotations

import datetime as dt
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
    ran_at = dt.datetime.fromisoformat(report.ran_at).timestamp()
    pipe.hset(key, _LAST_RUN, repr(ran_at))


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
