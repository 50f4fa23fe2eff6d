"""One dead-lettered task: what failed, with what, where, and what requeueing it needs."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from kombu.utils import json as kombu_json

from core.jsonable import JSON, Conversion, cut, to_jsonable

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
    # kombu's tagged JSON of [args, kwargs] when the readable form lost types that kombu's own
    # json serializer can carry (datetime, Decimal, UUID, bytes): requeue sends the originals.
    exact_args: str | None = None
    id: str = ""

    def to_json(self) -> str:
        # A shallow dict: asdict() deep-copies every argument, a third of the capture cost.
        data = {name: getattr(self, name) for name in _STORED_FIELDS}
        data["v"] = FORMAT_VERSION
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, entry_id: str, text: str | bytes) -> Entry:
        data = json.loads(text)
        return cls(id=entry_id, **{k: v for k, v in data.items() if k in _KNOWN_FIELDS})

    def as_dict(self) -> dict[str, Any]:
        """The stable public shape (CLI ``--json``, summaries)."""
        data = asdict(self)
        data.pop("exact_args")
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


def _arguments(
    args: Any, kwargs: Any
) -> tuple[list[JSON], dict[str, JSON], Conversion, str | None]:
    conversion = Conversion()
    safe_args = to_jsonable(list(args or ()), "args", conversion)
    safe_kwargs = to_jsonable(dict(kwargs or {}), "kwargs", conversion)
    assert isinstance(safe_args, list) and isinstance(safe_kwargs, dict)
    if conversion.size > ARGS_LIMIT // 2:  # only then is the exact encoded size worth knowing
        encoded = json.dumps([safe_args, safe_kwargs], ensure_ascii=False)
        if len(encoded) > ARGS_LIMIT:
            conversion.truncated.append("args")
            return [cut(encoded, ARGS_LIMIT)], {}, conversion, None
    exact = None
    if conversion.lossy and not conversion.truncated:
        try:
            exact = kombu_dumps([list(args or ()), dict(kwargs or {})])
        except (TypeError, ValueError):
            exact = None  # a type kombu can't carry either: the readable form is all there is
        if exact is not None and len(exact) > ARGS_LIMIT:
            exact = None
    return safe_args, safe_kwargs, conversion, exact


def _exception_message(exception: BaseException | None) -> str:
    if exception is None:
        return ""
    try:
        text = str(exception)
    except Exception:
        text = f"<str() of {type(exception).__name__} failed>"
    return cut(text, MESSAGE_LIMIT)


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
) -> Entry:
    """Build an entry from a failure; never raises for odd arguments or huge tracebacks."""
    safe_args, safe_kwargs, conversion, exact = _arguments(args, kwargs)
    delivery = delivery_info or {}
    priority = delivery.get("priority")
    when = failed_at.astimezone(dt.UTC) if failed_at else dt.datetime.now(dt.UTC)
    return Entry(
        task_id=str(task_id),
        task=str(task),
        queue=queue,
        args=safe_args,
        kwargs=safe_kwargs,
        exception=type(exception).__name__ if exception is not None else "",
        message=_exception_message(exception),
        traceback=cap_traceback(traceback or ""),
        retries=int(retries or 0),
        hostname=str(hostname or ""),
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
    )
