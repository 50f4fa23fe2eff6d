"""calculate_backoff: exact exponential values, argument errors, and the bounds of each jitter."""

from __future__ import annotations

import random
import statistics
import subprocess
import sys

import pytest
from celery.utils.time import get_exponential_backoff_interval
from hypothesis import given
from hypothesis import strategies as st

from celery_morgue.core.backoff import JITTER_STRATEGIES, calculate_backoff

# Bases from 1 ms to ~3 h and caps from the base up to a million times it.
bases = st.floats(min_value=1e-3, max_value=1e4, allow_nan=False, allow_infinity=False)
cap_factors = st.floats(min_value=1.0, max_value=1e6, allow_nan=False, allow_infinity=False)
attempts = st.one_of(st.integers(0, 80), st.integers(0, 10**12))
seeds = st.integers(0, 2**32 - 1)


def test_defaults_double_from_30_seconds_up_to_the_600_second_cap() -> None:
    assert [calculate_backoff(n) for n in range(8)] == [30, 60, 120, 240, 480, 600, 600, 600]


def test_base_and_cap_are_honoured() -> None:
    assert [calculate_backoff(n, base=0.05, max_delay=0.2) for n in range(5)] == [
        0.05,
        0.1,
        0.2,
        0.2,
        0.2,
    ]
    assert calculate_backoff(3, base=1, max_delay=8) == 8
    assert calculate_backoff(2, base=1, max_delay=8) == 4
    assert calculate_backoff(0, base=5, max_delay=5) == 5


@pytest.mark.parametrize("attempt", [10**6, 10**100])
@pytest.mark.parametrize("jitter", [None, *JITTER_STRATEGIES])
def test_huge_attempts_reach_the_cap_without_overflow(attempt: int, jitter: str | None) -> None:
    delay = calculate_backoff(attempt, jitter=jitter, rng=random.Random(7))  # type: ignore[arg-type]
    if jitter is None:
        assert delay == 600
    assert 0 <= delay <= 600


