"""Redis Sentinel URLs, spelled as kombu spells them, and the client that follows the master.

``sentinel://[:password@]host:port[/db];sentinel://host:port...``: every element names one
Sentinel; as in kombu and Celery, the first element's user, password and db are the DATA
Redis's, not the Sentinels'. The master name and the Sentinels' own password are not part of
kombu's URL (they live in ``*_transport_options``); this package carries them in the DLQ URL as
``?master_name=NAME`` and ``?sentinel_password=...`` query parameters on any element, so one
string is still the whole address (and ``redact_url`` shows the password as ``***``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import redis
from redis.sentinel import Sentinel

SENTINEL_SCHEME = "sentinel"
DEFAULT_SENTINEL_PORT = 26379  # kombu's default for sentinel://
MASTER_NAME = "master_name"
SENTINEL_PASSWORD = "sentinel_password"  # noqa: S105 - the name of a query parameter
SENTINEL_USERNAME = "sentinel_username"

WHERE_TO_SET_MASTER_NAME = (
    "set broker_transport_options={'master_name': NAME} (or the profile's master_name, "
    "or ?master_name=NAME in the URL)"
)


class SentinelURLError(ValueError):
    """A sentinel:// URL this package cannot follow."""


@dataclass(frozen=True)
class SentinelTarget:
    sentinels: tuple[tuple[str, int], ...]
    master_name: str
    db: int
    username: str | None  # the data Redis's ACL user
    password: str | None  # the data Redis's password
    sentinel_username: str | None
    sentinel_password: str | None


def is_sentinel_url(url: object) -> bool:
    """Whether ``url`` (one URL or a ``;`` list) names Sentinels."""
    if not isinstance(url, str):
        return False
    first = url.strip().split(";", 1)[0]
    return first.lower().startswith(SENTINEL_SCHEME + "://")


def _query_options(url: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for part in url.split(";"):
        options.update(parse_qsl(urlsplit(part.strip()).query, keep_blank_values=False))
    return options


def with_sentinel_options(url: str, transport_options: Mapping[str, Any] | None) -> str:
    """``url`` with the master name and Sentinel credentials of kombu's transport options.

    A ``master_name`` already in the URL wins: it was written for this package.
    """
    options = dict(transport_options or {})
    present = _query_options(url)
    extra: list[tuple[str, str]] = []
    master_name = options.get(MASTER_NAME)
    if MASTER_NAME not in present and isinstance(master_name, str) and master_name:
        extra.append((MASTER_NAME, master_name))
    sentinel_kwargs = options.get("sentinel_kwargs") or {}
    if isinstance(sentinel_kwargs, Mapping):
        for key, name in (("password", SENTINEL_PASSWORD), ("username", SENTINEL_USERNAME)):
            value = sentinel_kwargs.get(key)
            if name not in present and isinstance(value, str) and value:
                extra.append((name, value))
    if not extra:
        return url
    first, sep, rest = url.partition(";")
    joiner = "&" if "?" in first else "?"
    return f"{first}{joiner}{urlencode(extra)}{sep}{rest}"


def parse_sentinel_url(url: str) -> SentinelTarget:
    """The Sentinels, master name and credentials a sentinel:// URL (list) names."""
    from celery_morgue.core.urls import redact_url  # urls imports this module

    parts = [part.strip() for part in url.split(";") if part.strip()]
    sentinels: list[tuple[str, int]] = []
    for part in parts:
        try:
            split = urlsplit(part)
            port = split.port
        except ValueError:
            raise SentinelURLError(f"{redact_url(url)!r} is not a valid sentinel URL") from None
        if split.scheme.lower() != SENTINEL_SCHEME:
            raise SentinelURLError(
                f"{redact_url(url)!r} mixes sentinel:// with other schemes; "
                "every element of the list must be a sentinel://"
            )
        if not split.hostname:
            raise SentinelURLError(f"{redact_url(url)!r} has a Sentinel with no host")
        sentinels.append((split.hostname, port or DEFAULT_SENTINEL_PORT))
    if not sentinels:
        raise SentinelURLError("the sentinel URL names no Sentinel")
    options = _query_options(url)
    master_name = options.get(MASTER_NAME, "")
    if not master_name:
        raise SentinelURLError(
            f"{redact_url(url)!r} names no Redis master: {WHERE_TO_SET_MASTER_NAME}"
        )
    first = urlsplit(parts[0])
    db_text = first.path.strip("/") or "0"
    if not db_text.isdigit():
        raise SentinelURLError(f"{redact_url(url)!r}: the db must be a number")
    return SentinelTarget(
        sentinels=tuple(sentinels),
        master_name=master_name,
        db=int(db_text),
        username=unquote(first.username) if first.username else None,
        password=unquote(first.password) if first.password is not None else None,
        sentinel_username=options.get(SENTINEL_USERNAME) or None,
        sentinel_password=options.get(SENTINEL_PASSWORD) or None,
    )


def sentinel_client(
    target: SentinelTarget,
    settings: Mapping[str, Any],
    *,
    password: str | None = None,
    username: str | None = None,
) -> redis.Redis:
    """A client for ``target``'s current master: each new connection asks the Sentinels.

    ``settings`` are ``connect()``'s pinned failure settings; the Sentinel connections get the
    same ones, so a dead Sentinel fails as fast as a dead master.
    """
    sentinel_kwargs: dict[str, Any] = dict(settings)
    if target.sentinel_password is not None:
        sentinel_kwargs["password"] = target.sentinel_password
    if target.sentinel_username is not None:
        sentinel_kwargs["username"] = target.sentinel_username
    data_kwargs: dict[str, Any] = dict(settings)
    data_kwargs["db"] = target.db
    data_password = password if password is not None else target.password
    data_username = username if username is not None else target.username
    if data_password is not None:
        data_kwargs["password"] = data_password
    if data_username is not None:
        data_kwargs["username"] = data_username
    manager = Sentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels), sentinel_kwargs=sentinel_kwargs, **data_kwargs
    )
    client: redis.Redis = manager.master_for(  # type: ignore[no-untyped-call]
        target.master_name, redis_class=redis.Redis
    )
    return client


