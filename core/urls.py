"""Redis URLs: which one the DLQ uses, how to connect, and how to show one safely."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from celery_morgue.core.redis_cluster import DLQClient, connect_cluster
from celery_morgue.core.sentinel import (
    SentinelURLError,
    is_sentinel_url,
    parse_sentinel_url,
    sentinel_client,
    with_sentinel_options,
)

REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})
# kombu spells a Unix socket broker this way; redis-py wants unix://.
_KOMBU_SOCKET_SCHEME = "redis+socket"


class RedisURLError(ValueError):
    """A URL that does not point at a Redis server this package can use."""


UNPARSEABLE = "<unparseable url>"
# Query parameters whose value is shown as ***: redis-py reads ?password=, and the rest are
# what other clients call a secret.
_SECRET_PARAMETERS = ("password", "passwd", "secret", "token")


def split_urls(value: Any) -> list[str]:
    """Every URL in a broker setting: kombu's ``url;url`` failover spelling, or a list of them.

    kombu splits on every ``;``, so a ``;`` inside a password must be written ``%3B``.
    """
    if isinstance(value, str):
        return [part for part in value.split(";") if part]
    if isinstance(value, list | tuple):
        return [part for item in value for part in split_urls(item)]
    return []


def is_url_list(url: str) -> bool:
    """Whether ``url`` is kombu's ``url;url`` list rather than one URL."""
    return any("://" in part for part in url.split(";")[1:])


def _secret_name(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_PARAMETERS)


def _redact_one(url: str) -> str:
    text = url.strip()
    if "://" not in text:
        # Not a URL, or a piece of one cut at a ';': it may still hold user info.
        if "@" in text or _secret_name(text):
            return UNPARSEABLE
        return url
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - a bad port may be half a password (`redis://:pa;ss@h`)
        has_password = parts.password is not None
    except ValueError:
        return UNPARSEABLE
    if not parts.scheme or not text[len(parts.scheme) :].startswith("://"):
        return UNPARSEABLE  # `1redis://:pw@h`: urlsplit sees a path, not user info
    netloc = parts.netloc
    if has_password:
        userinfo, hostport = netloc.rsplit("@", 1)
        netloc = f"{userinfo.split(':', 1)[0]}:***@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_secret_name(name) for name, _ in pairs):
            query = urlencode(
                [(name, "***" if _secret_name(name) else value) for name, value in pairs],
                safe="*",
            )
    if netloc == parts.netloc and query == parts.query:
        return url
    # Not urlunsplit: it drops the // of a URL without a host (unix:///run/redis.sock).
    shown = f"{text[: len(parts.scheme)]}://{netloc}{parts.path}"
    if query:
        shown += f"?{query}"
    if parts.fragment:
        shown += f"#{parts.fragment}"
    return shown


def redact_url(url: str) -> str:
    """``url`` with every password shown as ``***``, so it can be printed or logged.

    Passwords in the user info (any scheme) and in ``password=`` query parameters, in each URL
    of a ``;``-separated failover list (``redis://:pw@a;redis://:pw@b``,
    ``sentinel://:pw@h1:26379;sentinel://:pw@h2:26379``). A URL that cannot be parsed reliably
    is shown as ``<unparseable url>``.
    """
    return ";".join(_redact_one(part) for part in url.split(";"))


def redact_urls(value: Any) -> str:
    """A broker setting (a URL, a ``;`` list, or a list or tuple of URLs) redacted, as one line."""
    if value is None:
        return ""
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, list | tuple):
        return ";".join(
            redact_url(item) if isinstance(item, str) else UNPARSEABLE for item in value
        )
    return UNPARSEABLE


def _by_hand(text: str) -> tuple[str, str]:
    """The password and the query of ``text``, read without urlsplit's rules."""
    rest = text.split("://", 1)[-1]
    netloc = re.split(r"[/?#]", rest, maxsplit=1)[0]
    return netloc.rpartition("@")[0].partition(":")[2], rest.partition("?")[2]


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [text for item in value for text in _strings(item)]
    return []


def url_passwords(value: Any) -> list[str]:
    """Every password in a broker setting (see ``split_urls``), as written and percent-decoded.

    For scrubbing error text, so it is generous: each URL of a list, and each whole string
    read as one URL too (redis-py does not split ``redis://:pa;ss@h``).
    """
    texts = [*split_urls(value), *_strings(value)]
    candidates: list[str] = []
    for text in dict.fromkeys(item.strip() for item in texts):
        password, query = _by_hand(text)
        candidates.append(password)
        try:
            parts = urlsplit(text)
            candidates.append(parts.password or "")
            query += "&" + parts.query
        except ValueError:
            pass
        candidates += [
            v for name, v in parse_qsl(query, keep_blank_values=True) if _secret_name(name)
        ]
    found: dict[str, None] = {}
    for candidate in candidates:
        for form in (candidate, unquote(candidate)):
            if form and form != "***":
                found[form] = None
    return list(found)


