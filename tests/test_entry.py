"""Building entries from whatever a task failed with: never raises, caps visibly, JSON only."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid

import pytest

from celery_morgue.core.entry import ARGS_LIMIT, MESSAGE_LIMIT, TRACEBACK_LIMIT, Entry, build_entry
from celery_morgue.core.jsonable import STRING_LIMIT


def build(**overrides: object) -> Entry:
    fields: dict[str, object] = {
        "task_id": "t1",
        "task": "proj.example",
        "queue": "celery",
        "args": [],
        "kwargs": {},
        "exception": ValueError("boom"),
        "traceback": "",
        "retries": 0,
        "hostname": "w@h",
        "delivery_info": None,
        "root_id": None,
        "parent_id": None,
    }
    fields.update(overrides)
    return build_entry(**fields)  # type: ignore[arg-type]


def round_trip(entry: Entry) -> Entry:
    return Entry.from_json("1-0", entry.to_json())


def test_plain_arguments_are_exact() -> None:
    entry = round_trip(build(args=[1, 2.5, "x", None, [True]], kwargs={"k": {"n": 1}}))
    assert entry.args == [1, 2.5, "x", None, [True]]
    assert not entry.lossy
    assert entry.requeue_exact
    assert entry.requeue_arguments() == ([1, 2.5, "x", None, [True]], {"k": {"n": 1}})


def test_values_json_cannot_hold_are_readable_and_marked_lossy() -> None:
    when = dt.datetime(2026, 11, 24, 1, 2, 3, tzinfo=dt.UTC)
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    entry = round_trip(
        build(args=[when, decimal.Decimal("1.10"), ident, b"bytes", b"\xff\x00"], kwargs={})
    )
    assert entry.args == [
        "2026-11-24T01:02:03+00:00",
        "1.10",
        "12345678-1234-5678-1234-567812345678",
        "bytes",
        "base64:/wA=",
    ]
    assert entry.lossy
    assert entry.lossy_fields == ["args[0]", "args[1]", "args[2]", "args[3]", "args[4]"]
    # kombu's json can carry these types, so requeue still sends the originals.
    args, _ = entry.requeue_arguments()
    assert args == [when, decimal.Decimal("1.10"), ident, b"bytes", b"\xff\x00"]


def test_custom_objects_and_broken_reprs_do_not_raise() -> None:
    class Custom:
        def __repr__(self) -> str:
            return "<Custom 1>"

    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError("no repr for you")

    entry = round_trip(build(args=[Custom()], kwargs={"b": Broken(), 3: {1, 2}}))
    assert entry.args == ["<Custom 1>"]
    assert "repr() raised RuntimeError" in str(entry.kwargs["b"])
    assert entry.kwargs["3"] == [1, 2]
    assert entry.lossy and not entry.requeue_exact


def test_a_2_mb_string_is_cut_visibly() -> None:
    huge = "x" * (2 * 1024 * 1024)
    entry = round_trip(build(args=[huge, "small"]))
    first = entry.args[0]
    assert isinstance(first, str)
    assert first.startswith("x" * STRING_LIMIT)
    assert first.endswith(f"…[truncated {len(huge) - STRING_LIMIT:,} characters]")
    assert entry.args[1] == "small"
    assert entry.truncated_fields == ["args[0]"]
    assert entry.lossy and not entry.requeue_exact


def test_many_small_arguments_are_capped_as_a_whole() -> None:
    entry = round_trip(build(args=[list(range(100_000))]))
    assert entry.truncated_fields == ["args"]
    assert len(json.dumps(entry.args)) < ARGS_LIMIT + 200


def test_huge_traceback_keeps_head_and_tail() -> None:
    traceback = "Traceback (most recent call last):\n" + "  frame\n" * 200_000 + "ValueError: end"
    entry = build(traceback=traceback)
    assert len(entry.traceback) < TRACEBACK_LIMIT + 200
    assert entry.traceback.startswith("Traceback (most recent call last):")
    assert entry.traceback.endswith("ValueError: end")
    assert "traceback truncated" in entry.traceback


def test_huge_and_unprintable_exception_messages() -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError

    assert len(build(exception=ValueError("m" * 100_000)).message) < MESSAGE_LIMIT + 100
    assert build(exception=Unprintable()).message == "<str() of Unprintable failed>"


def test_markup_and_non_ascii_are_stored_literally() -> None:
    entry = round_trip(build(exception=ValueError("[red]boom[/red] ünïcode ✓")))
    assert entry.message == "[red]boom[/red] ünïcode ✓"


def test_nan_and_deep_nesting() -> None:
    deep: list[object] = []
    cursor = deep
    for _ in range(100):
        nxt: list[object] = []
        cursor.append(nxt)
        cursor = nxt
    entry = round_trip(build(args=[float("nan"), deep]))
    assert entry.args[0] == "nan"
    assert entry.lossy
    # Kept as JSON down to the depth limit, then shown as a repr string.
    level: object = entry.args[1]
    depth = 0
    while isinstance(level, list) and level:
        level, depth = level[0], depth + 1
    assert isinstance(level, str) and level.startswith("[[")
    assert 30 <= depth <= 33


def test_entries_from_a_newer_version_still_load() -> None:
    data = json.loads(build().to_json())
    data["field_from_the_future"] = 1
    assert Entry.from_json("1-0", json.dumps(data)).task_id == "t1"


def test_text_that_utf8_cannot_carry_is_escaped_not_lost() -> None:
    bad = "report-\udcff.csv"
    entry = round_trip(
        build(args=[bad], kwargs={bad: 1}, exception=ValueError(bad), traceback=bad, task=bad)
    )
    assert entry.args == ["report-\\udcff.csv"]
    assert entry.kwargs == {"report-\\udcff.csv": 1}
    assert entry.message == entry.traceback == entry.task == "report-\\udcff.csv"
    assert entry.lossy
    entry.to_json().encode()


def test_integers_python_cannot_print_are_described() -> None:
    entry = round_trip(build(args=[10**5000, 7]))
    assert entry.args == ["<int of 16,610 bits>", 7]
    assert entry.lossy_fields == ["args[0]"]


def test_nesting_deeper_than_recursion_allows_is_stored() -> None:
    deep: list[object] = []
    for _ in range(5_000):
        deep = [deep]
    entry = round_trip(build(args=[deep]))
    assert entry.lossy
    assert entry.exact_args is None


def test_many_floats_are_capped_too() -> None:
    entry = round_trip(build(args=[[1 / 3] * 4_000]))
    assert entry.truncated_fields == ["args"]
    assert len(json.dumps(entry.args)) < ARGS_LIMIT + 200


def test_exact_arguments_only_when_they_come_back_unchanged() -> None:
    when = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    # A tuple inside comes back from kombu's json as a list: not exact, so not promised.
    assert build(args=[when, (1, 2)]).exact_args is None
    assert build(args=[when, [1, 2]]).exact_args is not None
    # A long string is cut for display but kept exactly for requeue while it fits the cap.
    long = "z" * (STRING_LIMIT + 10)
    entry = round_trip(build(args=[long]))
    assert entry.truncated_fields == ["args[0]"]
    assert entry.requeue_exact
    assert entry.requeue_arguments() == ([long], {})


def test_replay_options_keep_only_what_json_carries() -> None:
    entry = round_trip(
        build(replay_options={"link": [{"task": "t", "args": []}], "chain": None, "time_limit": 5})
    )
    assert entry.options == {"link": [{"task": "t", "args": []}], "time_limit": 5}
    assert "options" not in entry.as_dict()


# -- shared references (pickle keeps them): linear, bounded ---------------------------------


def _shared(kind: str, depth: int = 25) -> object:
    """``x = [x, x]`` ``depth`` times: a few hundred bytes of pickle, 2**depth lists expanded."""
    value: object = [] if kind == "list" else {} if kind == "dict" else ()
    for _ in range(depth):
        if kind == "list":
            value = [value, value]
        elif kind == "dict":
            value = {"left": value, "right": value}
        else:
            value = (value, value)
    return value


@pytest.mark.timeout(10)
@pytest.mark.parametrize("kind", ["list", "dict", "tuple"])
def test_shared_references_are_converted_in_bounded_time_and_size(kind: str) -> None:
    entry = build(args=[_shared(kind)], kwargs={"again": _shared(kind)})
    assert entry.lossy
    assert "args" in entry.truncated_fields
    assert len(entry.truncated_fields) <= 2 * 101 + 1
    assert entry.exact_args is None  # the originals were never encoded
    text = entry.to_json()
    assert len(text) < 128 * 1024
    again = round_trip(entry)
    assert again.truncated_fields == entry.truncated_fields
    [cut] = again.args  # the arguments as one cut string
    assert isinstance(cut, str) and len(cut) < ARGS_LIMIT + 100


def test_small_shared_references_are_kept_exactly() -> None:
    shared = [1, {"k": "v"}]
    entry = round_trip(build(args=[shared, shared, (shared,)], kwargs={"s": shared}))
    assert entry.args == [[1, {"k": "v"}], [1, {"k": "v"}], [[1, {"k": "v"}]]]
    assert entry.kwargs == {"s": [1, {"k": "v"}]}
    assert not entry.truncated_fields


def test_plain_values_convert_as_before() -> None:
    when = dt.datetime(2026, 11, 24, 1, 2, 3, tzinfo=dt.UTC)
    args = [
        {"nested": [1, [2, [3, {"four": None}]]], "text": "ünï", "flag": False},
        [when, b"\xff", (1, 2)],
        "x" * (STRING_LIMIT + 3),
    ]
    entry = round_trip(build(args=args, kwargs={1: decimal.Decimal("2.5"), "f": 0.5}))
    assert entry.args == [
        {"nested": [1, [2, [3, {"four": None}]]], "text": "ünï", "flag": False},
        ["2026-11-24T01:02:03+00:00", "base64:/w==", [1, 2]],
        "x" * STRING_LIMIT + "…[truncated 3 characters]",
    ]
    assert entry.kwargs == {"1": "2.5", "f": 0.5}
    assert entry.lossy_fields == ["args[1][0]", "args[1][1]", "kwargs.1", "kwargs.1"]
    assert entry.truncated_fields == ["args[2]"]


@pytest.mark.timeout(10)
def test_a_list_containing_itself_is_stored() -> None:
    loop: list[object] = []
    loop.append(loop)
    loop.append(loop)
    entry = round_trip(build(args=[loop]))
    assert entry.lossy
    assert entry.exact_args is None
    assert len(entry.to_json()) < 128 * 1024


def test_a_huge_chain_is_dropped_visibly_and_the_entry_stays_readable() -> None:
    """The first step of a chain of thousands of signatures fails: the entry must still be
    one a reader accepts, and requeue must not silently send it without the rest."""
    from celery_morgue.core.entry import ENTRY_LIMIT, Entry, build_entry

    signature = {"task": "proj.step", "args": ["x" * 300], "kwargs": {}, "options": {}}
    entry = build_entry(
        task_id="t",
        task="proj.step",
        queue="celery",
        args=[1],
        kwargs={},
        exception=ValueError("boom"),
        traceback="",
        retries=0,
        hostname="w@h",
        delivery_info={},
        root_id=None,
        parent_id=None,
        replay_options={"chain": [signature] * 4000, "time_limit": 60},
    )
    assert "options.chain" in entry.truncated_fields
    assert entry.options == {"time_limit": 60}
    assert entry.lossy and not entry.requeue_exact
    payload = entry.encoded()
    assert len(payload) < ENTRY_LIMIT
    assert Entry.from_json("1-0", payload).truncated_fields == ["options.chain"]
