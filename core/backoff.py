"""Exponential backoff with jitter for retrying Celery tasks.

``calculate_backoff(attempt)`` is ``min(base * 2**attempt, max_delay)``: with the defaults
(30 s, capped at 600 s) attempts 0..5 wait 30, 60, 120, 240, 480, 600 s and every later attempt
600 s. ``retry_with_backoff(self, exc)`` retries a bound task with that countdown for its
``self.request.retries``.

Which jitter to pick (Marc Brooker, "Exponential Backoff and Jitter", AWS Architecture Blog):

- ``"full"``: uniform in ``[0, delay]``. The default choice. When many tasks fail together
  (a dependency went down), plain backoff keeps them in lock-step, so each retry wave hits the
  dependency at the same instant; full jitter spreads every wave over the whole window. In
  Brooker's simulations it did the least work (fewest calls) of all strategies, finishing only
  slightly later than decorrelated jitter. It is also what Celery's ``retry_jitter`` does.
- ``"decorrelated"``: uniform in ``[base, 3 * previous]``, capped. In the same analysis a little
  faster than full jitter for a little more work, and it never retries sooner than ``base``;
  pick it when an immediate retry is pointless (a rate limit with a known minimum window). It
  needs the previous delay: pass ``previous=`` when you have it; without it the window is
  derived from the attempt number.
- ``"equal"``: ``delay / 2`` plus uniform in ``[0, delay / 2]``. Guarantees half the exponential
  delay, but in the analysis it did more work than full jitter and took much longer; kept for
  systems that already use it, not recommended.
- ``None``: no jitter. Deterministic; right for a single consumer, schedules a person reads, and
  tests. Wrong for a fleet of workers failing on the same dependency.

All delays are floats in seconds and always lie in ``[0, max_delay]``; small float bases (0.05)
work, unlike Celery's ``retry_backoff``, which truncates its factor to whole seconds.
"""

from __future__ import annotations

import math
import operator
import random
from collections.abc import Callable
from typing import Any, Literal, NoReturn, Protocol, get_args

Jitter = Literal["full", "equal", "decorrelated"]
JITTER_STRATEGIES: tuple[str, ...] = get_args(Jitter)

DEFAULT_BASE = 30
DEFAULT_MAX_DELAY = 600


class BoundTask(Protocol):
    """What ``retry_with_backoff`` uses of a bound Celery task (the ``self`` of ``bind=True``)."""

    request: Any

    def retry(
        self, *, exc: BaseException | None, countdown: float, max_retries: int | None
    ) -> Any: ...


def calculate_backoff(
    attempt: int,
    base: float = DEFAULT_BASE,
    max_delay: float = DEFAULT_MAX_DELAY,
    jitter: Jitter | None = None,
    rng: random.Random | None = None,
    *,
    previous: float | None = None,
) -> float:
    """Seconds to wait before retry number ``attempt + 1`` (``attempt`` counts from 0).

    ``jitter`` is ``None``, ``"full"``, ``"equal"`` or ``"decorrelated"`` (see the module
    docstring for which to pick); ``rng`` (a seeded ``random.Random``) makes jitter
    reproducible. ``previous`` is the delay used before this one, for decorrelated jitter only.

    Raises ValueError for a negative ``attempt``, a ``base`` that is not a positive number, a
    ``max_delay`` below ``base``, an unknown ``jitter`` or a ``previous`` without decorrelated
    jitter.
    """
    attempt = operator.index(attempt)  # rejects 1.5 and "2" with a TypeError, accepts numpy ints
    if attempt < 0:
        raise ValueError(f"attempt must be 0 or more, got {attempt}")
    if not (math.isfinite(base) and base > 0):
        raise ValueError(f"base must be a positive number of seconds, got {base!r}")
    if not (math.isfinite(max_delay) and max_delay >= base):
        raise ValueError(
            f"max_delay must be a number of seconds at least base ({base!r}), got {max_delay!r}"
        )
    if jitter is not None and jitter not in JITTER_STRATEGIES:
        known = ", ".join(repr(name) for name in JITTER_STRATEGIES)
        raise ValueError(f"jitter must be None or one of {known}, got {jitter!r}")
    if previous is not None:
        if jitter != "decorrelated":
            raise ValueError(f"previous is only used with jitter='decorrelated', not {jitter!r}")
        if not (math.isfinite(previous) and previous >= 0):
            raise ValueError(f"previous must be a delay of 0 seconds or more, got {previous!r}")

    delay = _exponential(attempt, base, max_delay)
    if jitter is None:
        return delay
    # The module-level functions, not a Random made here: CPython reseeds its global generator
    # in every forked child, so prefork pool processes do not all draw the same "random" delays.
    uniform: Callable[[float, float], float] = rng.uniform if rng is not None else random.uniform
    if jitter == "full":
        return min(delay, uniform(0.0, delay))
    if jitter == "equal":
        half = delay / 2
        return min(delay, half + uniform(0.0, half))
    # Decorrelated. Brooker's recurrence is sleep = min(cap, uniform(base, 3 * sleep)) starting
    # from sleep = base. A Celery task knows its retry count but not what it slept last time, so
    # without `previous` we take the un-jittered delay of the attempt before: the window then grows
    # with the attempt like the exponential does, and the result depends only on the arguments.
    if previous is None:
        previous = base if attempt == 0 else _exponential(attempt - 1, base, max_delay)
    # Capping the window rather than the draw (Brooker caps the draw): min(cap, uniform(...))
    # sends every task whose window passed the cap to exactly max_delay, in lock-step again,
    # which is what jitter is there to prevent.
    top = min(max_delay, 3 * max(previous, base))
    return min(top, max(base, uniform(base, top)))


