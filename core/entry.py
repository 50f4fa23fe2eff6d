"""One dead-lettered task: what failed, with what, where, and what requeueing it needs."""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from kombu.utils import json as kombu_json

from celery_morgue.core.groups import fingerprint, is_group_id
from celery_morgue.core.jsonable import JSON, SIZE_BUDGET, Conversion, cut, encodable, to_jsonable

# The JSON of args plus kwargs above this many characters is stored as one cut string: the
# entry stays small enough to page quickly, and the marker says what happened.
ARGS_LIMIT = 64 * 1024
# Tracebacks keep their head (where it started) and their tail (where it ended).
TRACEBACK_LIMIT = 32 * 1024
_TRACEBACK_HEAD = 8 * 1024
MESSAGE_LIMIT = 4 * 1024
FORMAT_VERSION = 1
# A stored entry larger than this is listed as unreadable rather than parsed: celery-morgue's own
# entries stay well under it (64 KiB of arguments twice, 32 KiB of traceback, small fields).
ENTRY_LIMIT = 1024 * 1024
# What travels with a task besides its arguments (a chain's signatures, callbacks), in all.
OPTIONS_LIMIT = 64 * 1024

# Why the worker dropped the task. "failed": task_failure (an exception, a lost worker, a
# time limit, Reject); "terminated": a revoke with terminate=True; "unregistered": a task name
# the worker does not know; "rejected": a message the worker refused or could not decode;
# "expired": its ``expires`` passed before it ran (only with ``capture_expired=True``).
REASONS = ("failed", "terminated", "unregistered", "rejected", "expired")

# One encoder for every entry: json.dumps with options builds a new one per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))

# kombu's json module is untyped; these are its tagged (lossless for datetime, Decimal, UUID,
# bytes) encoder and decoder.
kombu_dumps: Callable[[Any], str] = kombu_json.dumps
kombu_loads: Callable[[str], Any] = kombu_json.loads


def cap_traceback(text: str) -> str:
    if len(text) <= TRACEBACK_LIMIT:
        return text
    tail = TRACEBACK_LIMIT - _TRACEBACK_HEAD
    omitted = len(text) - TRACEBACK_LIMIT
    return (
        text[:_TRACEBACK_HEAD]
        + f"\n…[traceback truncated: {omitted:,} characters omitted]…\n"
        + text[-tail:]
    )


