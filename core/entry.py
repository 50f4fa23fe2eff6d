"""One dead-lettered task: what failed, with what, where, and what requeueing it needs."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from kombu.utils import json as kombu_json

from core.jsonable import JSON, Conversion, cut, encodable, to_jsonable

# The JSON of args plus kwargs above this many characters is stored as one cut string: the
# entry stays small enough to page quickly, and the marker says what happened.
ARGS_LIMIT = 64 * 1024
# Tracebacks keep their head (where it started) and their tail (where it ended).
TRACEBACK_LIMIT = 32 * 1024
_TRACEBACK_HEAD = 8 * 1024
MESSAGE_LIMIT = 4 * 1024
FORMAT_VERSION = 1

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
    id: str = ""

    def to_json(self) -> str:
        # A shallow dict: asdict() deep-copies every argument, a third of the capture cost.
        data = {name: getattr(self, name) for name in _STORED_FIELDS}
        data["v"] = FORMAT_VERSION
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, entry_id: str, text: str | bytes) -> Entry:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("an entry is a JSON object")
        missing = _REQUIRED_FIELDS - data.keys()
        if missing:
            raise ValueError(f"entry lacks {', '.join(sorted(missing))}")
        entry = cls(id=entry_id, **{k: v for k, v in data.items() if k in _KNOWN_FIELDS})
        entry.failed_at_datetime  # noqa: B018 - raises ValueError for a bad timestamp
        return entry

    def as_dict(self) -> dict[str, Any]:
        """The stable public shape (CLI ``--json``, summaries)."""
        data = asdict(self)
        data.pop("exact_args")
        data.pop("options")
        return {"id": data.pop("id"), **data}

    @property
    def failed_at_datetime(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.failed_at)

    @property
    def requeue_exact(self) -> bool:
        """Whether requeueing sends the task exactly the arguments it failed with."""
        return not self.lossy or self.exact_args is not None

    def requeue_arguments(self) -> tuple[list[Any], dict[str, Any]]:
        if self.exact_args is not None:
            args, kwargs = kombu_loads(self.exact_args)
            return list(args), dict(kwargs)
        return list(self.args), dict(self.kwargs)


_STORED_FIELDS = tuple(f.name for f in fields(Entry) if f.name != "id")
_KNOWN_FIELDS = frozenset(_STORED_FIELDS)
_REQUIRED_FIELDS = frozenset(
    f.name for f in fields(Entry) if f.default is MISSING and f.name != "id"
)
_REQUIRED_FIELDS -= {"options"}


def _arguments(
    args: Any, kwargs: Any
) -> tuple[list[JSON], dict[str, JSON], Conversion, str | None]:
    conversion = Conversion()
    original_args, original_kwargs = list(args or ()), dict(kwargs or {})
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
    if estimated_size > 4 * ARGS_LIMIT:
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


def _replay_options(options: dict[str, Any] | None) -> dict[str, JSON]:
    """The JSON-able, non-empty options; anything else is dropped rather than guessed at."""
    kept: dict[str, JSON] = {}
    for name, value in (options or {}).items():
        if value in (None, [], {}, ()):
            continue
        conversion = Conversion()
        safe = to_jsonable(value, name, conversion)
        if not conversion.lossy and not conversion.truncated:
            kept[name] = safe
    return kept


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
) -> Entry:
    """Build an entry from a failure; never raises for odd arguments or huge tracebacks."""
    safe_args, safe_kwargs, conversion, exact = _arguments(args, kwargs)
    delivery = delivery_info or {}
    priority = delivery.get("priority")
    when = failed_at.astimezone(dt.UTC) if failed_at else dt.datetime.now(dt.UTC)
    return Entry(
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
        lossy=bool(conversion.lossy or conversion.truncated),
        lossy_fields=conversion.lossy,
        truncated_fields=conversion.truncated,
        exact_args=exact,
        options=_replay_options(replay_options),
    )


def unstorable_entry(
    *,
    task_id: str,
    task: str,
    queue: str,
    exception: BaseException | None,
    problem: BaseException,
    hostname: str,
) -> Entry:
    """The last resort when a failure's details can't be stored: keep that it failed."""
    return Entry(
        task_id=_text(task_id, MESSAGE_LIMIT),
        task=_text(task, MESSAGE_LIMIT),
        queue=_text(queue, MESSAGE_LIMIT),
        args=[],
        kwargs={},
        exception=type(exception).__name__ if exception is not None else "",
        message=_exception_message(exception),
        traceback=f"celery-morgue could not store this failure's details: {problem!r}"[:4096],
        retries=0,
        hostname=_text(hostname, MESSAGE_LIMIT),
        failed_at=dt.datetime.now(dt.UTC).isoformat(),
        lossy=True,
        lossy_fields=["args", "kwargs"],
    )
