"""Turn task arguments into plain JSON values, saying when something was changed on the way.

kombu's json serializer hands tasks datetime, Decimal, UUID and bytes objects, and pickle-based
apps can pass anything. The DLQ stores JSON only, so such values become readable strings and the
entry is marked lossy. Long strings are cut at ``STRING_LIMIT`` characters, visibly.

Pickle keeps shared references: ``x = [x, x]`` twenty-five times is a few hundred bytes of
pickle and 2**25 lists once expanded. Each object is converted once per depth (a memo by
identity) and a second reference reuses that result, so the work is linear in what was sent.
Each reference still counts in ``Conversion.size`` (the size of the expanded arguments, which is
what encoding the originals would cost), and reused results may add at most ``SIZE_BUDGET`` to
the output: past that, a reference is replaced by ``TOO_LARGE`` and its path is recorded as
truncated.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

# A single argument string longer than this is cut; 16 KiB keeps a DLQ entry readable in a
# terminal and keeps one runaway argument from filling Redis.
STRING_LIMIT = 16 * 1024
# Nesting deeper than this is shown as a repr: it is almost always a cycle or a bug.
DEPTH_LIMIT = 32
# How much (estimated encoded characters) repeated references may add to the output. It is
# core.entry's 4 * ARGS_LIMIT: past it core.entry does not encode the originals either.
SIZE_BUDGET = 4 * 64 * 1024
# What a repeated reference past SIZE_BUDGET becomes.
TOO_LARGE = "…[arguments too large]"
# At most this many paths are recorded in each of Conversion.lossy and .truncated; then MORE.
PATHS_LIMIT = 100
MORE_PATHS = "…"
# A repr at the depth limit is computed only this far; a longer one is cut without knowing its
# full length (a shared structure's repr can be exponentially long).
REPR_LIMIT = 4 * STRING_LIMIT

JSON = None | bool | int | float | str | list["JSON"] | dict[str, "JSON"]


def truncation_marker(omitted: int) -> str:
    return f"…[truncated {omitted:,} characters]"


def cut(text: str, limit: int) -> str:
    """``text`` shortened to ``limit`` characters plus a marker saying how much went."""
    if len(text) <= limit:
        return text
    return text[:limit] + truncation_marker(len(text) - limit)


@dataclass(frozen=True, slots=True)
class _Converted:
    """One object's conversion, for its next reference at the same depth."""

    original: Any  # held so that its id() is not reused by another object during the call
    result: JSON
    size: int  # what it added to Conversion.size
    lossy: tuple[str, ...]  # recorded paths, relative to the object's own path
    truncated: tuple[str, ...]
    container: bool  # its expansion can be exponential: reuse counts against the budget


@dataclass(frozen=True, slots=True)
class _LongString:
    original: str  # held, as above
    text: str  # encodable and cut
    changed: bool  # encodable() changed it
    cut: bool


@dataclass
class Conversion:
    """What :func:`to_jsonable` had to change, as readable paths like ``args[0]``."""

    lossy: list[str] = field(default_factory=list)
    truncated: list[str] = field(default_factory=list)
    # A cheap over-estimate of the encoded size of the arguments as sent (every reference to a
    # shared object counts), so the exact size is computed only when close.
    size: int = 0
    budget: int = SIZE_BUDGET
    _reused: int = field(default=0, init=False, repr=False, compare=False)
    _memo: dict[tuple[int, int], _Converted] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _strings: dict[int, _LongString] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )


def _record(paths: list[str], path: str) -> None:
    if len(paths) < PATHS_LIMIT:
        paths.append(path)
    elif len(paths) == PATHS_LIMIT:
        paths.append(MORE_PATHS)


def _readable_bytes(value: bytes | bytearray | memoryview) -> str:
    raw = bytes(value)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(raw).decode("ascii")


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception as exc:  # a broken __repr__ must not cost us the entry
        return f"<{type(value).__qualname__} object; repr() raised {type(exc).__name__}>"


class _Piece(str):
    """Literal text of a container's repr (a plain ``str`` there is a value to repr)."""


