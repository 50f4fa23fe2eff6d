"""Connection profiles: what a `morgue` command or the UI connects to.

CONTRACT (shared by the CLI and the UI; the TOML loading/saving lands with issue 4):
``Profile`` is the resolved, validated settings of one profile.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_REFRESH = 2.0
DEFAULT_INSPECT_TIMEOUT = 1.0
DEFAULT_HARD_LIMIT = 300.0
DEFAULT_GRACE = 30.0


@dataclass(frozen=True)
class Profile:
    name: str
    url: str  # the Redis holding the DLQ (redis://, rediss://, unix://)
    broker_url: str | None = None  # the Celery broker when it is not that Redis
    prefix: str = "dlq:"
    refresh: float = DEFAULT_REFRESH
    inspect_timeout: float = DEFAULT_INSPECT_TIMEOUT
    hard_limit: float = DEFAULT_HARD_LIMIT
    grace: float = DEFAULT_GRACE
    readonly: bool = False
    password_env: str | None = None