def _exponential(attempt: int, base: float, max_delay: float) -> float:
    # ldexp scales base's binary exponent instead of building 2**attempt, so attempt 10**6 is as
    # cheap as attempt 6; a result beyond the float range is beyond any cap.
    try:
        return min(math.ldexp(base, attempt), float(max_delay))
    except OverflowError:
        return float(max_delay)


def retry_with_backoff(
    task: BoundTask,
    exc: BaseException | None,
    *,
    base: float = DEFAULT_BASE,
    max_delay: float = DEFAULT_MAX_DELAY,
    jitter: Jitter | None = None,
    rng: random.Random | None = None,
    previous: float | None = None,
    max_retries: int | None = None,
) -> NoReturn:
    """Retry a bound task after ``calculate_backoff(task.request.retries, ...)`` seconds.

    Use inside a task declared with ``bind=True``::

        @app.task(bind=True, max_retries=5)
        def fetch(self, url):
            try:
                ...
            except TransientError as exc:
                retry_with_backoff(self, exc, jitter="full")

    It calls ``task.retry(exc=exc, countdown=delay, max_retries=max_retries)`` and so never
    returns (``raise retry_with_backoff(...)``, Celery's idiom, works too):

    - while retries are left, it raises ``celery.exceptions.Retry`` after sending the retry;
    - once ``max_retries`` (the task's, unless overridden here for this call) is exhausted, it
      re-raises ``exc`` (chained to the exception being handled, if another), or raises the
      task's ``MaxRetriesExceededError`` when ``exc`` is None; the task then fails for good and
      ``task_failure`` puts it in the dead-letter queue with its retry count;
    - called directly rather than by a worker, it raises ``exc`` at once (Celery's behaviour).

    The keyword arguments are those of ``calculate_backoff``; invalid ones raise ValueError
    before anything is retried.

    Relation to Celery's own options: ``retry_backoff`` / ``retry_backoff_max`` /
    ``retry_jitter`` compute the same ``min(factor * 2**retries, maximum)``, but only for
    exceptions listed in ``autoretry_for``, with whole seconds only (the factor goes through
    ``int(max(1.0, retry_backoff))``, so 0.05 becomes 1) and full jitter only
    (``random.randrange(countdown + 1)``). Use Celery's options when retrying on a list of
    exception types is all you need. Use ``retry_with_backoff`` when the decision to retry is made
    in code (a 503 but not a 404), for sub-second bases, decorrelated jitter, a seeded ``rng``, or
    to keep explicit ``self.retry`` calls and the countdown in one place. Both on one task is
    harmless: autoretry lets the ``Retry`` raised here pass through untouched.
    """
    countdown = calculate_backoff(
        task.request.retries,
        base=base,
        max_delay=max_delay,
        jitter=jitter,
        rng=rng,
        previous=previous,
    )
    raise task.retry(exc=exc, countdown=countdown, max_retries=max_retries)