_COMMA = _Piece(", ")
_COLON = _Piece(": ")


def _items(values: Any) -> Iterator[Any]:
    for index, item in enumerate(values):
        if index:
            yield _COMMA
        yield item


def _pairs(mapping: dict[Any, Any]) -> Iterator[Any]:
    for index, (key, item) in enumerate(mapping.items()):
        if index:
            yield _COMMA
        yield key
        yield _COLON
        yield item


def _opening(value: Any) -> tuple[str, Iterator[Any], str, str] | None:
    """How repr() writes a built-in container: opening, items, closing, and a recursion."""
    kind = type(value)
    if kind is list:
        return "[", _items(value), "]", "[...]"
    if kind is tuple:
        return "(", _items(value), ",)" if len(value) == 1 else ")", "(...)"
    if kind is dict:
        return "{", _pairs(value), "}", "{...}"
    if kind is set and value:
        return "{", _items(value), "}", "{...}"
    if kind is frozenset and value:
        return "frozenset({", _items(value), "})", "frozenset({...})"
    return None


def _bounded_repr(value: Any, limit: int) -> tuple[str, bool]:
    """``repr(value)`` of built-in containers written only up to ``limit`` characters.

    Returns the text and whether it is complete. Iterative, and each shared object is written
    where it occurs, as repr() does, but the writing stops at ``limit``.
    """
    pieces: list[str] = []
    length = 0
    active: set[int] = set()  # containers being written: a second visit is a recursion
    stack: list[tuple[Iterator[Any], str, int]] = []
    token: Any = value
    while True:
        if isinstance(token, _Piece):
            text = str(token)
        else:
            opening = _opening(token)
            if opening is None:
                text = _safe_repr(token)
            elif id(token) in active:
                text = opening[3]
            else:
                text, items, closing, _ = opening
                active.add(id(token))
                stack.append((items, closing, id(token)))
        pieces.append(text)
        length += len(text)
        while True:
            if length > limit:
                return "".join(pieces)[:limit], False
            if not stack:
                return "".join(pieces), True
            items, closing, ident = stack[-1]
            token = next(items, _END)
            if token is not _END:
                break
            stack.pop()
            active.discard(ident)
            pieces.append(closing)
            length += len(closing)


_END = object()


def encodable(text: str) -> tuple[str, bool]:
    """``text`` as UTF-8 can carry it, and whether it changed.

    A lone surrogate (``os.fsdecode`` of a non-UTF-8 file name, say) cannot be encoded: kept as
    is it would make the entry unwritable to Redis and to the spool alike.
    """
    if text.isascii():
        return text, False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8"), True
    return text, False


# Python refuses str() of an int beyond 4,300 digits; such a number is shown by its size.
_INT_BITS_LIMIT = 10_000


def _string(value: str, path: str, conversion: Conversion) -> str:
    # Escapes can double a character's encoded size (and \uXXXX makes six of a control).
    conversion.size += 6 * min(len(value), STRING_LIMIT) + 2
    if len(value) > STRING_LIMIT:
        # Referenced again (a shared string, or a big bytes value read again): encode it once.
        known = conversion._strings.get(id(value))
        if known is None or known.original is not value:
            text, changed = encodable(value)
            known = _LongString(value, cut(text, STRING_LIMIT), changed, len(text) > STRING_LIMIT)
            conversion._strings[id(value)] = known
        text, changed, was_cut = known.text, known.changed, known.cut
    else:
        text, changed = encodable(value)
        was_cut = False
    if changed and path not in conversion.lossy[-1:]:
        _record(conversion.lossy, path)
    if was_cut:
        _record(conversion.truncated, path)
    return text