def split_kombu_options(url: str) -> tuple[str, dict[str, Any]]:
    """``url`` as kombu reads it, and the transport options it carried for this package.

    For handing a sentinel:// DLQ URL to Celery as a broker: the master name and Sentinel
    credentials move back into ``broker_transport_options``, where kombu looks for them.
    """
    ours = (MASTER_NAME, SENTINEL_PASSWORD, SENTINEL_USERNAME)
    options = _query_options(url)
    parts: list[str] = []
    for part in url.split(";"):
        base, question, query = part.partition("?")
        kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k not in ours]
        parts.append(f"{base}?{urlencode(kept)}" if question and kept else base)
    transport: dict[str, Any] = {}
    if options.get(MASTER_NAME):
        transport[MASTER_NAME] = options[MASTER_NAME]
    sentinel_kwargs = {
        key: options[name]
        for key, name in (("password", SENTINEL_PASSWORD), ("username", SENTINEL_USERNAME))
        if options.get(name)
    }
    if sentinel_kwargs:
        transport["sentinel_kwargs"] = sentinel_kwargs
    return ";".join(parts), transport


# How long a capture waits for a replica to acknowledge its write. Redis replicates
# asynchronously: a write the master acknowledged but had not sent on when it died is gone once
# Sentinel promotes the replica. Short, because it is paid on every capture (see the README).
REPLICA_WAIT_MS = 50


class NotReplicated(redis.ConnectionError):
    """The master stored a write that no replica has yet: a failover now would lose it."""


# A master with no replica is asked again after this long rather than on every capture: its
# WAIT would only time out (rounded up to Redis's 100 ms clock), and nothing can be promoted.
ALONE_RECHECK_SECONDS = 5.0


class ReplicationCheck:
    """Whether a client's writes are on a replica, or on no replica that could be promoted.

    With no replica connected, nothing can be promoted over the write: a replica that attaches
    later copies the whole dataset. With replicas connected that did not acknowledge (stalled,
    far behind), writes count as not replicated for a while without waiting again: a WAIT
    stalls its caller (the worker's main loop, for revokes and rejections) about 100 ms.
    """

    def __init__(self, wait_ms: int = REPLICA_WAIT_MS) -> None:
        self.wait_ms = wait_ms
        self._alone_until = 0.0
        self._lagging_until = 0.0

    def wait_for(self) -> int | None:
        """The WAIT timeout for the next write; None: no WAIT now (see :meth:`verdict`)."""
        now = time.monotonic()
        return None if now < self._alone_until or now < self._lagging_until else self.wait_ms

    def verdict(self, client: redis.Redis | redis.RedisCluster, acknowledged: int | None) -> bool:
        """Whether the write is safe from a failover; ``acknowledged`` is WAIT's answer, None
        when :meth:`wait_for` said not to wait."""
        now = time.monotonic()
        if acknowledged is None:
            return now < self._alone_until  # alone: safe; lagging: not
        if acknowledged >= 1:
            return True
        if int(client.info("replication").get("connected_slaves", 0)):
            self._lagging_until = now + ALONE_RECHECK_SECONDS
            return False
        self._alone_until = now + ALONE_RECHECK_SECONDS
        return True