@dataclass(slots=True)  # not frozen: frozen dataclasses set each field through object.__setattr__
class Entry:
    """A DLQ entry. ``id`` is its Redis stream id; it is empty until the entry is stored."""

    task_id: str
    task: str
    queue: str
    args: list[JSON]
    kwargs: dict[str, JSON]
    exception: str
    message: str
    traceback: str
    retries: int
    hostname: str
    failed_at: str
    exchange: str = ""
    routing_key: str = ""
    priority: int | None = None
    root_id: str | None = None
    parent_id: str | None = None
    lossy: bool = False
    lossy_fields: list[str] = field(default_factory=list)
    truncated_fields: list[str] = field(default_factory=list)
    # kombu's tagged JSON of [args, kwargs] when the readable form differs from the originals
    # but kombu's json carries them exactly (datetime, Decimal, UUID, bytes, a long string):
    # requeue sends the originals.
    exact_args: str | None = None
    # What the original message carried besides its arguments and requeue passes on:
    # link, link_error, chain (the rest of a chain), time_limit, soft_time_limit.
    options: dict[str, JSON] = field(default_factory=dict)
    reason: str = "failed"
    # One per failure, not per task: a spool replay or Celery's second signal for the same
    # failure carries the same id and stores nothing new; a later failure of the same task id
    # (fixed ids, a requeue of a deleted entry) is a new failure.
    failure_id: str = ""
    # The caller's own argsrepr/kwargsrepr, when it chose one that differs from Celery's default
    # repr: Celery's way of keeping secrets out of logs and monitors. Readers show these; the raw
    # arguments (kept for requeue) only when asked.
    argsrepr: str | None = None
    kwargsrepr: str | None = None
    # The failure group (core.groups), computed at capture; empty for entries stored before
    # groups existed, which are grouped when first read.
    group: str = ""
    id: str = ""

    def to_json(self) -> str:
        # A shallow dict: asdict() deep-copies every argument, a third of the capture cost.
        data = {name: getattr(self, name) for name in _STORED_FIELDS}
        data["v"] = FORMAT_VERSION
        return _ENCODER.encode(data)

    @classmethod
    def from_json(cls, entry_id: str, text: str | bytes) -> Entry:
        """Parse a stored entry; a ValueError with a one-line reason for anything malformed."""
        if len(text) > ENTRY_LIMIT:
            raise ValueError(f"{len(text):,} bytes, more than an entry can be ({ENTRY_LIMIT:,})")
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"not JSON ({_first_line(exc)})") from None
        if not isinstance(data, dict):
            raise ValueError(f"a JSON {type(data).__name__}, not an object")
        missing = _REQUIRED_FIELDS - data.keys()
        if missing:
            raise ValueError(f"lacks {', '.join(sorted(missing))}")
        known = {k: v for k, v in data.items() if k in _KNOWN_FIELDS}
        for name, value in known.items():
            expected = _FIELD_TYPES[name]
            if not isinstance(value, expected) or (
                isinstance(value, bool) and bool not in _as_tuple(expected)
            ):
                raise ValueError(f"{name} is a {type(value).__name__}, not {_type_names(expected)}")
        if not is_group_id(known.get("group", "")):
            known["group"] = ""  # derived data: a reader groups it again
        if known.get("reason", "failed") not in REASONS:
            raise ValueError(f"unknown reason {_short(known['reason'])}")
        _check_contents(known)
        for name, default in _READ_DEFAULTS.items():
            if name not in known:
                known[name] = default()
        entry = cls(id=entry_id, **known)
        try:
            entry.failed_at_datetime  # noqa: B018 - raises ValueError for a bad timestamp
        except ValueError:
            raise ValueError(f"failed_at {_short(entry.failed_at)} is not a timestamp") from None
        return entry

    @property
    def arguments_hidden(self) -> bool:
        """The caller replaced the arguments' repr (argsrepr/kwargsrepr): show that instead."""
        return self.argsrepr is not None or self.kwargsrepr is not None

    def as_dict(self, *, raw: bool = False) -> dict[str, Any]:
        """The stable public shape (CLI ``--json``, summaries).

        Arguments the caller hid behind argsrepr/kwargsrepr are null unless ``raw``.
        """
        data = asdict(self)
        data.pop("exact_args")
        data.pop("options")
        data.pop("failure_id")
        data["unreadable"] = False
        data["arguments_hidden"] = self.arguments_hidden
        if self.arguments_hidden and not raw:
            data["args"] = None
            data["kwargs"] = None
        return {"id": data.pop("id"), **data}

    @property
    def failed_at_datetime(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.failed_at)

    @property
    def requeue_exact(self) -> bool:
        """Whether requeueing sends the task exactly what it failed with: its arguments, and
        the options (chain, callbacks) that travel with them."""
        if any(name.startswith("options.") for name in self.truncated_fields):
            return False
        return not self.lossy or self.exact_args is not None

    def encoded(self) -> bytes:
        """The stored form; a ValueError when it would be larger than a reader accepts."""
        payload = self.to_json().encode()
        if len(payload) > ENTRY_LIMIT:
            raise ValueError(f"the entry would be {len(payload):,} bytes (at most {ENTRY_LIMIT:,})")
        return payload

    def requeue_arguments(self) -> tuple[list[Any], dict[str, Any]]:
        if self.exact_args is not None:
            args, kwargs = kombu_loads(self.exact_args)
            return list(args), dict(kwargs)
        return list(self.args), dict(self.kwargs)


