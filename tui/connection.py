"""Live clients for a profile: the DLQ's Redis client and a Celery app for control and requeue.

The CLI and the UI connect the same way, through ``connect_profile``. Passwords come from the
environment (``password_env``) and never leave here in text meant for people: URLs are shown
through ``redact_url`` and error text through ``Connection.scrub``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from celery import Celery

from celery_morgue.core.dlq import DeadLetterQueue
from celery_morgue.core.redis_cluster import DLQClient, cluster_prefix
from celery_morgue.core.sentinel import is_sentinel_url, split_kombu_options, with_sentinel_options
from celery_morgue.core.urls import (
    connect,
    is_url_list,
    redact_url,
    redact_urls,
    split_urls,
    url_passwords,
)
from celery_morgue.tui.profiles import Profile, ProfileError


def _password(profile: Profile, field: str, environ: Mapping[str, str]) -> str | None:
    variable = getattr(profile, field)
    if variable is None:
        return None
    value = environ.get(variable)
    if value is None:
        raise ProfileError(
            field, f"environment variable {variable} is not set (profile {profile.name!r})"
        )
    if not value:
        raise ProfileError(field, f"environment variable {variable} is empty")
    return value


def with_password(url: str, password: str | None, username: str | None = None) -> str:
    """``url`` carrying ``password`` (and the ACL ``username``, else the URL's own user); each
    URL of a ``url;url`` failover list carries them.

    For clients that only take URLs; never print the result.
    """
    if is_url_list(url):
        return ";".join(with_password(part, password, username) for part in url.split(";") if part)
    parts = urlsplit(url)
    if password is None:
        password = unquote(parts.password or "")
    user = quote(username if username is not None else unquote(parts.username or ""), safe="")
    host = parts.netloc.rsplit("@", 1)[-1]
    netloc = f"{user}:{quote(password, safe='')}@{host}" if password else f"{user}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _kombu_part(url: str) -> str:
    # redis-py says unix://, kombu says redis+socket://.
    if url.startswith("unix://"):
        return "redis+socket" + url[len("unix") :]
    # Without ssl_cert_reqs kombu connects to rediss:// without checking the certificate (and
    # warns); redis-py, the DLQ's client, checks it. The control app checks it too.
    if url.startswith("rediss://") and "ssl_cert_reqs=" not in urlsplit(url).query:
        return url + ("&" if urlsplit(url).query else "?") + "ssl_cert_reqs=required"
    return url


def _kombu_url(url: str) -> str:
    return ";".join(_kombu_part(part) for part in url.split(";"))


def control_app(broker_url: str, timeout: float) -> Celery:
    """A Celery app for control commands and requeue that fails fast on a dead broker.

    JSON only. Connection and publish retries are off: a monitor should say "unreachable" in a
    few seconds, not retry for minutes.
    """
    transport_options: dict[str, Any] = {"max_retries": 1}
    if is_sentinel_url(broker_url):
        # kombu takes the master name and the Sentinels' password as transport options.
        broker_url, sentinel_options = split_kombu_options(broker_url)
        transport_options.update(sentinel_options)
    app = Celery("celery-morgue", broker=broker_url, set_as_current=False)
    if urlsplit(broker_url).scheme.split("+", 1)[0] in ("redis", "rediss", "sentinel"):
        transport_options["socket_connect_timeout"] = timeout
        # A read timeout too: without one an inspect on a stalled Redis blocks its thread (and
        # quitting) until Redis answers. Above kombu's 1 s BRPOP, which must not time out.
        transport_options["socket_timeout"] = max(timeout, 3.0)
        if "sentinel_kwargs" in transport_options:
            # redis-py gives the Sentinels' own connections the client's timeouts only when
            # there are no sentinel_kwargs; with a Sentinel password they would wait 5 s.
            transport_options["sentinel_kwargs"] = {
                **transport_options["sentinel_kwargs"],
                "socket_connect_timeout": timeout,
                "socket_timeout": max(timeout, 3.0),
            }
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        result_backend=None,
        broker_connection_retry=False,
        broker_connection_retry_on_startup=False,
        broker_connection_max_retries=1,
        broker_connection_timeout=timeout,
        broker_transport_options=transport_options,
        task_publish_retry=False,
        broker_pool_limit=2,
    )
    return app


@dataclass
class Connection:
    """Live clients for one profile. Nothing connects until first used."""

    profile: Profile
    client: DLQClient
    dlq: DeadLetterQueue
    app: Any  # a Celery app: ours, or the user's under `celery -A proj morgue`
    secrets: tuple[str, ...] = ()
    owns_app: bool = True

    @property
    def url(self) -> str:
        """The DLQ Redis, redacted."""
        return redact_url(self.profile.url)

    @property
    def broker(self) -> str:
        """The broker, redacted: every URL of a failover list."""
        if not self.owns_app:
            return redact_urls(self.app.conf.broker_url)
        return redact_url(self.profile.broker_url or self.profile.url)

    def scrub(self, text: str) -> str:
        """``text`` with every URL this connection knows redacted and every password it knows
        (of each URL of a failover list too) replaced by ``***``."""
        urls = [self.profile.url, self.profile.broker_url]
        if not self.owns_app:
            urls.append(self.app.conf.broker_url)
        return scrub(text, urls, self.secrets)

    def close(self) -> None:
        self.client.close()
        if self.owns_app:
            self.app.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def scrub(text: str, urls: Any, secrets: Iterable[str] = ()) -> str:
    """``text`` with each of ``urls`` (see ``split_urls``) redacted, then each password in them
    and each of ``secrets``, as written or percent-encoded, replaced by ``***``."""
    for url in sorted(set(split_urls(urls)), key=len, reverse=True):
        text = text.replace(url, redact_url(url))
    words = {*url_passwords(urls), *secrets}
    forms = {form for word in words if word for form in (word, quote(word, safe=""))}
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, "***")
    return text


def connect_profile(
    profile: Profile, *, app: Any = None, environ: Mapping[str, str] | None = None
) -> Connection:
    """The DLQ client and the Celery app ``profile`` describes.

    Passwords come from ``password_env`` / ``broker_password_env``; a missing variable is a
    ``ProfileError``. With ``app`` (``celery -A proj morgue``) control and requeue use that app.
    """
    env = os.environ if environ is None else environ
    password = _password(profile, "password_env", env)
    broker_password = _password(profile, "broker_password_env", env)
    urls = [profile.url, profile.broker_url, app.conf.broker_url if app is not None else None]
    secrets = tuple(
        dict.fromkeys(
            secret for secret in (password, broker_password, *url_passwords(urls)) if secret
        )
    )
    if profile.cluster and profile.broker_url is None and app is None:
        raise ProfileError(
            "broker_url", "is needed with cluster: a Celery broker cannot be a Redis Cluster"
        )
    url = profile.url
    if profile.master_name is not None and is_sentinel_url(url):
        url = with_sentinel_options(url, {"master_name": profile.master_name})
    client = connect(
        url,
        profile.timeout,
        password=password,
        username=profile.username,
        cluster=profile.cluster,
    )
    prefix = cluster_prefix(profile.prefix) if profile.cluster else profile.prefix
    dlq = DeadLetterQueue(client, prefix=prefix)
    if app is not None:
        return Connection(profile, client, dlq, app, secrets, owns_app=False)
    if profile.broker_url is not None:
        broker = profile.broker_url
        if broker_password:
            broker = with_password(broker, broker_password)
    else:
        broker = url
        if password or profile.username:
            broker = with_password(broker, password, profile.username)
    return Connection(
        profile, client, dlq, control_app(_kombu_url(broker), profile.timeout), secrets
    )


def first_url(value: Any) -> str | None:
    """Celery's broker_url: a string, or a list of failover URLs."""
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    return value if isinstance(value, str) and value else None