def test_a_huge_attempt_is_answered_at_once() -> None:
    # 2**(10**9) would take seconds and gigabytes; a subprocess with a timeout keeps a regression
    # from hanging the suite.
    code = (
        "from celery_morgue.core.backoff import calculate_backoff\nprint(calculate_backoff(10**9))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "600.0"


@given(base=bases, factor=cap_factors)
def test_the_cap_is_reached_exactly(base: float, factor: float) -> None:
    max_delay = base * factor
    assert calculate_backoff(10**6, base=base, max_delay=max_delay) == max_delay


@given(retries=st.integers(0, 64), factor=st.integers(1, 10**6), extra=st.integers(0, 10**7))
def test_without_jitter_it_matches_celerys_own_formula(
    retries: int, factor: int, extra: int
) -> None:
    maximum = factor + extra
    celery = get_exponential_backoff_interval(factor, retries, maximum, full_jitter=False)
    assert calculate_backoff(retries, base=factor, max_delay=maximum) == celery


# -- bad arguments ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"attempt": -1}, "attempt"),
        ({"attempt": 0, "base": 0}, "base"),
        ({"attempt": 0, "base": -30}, "base"),
        ({"attempt": 0, "base": float("nan")}, "base"),
        ({"attempt": 0, "base": float("inf")}, "base"),
        ({"attempt": 0, "base": 30, "max_delay": 29.9}, "max_delay"),
        ({"attempt": 0, "base": 30, "max_delay": float("nan")}, "max_delay"),
        ({"attempt": 0, "jitter": "decorrelated", "previous": -1}, "previous"),
        ({"attempt": 0, "jitter": "full", "previous": 30}, "previous"),
        ({"attempt": 0, "previous": 30}, "previous"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs: dict[str, object], named: str) -> None:
    with pytest.raises(ValueError, match=named) as raised:
        calculate_backoff(**kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(raised.value)


def test_an_unknown_jitter_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="jitter") as raised:
        calculate_backoff(1, jitter="ful")  # type: ignore[arg-type]
    message = str(raised.value)
    assert "'ful'" in message
    for name in ("full", "equal", "decorrelated"):
        assert repr(name) in message


@pytest.mark.parametrize("attempt", [1.5, "2"])
def test_a_non_integer_attempt_is_a_type_error(attempt: object) -> None:
    with pytest.raises(TypeError):
        calculate_backoff(attempt)  # type: ignore[arg-type]


# -- jitter ----------------------------------------------------------------------------------


@pytest.mark.parametrize("jitter", JITTER_STRATEGIES)
def test_a_seeded_rng_reproduces_the_delays(jitter: str) -> None:
    def run(seed: int) -> list[float]:
        rng = random.Random(seed)
        return [calculate_backoff(n, jitter=jitter, rng=rng) for n in range(12)]  # type: ignore[arg-type]

    assert run(42) == run(42)
    assert run(42) != run(43)


@pytest.mark.parametrize("jitter", JITTER_STRATEGIES)
def test_jitter_without_an_rng_still_varies(jitter: str) -> None:
    delays = {calculate_backoff(4, jitter=jitter) for _ in range(50)}  # type: ignore[arg-type]
    assert len(delays) > 1


def test_each_strategy_draws_from_its_documented_window() -> None:
    # Means of 20,000 seeded draws at attempt 3 (exponential delay 240 s, cap 600 s):
    # full ~ U(0, 240), equal ~ 120 + U(0, 120), decorrelated ~ U(30, 3 * 120).
    rng = random.Random(2024)

    def mean(jitter: str) -> float:
        return statistics.fmean(
            calculate_backoff(3, jitter=jitter, rng=rng)  # type: ignore[arg-type]
            for _ in range(20_000)
        )

    assert mean("full") == pytest.approx(120, rel=0.02)
    assert mean("equal") == pytest.approx(180, rel=0.02)
    assert mean("decorrelated") == pytest.approx((30 + 360) / 2, rel=0.02)


def test_decorrelated_follows_the_previous_delay() -> None:
    rng = random.Random(5)
    draws = [calculate_backoff(0, jitter="decorrelated", rng=rng, previous=50) for _ in range(2000)]
    assert min(draws) >= 30
    assert max(draws) <= 150
    assert max(draws) > 140  # the window really reaches 3 * previous
    # A previous below base counts as base: the window is [base, 3 * base].
    low = [calculate_backoff(0, jitter="decorrelated", rng=rng, previous=1) for _ in range(2000)]
    assert min(low) >= 30
    assert max(low) <= 90


def test_decorrelated_at_the_cap_still_spreads() -> None:
    # Capping the draw instead of the window would send almost all of these to exactly 600.
    rng = random.Random(9)
    draws = [calculate_backoff(20, jitter="decorrelated", rng=rng) for _ in range(1000)]
    assert max(draws) <= 600
    assert draws.count(600) <= 1
    assert min(draws) < 100


# -- properties ------------------------------------------------------------------------------


@given(attempt=attempts, base=bases, factor=cap_factors)
def test_without_jitter_the_delay_never_decreases(attempt: int, base: float, factor: float) -> None:
    max_delay = base * factor
    now = calculate_backoff(attempt, base=base, max_delay=max_delay)
    after = calculate_backoff(attempt + 1, base=base, max_delay=max_delay)
    assert base <= now <= after <= max_delay


@given(
    attempt=attempts,
    base=bases,
    factor=cap_factors,
    jitter=st.sampled_from(JITTER_STRATEGIES),
    seed=seeds,
)
def test_every_strategy_stays_within_its_bounds(
    attempt: int, base: float, factor: float, jitter: str, seed: int
) -> None:
    max_delay = base * factor
    exponential = calculate_backoff(attempt, base=base, max_delay=max_delay)
    delay = calculate_backoff(
        attempt,
        base=base,
        max_delay=max_delay,
        jitter=jitter,  # type: ignore[arg-type]
        rng=random.Random(seed),
    )
    assert 0 <= delay <= max_delay
    if jitter == "full":
        assert delay <= exponential
    elif jitter == "equal":
        assert exponential / 2 <= delay <= exponential
    else:
        previous = base if attempt == 0 else calculate_backoff(attempt - 1, base, max_delay)
        assert base <= delay <= min(max_delay, 3 * previous)


@given(
    attempt=attempts,
    base=bases,
    factor=cap_factors,
    previous=st.floats(min_value=0, max_value=1e12, allow_nan=False),
    seed=seeds,
)
def test_decorrelated_with_previous_stays_within_its_bounds(
    attempt: int, base: float, factor: float, previous: float, seed: int
) -> None:
    max_delay = base * factor
    delay = calculate_backoff(
        attempt,
        base=base,
        max_delay=max_delay,
        jitter="decorrelated",
        rng=random.Random(seed),
        previous=previous,
    )
    assert base <= delay <= min(max_delay, 3 * max(previous, base))