_STORED_FIELDS = tuple(f.name for f in fields(Entry) if f.name != "id")
_KNOWN_FIELDS = frozenset(_STORED_FIELDS)
# What a reader cannot do without; everything else has a default (older entries lack
# reason, failure_id, argsrepr; hand-written ones may lack more).
_REQUIRED_FIELDS = frozenset({"task_id", "task", "queue", "failed_at"})
_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "task_id": str,
    "task": str,
    "queue": str,
    "args": list,
    "kwargs": dict,
    "exception": str,
    "message": str,
    "traceback": str,
    "retries": int,
    "hostname": str,
    "failed_at": str,
    "exchange": str,
    "routing_key": str,
    "priority": (int, type(None)),
    "root_id": (str, type(None)),
    "parent_id": (str, type(None)),
    "lossy": bool,
    "lossy_fields": list,
    "truncated_fields": list,
    "exact_args": (str, type(None)),
    "options": dict,
    "reason": str,
    "failure_id": str,
    "argsrepr": (str, type(None)),
    "kwargsrepr": (str, type(None)),
    "group": str,
}
assert _FIELD_TYPES.keys() == _KNOWN_FIELDS, "every stored field has a type check"
# Values for the fields without a dataclass default that an entry may lack.
_READ_DEFAULTS: dict[str, Callable[[], Any]] = {
    "args": list,
    "kwargs": dict,
    "exception": str,
    "message": str,
    "traceback": str,
    "retries": int,
    "hostname": str,
}
assert {
    f.name for f in fields(Entry) if f.default is MISSING and f.default_factory is MISSING
} == _REQUIRED_FIELDS | _READ_DEFAULTS.keys()


def _check_contents(known: dict[str, Any]) -> None:
    """What the type check of each field cannot see: list items, nested shapes."""
    for name in ("lossy_fields", "truncated_fields"):
        if not all(isinstance(item, str) for item in known.get(name, ())):
            raise ValueError(f"{name} holds something other than strings")
    exact = known.get("exact_args")
    if exact is not None:
        try:
            decoded = kombu_loads(exact)
        except Exception:
            raise ValueError("exact_args is not kombu JSON") from None
        if not (
            isinstance(decoded, list | tuple)
            and len(decoded) == 2
            and isinstance(decoded[0], list | tuple)
            and isinstance(decoded[1], dict)
        ):
            raise ValueError("exact_args is not [args, kwargs]")
    raw = known.get("options", {}).get("raw_message")
    if raw is not None and not (
        isinstance(raw, dict)
        and isinstance(raw.get("body"), str)
        and isinstance(raw.get("headers", {}), dict)
    ):
        raise ValueError("options.raw_message is not a stored message")


def _as_tuple(expected: type | tuple[type, ...]) -> tuple[type, ...]:
    return expected if isinstance(expected, tuple) else (expected,)


def _type_names(expected: type | tuple[type, ...]) -> str:
    names = {"NoneType": "null", "str": "a string", "int": "an integer", "list": "a list"}
    names |= {"dict": "an object", "bool": "true/false"}
    return " or ".join(names.get(t.__name__, t.__name__) for t in _as_tuple(expected))


def _first_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class UnreadableEntry:
    """A stream entry that is not a celery-morgue entry (malformed, foreign, huge).

    Listed among the others so it can be seen and deleted; never requeued.
    """

    id: str
    problem: str  # one line
    raw: str  # what the stream holds, for `dlq show` (shown escaped, capped)
    group: str = ""  # all unreadable entries are one group (core.groups.UNREADABLE_GROUP)

    unreadable = True

    def as_dict(self, *, raw: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "unreadable": True, "problem": self.problem}
        if raw:
            data["raw"] = self.raw
        return data


# The shown part of an unreadable entry's raw content.
RAW_SHOWN_LIMIT = 64 * 1024


# Arguments of plain scalars with at most this many characters in all are stored as they came:
# what to_jsonable would return, without walking them (it runs on every captured failure).
_PLAIN_CHARACTERS = 4096
_PLAIN_INT = 2**63
_INFINITIES = (float("inf"), float("-inf"))


def _plain_arguments(args: list[Any], kwargs: dict[str, Any]) -> bool:
    """Whether to_jsonable would change nothing: short ASCII strings, bools, None, finite
    floats and ints of a usual size (exactly those types, no subclasses), under string keys."""
    left = _PLAIN_CHARACTERS
    for value in [*args, *kwargs.values()]:
        kind = type(value)
        if kind is str:
            left -= len(value)
            if left < 0 or not value.isascii():
                return False
        elif kind is int:
            if not -_PLAIN_INT < value < _PLAIN_INT:
                return False
        elif kind is float:
            if value != value or value in _INFINITIES:
                return False
        elif value is not None and kind is not bool:
            return False
    for key in kwargs:
        if type(key) is not str or not key.isascii():
            return False
        left -= len(key)
    return left >= 0


