"""Turn task arguments into plain JSON values, saying when something was changed on the way.

kombu's json serializer hands tasks datetime, Decimal, UUID and bytes objects, and pickle-based
apps can pass anything. The DLQ stores JSON only, so such values become readable strings and the
entry is marked lossy. Long strings are cut at ``STRING_LIMIT`` characters, visibly.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import uuid
from dataclasses import dataclass, field
from typing import Any

# A single argument string longer than this is cut; 16 KiB keeps a DLQ entry readable in a
# terminal and keeps one runaway argument from filling Redis.
STRING_LIMIT = 16 * 1024
# Nesting deeper than this is shown as a repr: it is almost always a cycle or a bug.
DEPTH_LIMIT = 32

JSON = None | bool | int | float | str | list["JSON"] | dict[str, "JSON"]


def truncation_marker(omitted: int) -> str:
    return f"…[truncated {omitted:,} characters]"


def cut(text: str, limit: int) -> str:
    """``text`` shortened to ``limit`` characters plus a marker saying how much went."""
    if len(text) <= limit:
        return text
    return text[:limit] + truncation_marker(len(text) - limit)


@dataclass
class Conversion:
    """What :func:`to_jsonable` had to change, as readable paths like ``args[0]``."""

    lossy: list[str] = field(default_factory=list)
    truncated: list[str] = field(default_factory=list)
    # A cheap over-estimate of the encoded size, so the exact size is computed only when close.
    size: int = 0


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


def to_jsonable(value: Any, path: str, conversion: Conversion, depth: int = 0) -> JSON:
    """A JSON-safe copy of ``value``; every change is recorded in ``conversion``."""
    if value is None or isinstance(value, bool):
        conversion.size += 6
        return value
    if isinstance(value, int):
        bits = value.bit_length()
        if bits > _INT_BITS_LIMIT:
            conversion.lossy.append(path)
            conversion.size += 40
            return f"<int of {bits:,} bits>"
        conversion.size += bits // 3 + 3
        return value
    if isinstance(value, float):
        conversion.size += 26
        if value != value or value in (float("inf"), float("-inf")):
            conversion.lossy.append(path)
            return repr(value)
        return value
    if isinstance(value, str):
        # Escapes can double a character's encoded size (and \uXXXX makes six of a control).
        conversion.size += 6 * min(len(value), STRING_LIMIT) + 2
        text, changed = encodable(value)
        if changed and path not in conversion.lossy[-1:]:
            conversion.lossy.append(path)
        if len(text) > STRING_LIMIT:
            conversion.truncated.append(path)
            return cut(text, STRING_LIMIT)
        return text
    if depth >= DEPTH_LIMIT:
        conversion.lossy.append(path)
        return to_jsonable(cut(_safe_repr(value), STRING_LIMIT), path, conversion, depth)
    if isinstance(value, dict):
        result: dict[str, JSON] = {}
        for key, item in value.items():
            text_key = key if isinstance(key, str) else _safe_repr(key)
            text_key, changed = encodable(text_key)
            conversion.size += 6 * len(text_key) + 4
            if changed or not isinstance(key, str):
                conversion.lossy.append(f"{path}.{text_key}")
            result[text_key] = to_jsonable(item, f"{path}.{text_key}", conversion, depth + 1)
        return result
    if isinstance(value, list | tuple):
        conversion.size += 2
        return [
            to_jsonable(item, f"{path}[{index}]", conversion, depth + 1)
            for index, item in enumerate(value)
        ]
    conversion.lossy.append(path)
    readable: Any
    if isinstance(value, dt.datetime | dt.date | dt.time):
        readable = value.isoformat()
    elif isinstance(value, decimal.Decimal | uuid.UUID):
        readable = str(value)
    elif isinstance(value, bytes | bytearray | memoryview):
        readable = _readable_bytes(value)
    elif isinstance(value, set | frozenset):
        return [to_jsonable(item, f"{path}[]", conversion, depth + 1) for item in value]
    else:
        readable = _safe_repr(value)
    return to_jsonable(readable, path, conversion, depth)