def to_jsonable(value: Any, path: str, conversion: Conversion, depth: int = 0) -> JSON:
    """A JSON-safe copy of ``value``; every change is recorded in ``conversion``.

    The copy may share parts where ``value`` shared them: json.dumps writes it out the same.
    """
    if value is None or isinstance(value, bool):
        conversion.size += 6
        return value
    if isinstance(value, int):
        bits = value.bit_length()
        if bits > _INT_BITS_LIMIT:
            _record(conversion.lossy, path)
            conversion.size += 40
            return f"<int of {bits:,} bits>"
        conversion.size += bits // 3 + 3
        return value
    if isinstance(value, float):
        conversion.size += 26
        if value != value or value in (float("inf"), float("-inf")):
            _record(conversion.lossy, path)
            return repr(value)
        return value
    if isinstance(value, str):
        return _string(value, path, conversion)
    key = (id(value), depth)
    known = conversion._memo.get(key)
    if known is not None and known.original is value:
        return _reuse(known, path, conversion)
    lossy_from, truncated_from = len(conversion.lossy), len(conversion.truncated)
    size_from = conversion.size
    result = _convert(value, path, conversion, depth)
    conversion._memo[key] = _Converted(
        original=value,
        result=result,
        size=conversion.size - size_from,
        lossy=_relative(conversion.lossy[lossy_from:], path),
        truncated=_relative(conversion.truncated[truncated_from:], path),
        container=depth < DEPTH_LIMIT and isinstance(value, dict | list | tuple | set | frozenset),
    )
    return result


def _relative(paths: list[str], path: str) -> tuple[str, ...]:
    return tuple(p[len(path) :] for p in paths if p != MORE_PATHS and p.startswith(path))


def _reuse(known: _Converted, path: str, conversion: Conversion) -> JSON:
    """A further reference to an object already converted at this depth."""
    conversion.size += known.size
    if known.container:
        if conversion._reused + known.size > conversion.budget:
            conversion.size += 6 * len(TOO_LARGE) + 2
            _record(conversion.truncated, path)
            return TOO_LARGE
        conversion._reused += known.size
    for paths, suffixes in (
        (conversion.lossy, known.lossy),
        (conversion.truncated, known.truncated),
    ):
        for suffix in suffixes:
            if len(paths) > PATHS_LIMIT:
                break
            _record(paths, path + suffix)
    return known.result


def _convert(value: Any, path: str, conversion: Conversion, depth: int) -> JSON:
    if depth >= DEPTH_LIMIT:
        _record(conversion.lossy, path)
        text, complete = _bounded_repr(value, REPR_LIMIT)
        if complete:
            return _string(_safe_repr(value), path, conversion)
        # Too long to write out, maybe exponentially: nor can the originals be encoded.
        shown, changed = encodable(text[:STRING_LIMIT])
        conversion.size += conversion.budget + 6 * STRING_LIMIT + 2
        if changed and path not in conversion.lossy[-1:]:
            _record(conversion.lossy, path)
        _record(conversion.truncated, path)
        return shown + f"…[truncated: more than {REPR_LIMIT - STRING_LIMIT:,} characters]"
    if isinstance(value, dict):
        conversion.size += 2
        result: dict[str, JSON] = {}
        for key, item in value.items():
            text_key = key if isinstance(key, str) else _safe_repr(key)
            text_key, changed = encodable(text_key)
            # The key, its quotes, ": " and the ", " before the next one.
            conversion.size += 6 * len(text_key) + 6
            if changed or not isinstance(key, str):
                _record(conversion.lossy, f"{path}.{text_key}")
            result[text_key] = to_jsonable(item, f"{path}.{text_key}", conversion, depth + 1)
        return result
    if isinstance(value, list | tuple):
        conversion.size += 2 + 2 * len(value)  # the brackets and the ", " between items
        return [
            to_jsonable(item, f"{path}[{index}]", conversion, depth + 1)
            for index, item in enumerate(value)
        ]
    _record(conversion.lossy, path)
    readable: Any
    if isinstance(value, dt.datetime | dt.date | dt.time):
        readable = value.isoformat()
    elif isinstance(value, decimal.Decimal | uuid.UUID):
        readable = str(value)
    elif isinstance(value, bytes | bytearray | memoryview):
        readable = _readable_bytes(value)
    elif isinstance(value, set | frozenset):
        conversion.size += 2 + 2 * len(value)
        return [to_jsonable(item, f"{path}[]", conversion, depth + 1) for item in value]
    else:
        readable = _safe_repr(value)
    return _string(readable, path, conversion)
