"""Redis URLs: which one the DLQ uses, how to connect, and how to show one safely."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})
# kombu spells a Unix socket broker this way; redis-py wants unix://.
_KOMBU_SOCKET_SCHEME = "redis+socket"


class RedisURLError(ValueError):
    """A URL that does not point at a Redis server this package can use."""


def redact_url(url: str) -> str:
    """``url`` with any password (in the user info or a ``password=`` query parameter) shown as
    ``***``, so it can be printed or logged."""
    try:
        parts = urlsplit(url)
        has_password = parts.password is not None
    except ValueError:
        return "<unparseable url>"
    netloc = parts.netloc
    if has_password:
        userinfo, hostport = netloc.rsplit("@", 1)
        netloc = f"{userinfo.split(':', 1)[0]}:***@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(name.lower() == "password" for name, _ in pairs):
            query = urlencode(
                [(name, "***" if name.lower() == "password" else value) for name, value in pairs],
                safe="*",
            )
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def normalise_redis_url(url: str) -> str:
    """Accept kombu's ``redis+socket://`` spelling; refuse anything that is not Redis."""
    scheme = urlsplit(url).scheme
    if scheme == _KOMBU_SOCKET_SCHEME:
        return "unix" + url[len(_KOMBU_SOCKET_SCHEME) :]
    if scheme not in REDIS_SCHEMES:
        raise RedisURLError(
            f"{redact_url(url)!r} is not a Redis URL (expected redis://, rediss:// or unix://)"
        )
    return url


def _is_redis(url: Any) -> bool:
    if not isinstance(url, str) or not url:
        return False
    scheme = urlsplit(url).scheme
    return scheme in REDIS_SCHEMES or scheme == _KOMBU_SOCKET_SCHEME


def resolve_redis_url(app: Any, redis_url: str | None = None) -> str:
    """The Redis that holds the DLQ: explicit, else the broker, else the result backend."""
    if redis_url is not None:
        return normalise_redis_url(redis_url)
    broker = app.conf.broker_url
    if isinstance(broker, list | tuple):
        broker = broker[0] if broker else None
    if _is_redis(broker):
        return normalise_redis_url(broker)
    backend = app.conf.result_backend
    if _is_redis(backend):
        return normalise_redis_url(backend)
    raise RedisURLError(
        "celery-morgue needs a Redis: neither the broker nor the result backend of "
        f"{app.main or 'this app'!r} is Redis; pass redis_url='redis://...' to install()"
    )


def connect(url: str, timeout: float, *, password: str | None = None) -> redis.Redis:
    """A synchronous client with short timeouts and no hidden retries.

    Retries would multiply the time a failing call can stall the worker's event loop.
    """
    kwargs: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 30,
    }
    if password is not None:
        kwargs["password"] = password
    return redis.Redis.from_url(normalise_redis_url(url), **kwargs)
