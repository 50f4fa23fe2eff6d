"""The filter every listing and bulk action takes: what the user types, and what it selects."""

from __future__ import annotations

import datetime as dt

import pytest

from celery_morgue.core.filters import EntryFilter, FilterError, parse_when, to_ms
from tests.helpers import make_entry

NOW = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2h", NOW - dt.timedelta(hours=2)),
        ("30m", NOW - dt.timedelta(minutes=30)),
        ("45s", NOW - dt.timedelta(seconds=45)),
        ("1d", NOW - dt.timedelta(days=1)),
        ("2026-12-01T09:30", dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.UTC)),
        ("2026-12-01T09:30+01:00", dt.datetime(2026, 12, 1, 8, 30, tzinfo=dt.UTC)),
    ],
)
def test_times_are_ages_or_iso_8601(text: str, expected: dt.datetime) -> None:
    assert parse_when(text, NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "2x", "", "12:00:99"])
def test_a_time_that_means_nothing_is_a_clear_error(text: str) -> None:
    with pytest.raises(FilterError, match="not a time"):
        parse_when(text, NOW)


def test_a_group_must_be_a_group_id() -> None:
    with pytest.raises(FilterError, match="not a group id"):
        EntryFilter(group="3f9a")


def test_fields_combine_with_and() -> None:
    entry = make_entry(task="tasks.parse", message="User 17 Not Found")
    entry.id = f"{int(NOW.timestamp() * 1000)}-0"
    assert EntryFilter().matches(entry)
    assert EntryFilter(task="tasks.parse", grep="user 17").matches(entry)
    assert not EntryFilter(task="tasks.parse", grep="user 42").matches(entry)
    assert EntryFilter(exception="ValueError", since=NOW - dt.timedelta(seconds=1)).matches(entry)
    assert not EntryFilter(since=NOW + dt.timedelta(seconds=1)).matches(entry)
    assert not EntryFilter(until=NOW - dt.timedelta(seconds=1)).matches(entry)
    assert EntryFilter(until=NOW).matches(entry)


def test_the_filter_is_described_in_words() -> None:
    flt = EntryFilter(group="3f9a00000000", grep="not found")
    assert flt.describe() == "group 3f9a00000000, message containing 'not found'"
    assert EntryFilter().describe() == "all entries"
    assert flt.as_dict() == {"group": "3f9a00000000", "grep": "not found"}


def test_time_bounds_are_exact_to_the_millisecond() -> None:
    # since starts at the first id of its millisecond, until ends at the last id of its own.
    for millis in range(1_796_186_329_000, 1_796_186_329_000 + 2000, 7):
        when = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=millis)
        assert to_ms(when) == millis
        assert EntryFilter(since=when, until=when).id_range() == (
            f"{millis}-0",
            f"{millis}-18446744073709551615",
        )