def _arguments(
    args: Any, kwargs: Any
) -> tuple[list[JSON], dict[str, JSON], Conversion, str | None]:
    conversion = Conversion()
    original_args, original_kwargs = list(args or ()), dict(kwargs or {})
    if _plain_arguments(original_args, original_kwargs):
        return original_args, original_kwargs, conversion, None
    safe_args = to_jsonable(original_args, "args", conversion)
    safe_kwargs = to_jsonable(original_kwargs, "kwargs", conversion)
    assert isinstance(safe_args, list) and isinstance(safe_kwargs, dict)
    if conversion.size > ARGS_LIMIT // 2:  # only then is the exact encoded size worth knowing
        encoded = json.dumps([safe_args, safe_kwargs], ensure_ascii=False)
        if len(encoded) > ARGS_LIMIT:
            conversion.truncated.append("args")
            safe_args, safe_kwargs = [cut(encoded, ARGS_LIMIT)], {}
    exact = None
    if conversion.lossy or conversion.truncated:
        exact = _exact(original_args, original_kwargs, conversion.size)
    return safe_args, safe_kwargs, conversion, exact


def _exact(args: list[Any], kwargs: dict[str, Any], estimated_size: int) -> str | None:
    """kombu's json of the originals, if it gives them back unchanged and fits the cap."""
    if estimated_size > SIZE_BUDGET:
        return None  # far too big: don't spend the worker's time encoding megabytes
    try:
        exact = kombu_dumps([args, kwargs])
        if len(exact) > ARGS_LIMIT or not _same(kombu_loads(exact), [args, kwargs]):
            return None
        exact.encode()
    except (TypeError, ValueError, RecursionError, UnicodeError):
        return None  # a type kombu can't carry either: the readable form is all there is
    return exact


def _same(decoded: Any, original: Any) -> bool:
    """Equal and of the same types all the way down (a tuple that came back a list is not)."""
    if type(decoded) is not type(original):
        return False
    if isinstance(original, dict):
        return decoded.keys() == original.keys() and all(
            _same(decoded[key], value) for key, value in original.items()
        )
    if isinstance(original, list):
        return len(decoded) == len(original) and all(map(_same, decoded, original))
    return bool(decoded == original)


def _text(value: object, limit: int) -> str:
    text, _ = encodable(value if isinstance(value, str) else str(value))
    return cut(text, limit)


def _exception_message(exception: BaseException | None) -> str:
    if exception is None:
        return ""
    try:
        text = str(exception)
    except Exception:
        text = f"<str() of {type(exception).__name__} failed>"
    return _text(text, MESSAGE_LIMIT)


def _replay_options(options: dict[str, Any] | None) -> tuple[dict[str, JSON], list[str]]:
    """The JSON-able, non-empty options, and the names of those dropped rather than guessed at
    (not JSON-able, or past ``OPTIONS_LIMIT`` in all: a chain of thousands of signatures)."""
    kept: dict[str, JSON] = {}
    dropped: list[str] = []
    size = 0
    for name, value in (options or {}).items():
        if value in (None, [], {}, ()):
            continue
        conversion = Conversion()
        safe = to_jsonable(value, name, conversion)
        if conversion.lossy or conversion.truncated or size + conversion.size > OPTIONS_LIMIT:
            dropped.append(f"options.{name}")
            continue
        size += conversion.size
        kept[name] = safe
    return kept, dropped