def normalise_redis_url(url: str) -> str:
    """Accept kombu's ``redis+socket://`` and ``sentinel://`` spellings; refuse the rest.

    A ``sentinel://`` list is one Redis (its master) and must name the master.
    """
    if is_sentinel_url(url):
        try:
            parse_sentinel_url(url)
        except SentinelURLError as exc:
            raise RedisURLError(str(exc)) from None
        return url
    if is_url_list(url):
        raise RedisURLError(
            f"{redact_url(url)!r} is a list of URLs; the DLQ needs one Redis URL "
            "(write a ';' in a password as %3B)"
        )
    scheme = urlsplit(url).scheme
    if scheme == _KOMBU_SOCKET_SCHEME:
        return "unix" + url[len(_KOMBU_SOCKET_SCHEME) :]
    if scheme not in REDIS_SCHEMES:
        raise RedisURLError(
            f"{redact_url(url)!r} is not a Redis URL "
            "(expected redis://, rediss://, unix:// or sentinel://)"
        )
    return url


def _is_redis(url: Any) -> bool:
    if not isinstance(url, str) or not url:
        return False
    scheme = urlsplit(url).scheme
    return scheme in REDIS_SCHEMES or scheme == _KOMBU_SOCKET_SCHEME


def _broker_setting(value: Any) -> str | None:
    """The broker as one string: kombu's ``url;url`` joined from a list."""
    urls = split_urls(value)
    return ";".join(urls) if urls else None


def resolve_redis_url(app: Any, redis_url: str | None = None) -> str:
    """The Redis that holds the DLQ: explicit, else the broker, else the result backend.

    A broker given as failover URLs (a list, or kombu's ``url;url``) means its first one. A
    ``sentinel://`` list is followed as kombu follows it: its master name (and the Sentinels'
    ``sentinel_kwargs`` password) come from the matching ``*_transport_options`` unless the
    URL carries ``?master_name=``.
    """
    broker_options = app.conf.broker_transport_options
    if redis_url is not None:
        if is_sentinel_url(redis_url):
            redis_url = with_sentinel_options(redis_url, broker_options)
        return normalise_redis_url(redis_url)
    broker = _broker_setting(app.conf.broker_url)
    if broker is not None and is_sentinel_url(broker):
        return normalise_redis_url(with_sentinel_options(broker, broker_options))
    if broker is not None and _is_redis(broker.split(";", 1)[0]):
        return normalise_redis_url(broker.split(";", 1)[0])
    backend = app.conf.result_backend
    if is_sentinel_url(backend):
        backend_options = app.conf.result_backend_transport_options
        return normalise_redis_url(with_sentinel_options(backend, backend_options))
    if _is_redis(backend):
        return normalise_redis_url(backend)
    raise RedisURLError(
        "celery-morgue needs a Redis: neither the broker nor the result backend of "
        f"{app.main or 'this app'!r} is Redis; pass redis_url='redis://...' to install()"
    )


# Connections one client may hold: a worker process uses one at a time, the UI a few thread
# workers'. A leak fails loudly ("Too many connections") instead of exhausting the server.
MAX_CONNECTIONS = 32


# ``ssl_cert_reqs`` as kombu and Celery spell it in a rediss:// URL, to redis-py's spelling.
_CERT_REQS = {
    "cert_required": "required",
    "cert_optional": "optional",
    "cert_none": "none",
    "required": "required",
    "optional": "optional",
    "none": "none",
}


def _redis_py_tls(url: str) -> str:
    """``url`` with kombu's ``ssl_cert_reqs=CERT_REQUIRED`` written as redis-py reads it.

    redis-py takes ``required|optional|none`` only, and a URL's query overrides keyword
    arguments in ``from_url``, so the URL itself is rewritten. Other values are left for
    redis-py to refuse by name.
    """
    parts = urlsplit(url)
    if not parts.query or "ssl_cert_reqs" not in parts.query:
        return url
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    query = urlencode(
        [
            (name, _CERT_REQS.get(value.lower(), value) if name == "ssl_cert_reqs" else value)
            for name, value in pairs
        ],
        safe="/:",
    )
    return url.replace(parts.query, query, 1)


def connect(
    url: str,
    timeout: float,
    *,
    password: str | None = None,
    username: str | None = None,
    cluster: bool = False,
) -> DLQClient:
    """A synchronous client with short timeouts and no hidden retries.

    Retries would multiply the time a failing call can stall the worker's event loop. Every
    setting that decides how a call fails is stated here, not left to redis-py's defaults,
    which moved between majors (socket timeouts none then 5 s, retries none then three with
    backoff, keepalive off then on, RESP2 then RESP3); tests/test_connection_settings.py holds
    them. RESP2 because every Redis and proxy speaks it, and because redis-py 8's RESP3
    connections also enable maintenance notifications, which stretch socket timeouts to 10 s
    while a managed Redis is being moved: the worker's failure path must not depend on that.

    ``rediss://`` takes redis-py's and kombu's TLS query parameters (``ssl_cert_reqs``,
    ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``); ``username`` is an ACL user.
    ``sentinel://`` gives a client of the current master, with the same settings on both the
    master's and the Sentinels' connections.
    """
    kwargs: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "socket_keepalive": True,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 30,
        "max_connections": MAX_CONNECTIONS,
        "protocol": 2,
    }
    if is_sentinel_url(url):
        try:
            target = parse_sentinel_url(url)
        except SentinelURLError as exc:
            raise RedisURLError(str(exc)) from None
        return sentinel_client(target, kwargs, password=password, username=username)
    if password is not None:
        kwargs["password"] = password
    if username is not None:
        kwargs["username"] = username
    url = _redis_py_tls(normalise_redis_url(url))
    if cluster:
        return connect_cluster(url, kwargs)
    return redis.Redis.from_url(url, **kwargs)
