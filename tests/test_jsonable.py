"""core.jsonable.to_jsonable: linear on shared references, bounded, and unchanged otherwise."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from celery_morgue.core.jsonable import (
    DEPTH_LIMIT,
    MORE_PATHS,
    PATHS_LIMIT,
    SIZE_BUDGET,
    STRING_LIMIT,
    TOO_LARGE,
    Conversion,
    _bounded_repr,
    to_jsonable,
)


class Counted:
    """A leaf that counts how often it is looked at (its repr is what conversion shows)."""

    def __init__(self) -> None:
        self.reprs = 0

    def __repr__(self) -> str:
        self.reprs += 1
        return "<counted>"


def shared(kind: str, depth: int, leaf: Any) -> Any:
    """``x = [x, x]`` ``depth`` times: 2**depth references to ``leaf`` in a few objects."""
    value = leaf
    for _ in range(depth):
        if kind == "list":
            value = [value, value]
        elif kind == "tuple":
            value = (value, value)
        else:
            value = {"a": value, "b": value}
    return value


def expanded_size(value: Any) -> int:
    """Leaves of ``value`` counted once per reference (what json.dumps would write)."""
    if isinstance(value, dict):
        return sum(expanded_size(item) for item in value.values()) or 1
    if isinstance(value, list):
        return sum(expanded_size(item) for item in value) or 1
    return 1


@pytest.mark.timeout(10)
@pytest.mark.parametrize("kind", ["list", "tuple", "dict"])
def test_each_shared_object_is_converted_once(kind: str) -> None:
    leaf = Counted()
    conversion = Conversion()
    result = to_jsonable([shared(kind, 25, leaf)], "args", conversion)
    # 2**25 references to the leaf; it was read once.
    assert leaf.reprs == 1
    # Every reference counts in the size (encoding the originals would write them all) ...
    assert conversion.size > 2**25
    # ... but what was made of them is bounded: the rest is a visible marker.
    encoded = json.dumps(result, ensure_ascii=False)
    assert len(encoded) < 2 * SIZE_BUDGET
    assert TOO_LARGE in encoded
    assert conversion.truncated
    assert len(conversion.truncated) <= PATHS_LIMIT + 1
    assert len(conversion.lossy) <= PATHS_LIMIT + 1
    assert conversion.lossy[-1] == MORE_PATHS  # more lossy references than paths kept


@pytest.mark.timeout(10)
def test_a_shared_structure_deeper_than_the_depth_limit_is_bounded() -> None:
    # The repr at the depth limit would be exponentially long too.
    conversion = Conversion()
    result = to_jsonable([shared("list", 60, None)], "args", conversion)
    encoded = json.dumps(result, ensure_ascii=False)
    assert len(encoded) < 2 * SIZE_BUDGET
    assert "…[truncated: more than" in encoded
    assert conversion.size > SIZE_BUDGET  # core.entry must not encode the originals


def test_a_small_shared_structure_converts_like_its_copy() -> None:
    when = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)

    def make() -> dict[str, Any]:
        return {"when": when, "raw": b"\xff", "n": [1, 2.5, None]}

    inner = make()
    value = [inner, [inner, (inner,)], {"again": inner, 7: inner}]
    unshared = [make(), [make(), (make(),)], {"again": make(), 7: make()}]
    first, second = Conversion(), Conversion()
    assert to_jsonable(value, "args", first) == to_jsonable(unshared, "args", second)
    # The paths of every reference are recorded, as for the copy.
    assert first.lossy == second.lossy
    assert "args[1][1][0].when" in first.lossy
    assert "args[2].7.raw" in first.lossy
    assert first.size == second.size


def test_a_long_shared_string_is_cut_at_each_reference() -> None:
    text = "é" * (STRING_LIMIT + 5)
    conversion = Conversion()
    result = to_jsonable([text, text, text], "args", conversion)
    assert isinstance(result, list)
    assert result[0] == result[2] == "é" * STRING_LIMIT + "…[truncated 5 characters]"
    assert conversion.truncated == ["args[0]", "args[1]", "args[2]"]


@pytest.mark.timeout(10)
def test_cycles_stop_at_the_depth_limit() -> None:
    loop: list[Any] = []
    loop.append(loop)
    conversion = Conversion()
    level: Any = to_jsonable(loop, "args", conversion)
    depth = 0
    while isinstance(level, list):
        level, depth = level[0], depth + 1
    assert depth == DEPTH_LIMIT
    assert level == "[[...]]"
    # Two references to itself at every level: still linear, still bounded.
    twice: list[Any] = []
    twice += [twice, twice]
    conversion = Conversion()
    assert len(json.dumps(to_jsonable(twice, "args", conversion))) < 2 * SIZE_BUDGET
    looped: dict[str, Any] = {}
    looped["self"] = looped
    assert "{...}" in json.dumps(to_jsonable(looped, "kwargs", Conversion()))


# -- unchanged for values without shared references ----------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=5), children, max_size=5)
    ),
    max_leaves=40,
)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_json_values_come_back_unchanged(value: Any) -> None:
    # json.loads of json.dumps: a copy without any shared reference.
    value = json.loads(json.dumps(value))
    conversion = Conversion()
    assert to_jsonable(value, "args", conversion) == value
    assert conversion.lossy == conversion.truncated == []
    # The estimate is an over-estimate of what core.entry writes.
    assert conversion.size >= len(json.dumps(value, ensure_ascii=False))


def test_the_readable_forms_are_as_before() -> None:
    class Custom:
        def __repr__(self) -> str:
            return "<Custom>"

    conversion = Conversion()
    value = {
        "when": dt.date(2026, 1, 2),
        "amount": decimal.Decimal("1.10"),
        "id": uuid.UUID(int=1),
        "bytes": bytearray(b"ok"),
        "set": {3},
        "tuple": (1, (2,)),
        "custom": Custom(),
        "nan": float("inf"),
        "big": 2**20_000,
        5: "int key",
        "long": "y" * (STRING_LIMIT + 1),
    }
    assert to_jsonable(value, "kwargs", conversion) == {
        "when": "2026-01-02",
        "amount": "1.10",
        "id": "00000000-0000-0000-0000-000000000001",
        "bytes": "ok",
        "set": [3],
        "tuple": [1, [2]],
        "custom": "<Custom>",
        "nan": "inf",
        "big": "<int of 20,001 bits>",
        "5": "int key",
        "long": "y" * STRING_LIMIT + "…[truncated 1 characters]",
    }
    assert conversion.lossy == [
        "kwargs.when",
        "kwargs.amount",
        "kwargs.id",
        "kwargs.bytes",
        "kwargs.set",
        "kwargs.custom",
        "kwargs.nan",
        "kwargs.big",
        "kwargs.5",
    ]
    assert conversion.truncated == ["kwargs.long"]


def test_a_long_repr_at_the_depth_limit_says_how_much_went() -> None:
    deep: Any = ["z" * (2 * STRING_LIMIT)]
    for _ in range(DEPTH_LIMIT):
        deep = [deep]
    conversion = Conversion()
    level: Any = to_jsonable(deep, "args", conversion)
    while isinstance(level, list):
        level = level[0]
    full = repr(["z" * (2 * STRING_LIMIT)])
    assert level == full[:STRING_LIMIT] + f"…[truncated {len(full) - STRING_LIMIT:,} characters]"
    assert conversion.truncated == ["args" + "[0]" * DEPTH_LIMIT]


def test_only_so_many_paths_are_kept() -> None:
    conversion = Conversion()
    to_jsonable([b"x"] * 1000 + [b"y" for _ in range(1000)], "args", conversion)
    assert len(conversion.lossy) == PATHS_LIMIT + 1
    assert conversion.lossy[:2] == ["args[0]", "args[1]"]
    assert conversion.lossy[-1] == MORE_PATHS


@pytest.mark.parametrize(
    "value",
    [
        [],
        (),
        (1,),
        {},
        set(),
        frozenset(),
        {1, 2},
        frozenset({"a"}),
        [1, "two", (3,), {"four": [5, {6}]}, frozenset({7}), None, 1.5, b"b"],
        {(1, 2): [[], ()], "k": {"n": {}}},
    ],
)
def test_the_bounded_repr_is_repr(value: Any) -> None:
    assert _bounded_repr(value, 10_000) == (repr(value), True)
    text, complete = _bounded_repr(value, 3)
    assert text == repr(value)[:3]
    assert complete == (len(repr(value)) <= 3)


def test_the_bounded_repr_of_recursive_containers_is_repr() -> None:
    inner: list[Any] = []
    outer = (inner,)
    inner.append(outer)
    mapping: dict[str, Any] = {}
    mapping["m"] = [mapping, mapping]
    for value in (outer, inner, mapping):
        assert _bounded_repr(value, 10_000) == (repr(value), True)