def build_entry(
    *,
    task_id: str,
    task: str,
    queue: str,
    args: Any,
    kwargs: Any,
    exception: BaseException | None,
    traceback: str,
    retries: int,
    hostname: str,
    delivery_info: dict[str, Any] | None,
    root_id: str | None,
    parent_id: str | None,
    failed_at: dt.datetime | None = None,
    replay_options: dict[str, Any] | None = None,
    reason: str = "failed",
    failure_id: str | None = None,
    argsrepr: str | None = None,
    kwargsrepr: str | None = None,
) -> Entry:
    """Build an entry from a failure; never raises for odd arguments or huge tracebacks.

    ``argsrepr``/``kwargsrepr`` are the caller's own reprs, only when it chose them.
    """
    if reason not in REASONS:
        raise ValueError(f"reason must be one of {', '.join(REASONS)}, got {reason!r}")
    safe_args, safe_kwargs, conversion, exact = _arguments(args, kwargs)
    options, dropped_options = _replay_options(replay_options)
    delivery = delivery_info or {}
    priority = delivery.get("priority")
    when = failed_at.astimezone(dt.UTC) if failed_at else dt.datetime.now(dt.UTC)
    entry = Entry(
        task_id=str(task_id),
        task=_text(task, MESSAGE_LIMIT),
        queue=_text(queue, MESSAGE_LIMIT),
        args=safe_args,
        kwargs=safe_kwargs,
        exception=type(exception).__name__ if exception is not None else "",
        message=_exception_message(exception),
        traceback=cap_traceback(encodable(traceback or "")[0]),
        retries=int(retries or 0),
        hostname=_text(hostname or "", MESSAGE_LIMIT),
        failed_at=when.isoformat(),
        exchange=str(delivery.get("exchange") or ""),
        routing_key=str(delivery.get("routing_key") or ""),
        priority=priority if isinstance(priority, int) else None,
        root_id=root_id,
        parent_id=parent_id,
        lossy=bool(conversion.lossy or conversion.truncated or dropped_options),
        lossy_fields=conversion.lossy,
        truncated_fields=conversion.truncated + dropped_options,
        exact_args=exact,
        options=options,
        reason=reason,
        failure_id=failure_id or new_failure_id(),
        argsrepr=None if argsrepr is None else _text(argsrepr, MESSAGE_LIMIT),
        kwargsrepr=None if kwargsrepr is None else _text(kwargsrepr, MESSAGE_LIMIT),
    )
    # From the whole traceback: a cut one may have lost its innermost frame to a huge message.
    entry.group = fingerprint(
        task=entry.task,
        exception=entry.exception,
        traceback=traceback or "",
        reason=reason,
        raised=exception,
    )
    return entry


def group_of(entry: Entry) -> str:
    """The entry's failure group, from what it says now (see core.groups)."""
    return fingerprint(
        task=entry.task, exception=entry.exception, traceback=entry.traceback, reason=entry.reason
    )


def new_failure_id() -> str:
    return os.urandom(16).hex()  # a uuid4's randomness, without building a UUID per failure


def _innermost_line(exception: BaseException | None) -> str:
    """Where ``exception`` was raised, as a traceback's line: it groups an entry stored without
    its traceback with the other failures of its bug, and group_of() reads it back alike."""
    tb = exception.__traceback__ if exception is not None else None
    if tb is None:
        return ""
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    line = f'  File "{code.co_filename}", line {tb.tb_lineno}, in {code.co_name}'
    return "\nRaised at:\n" + encodable(line)[0]


def unstorable_entry(
    *,
    task_id: str,
    task: str,
    queue: str,
    exception: BaseException | None,
    problem: BaseException,
    hostname: str,
    reason: str = "failed",
    failure_id: str | None = None,
) -> Entry:
    """The last resort when a failure's details can't be stored: keep that it failed."""
    entry = Entry(
        task_id=_text(task_id, MESSAGE_LIMIT),
        task=_text(task, MESSAGE_LIMIT),
        queue=_text(queue, MESSAGE_LIMIT),
        args=[],
        kwargs={},
        exception=type(exception).__name__ if exception is not None else "",
        message=_exception_message(exception),
        traceback=f"celery-morgue could not store this failure's details: {problem!r}"[:4096]
        + _innermost_line(exception),
        retries=0,
        hostname=_text(hostname, MESSAGE_LIMIT),
        failed_at=dt.datetime.now(dt.UTC).isoformat(),
        lossy=True,
        lossy_fields=["args", "kwargs"],
        reason=reason if reason in REASONS else "failed",
        failure_id=failure_id or new_failure_id(),
    )
    entry.group = group_of(entry)
    return entry
