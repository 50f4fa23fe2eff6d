"""The status line names the hosts whose spool holds failures not in Redis yet."""

from __future__ import annotations

import redis
from textual.pilot import Pilot

from celery_morgue.core import DeadLetterQueue
from celery_morgue.core.spool_state import SpoolState, write_spool_state
from celery_morgue.tui.app import MorgueApp
from celery_morgue.tui.demo.processes import RedisServer
from tests.helpers import add_entries, profile_for, screen_text, until, with_app


def test_hosts_with_a_spool_backlog_are_on_the_status_line(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    add_entries(DeadLetterQueue(redis_client), "celery", 3)

    async def scenario(pilot: Pilot[None], app: MorgueApp) -> None:
        await until(pilot, lambda: "celery" in screen_text(app), what="the queue listed")
        assert "spool:" not in screen_text(app)
        # A worker on host web-7 cannot reach Redis from where it runs; it reports its backlog
        # when it can (here, from the test).
        write_spool_state(redis_client, "dlq:", SpoolState("web-7", "/var/spool/x", pending=12))
        await until(
            pilot,
            lambda: "spool: web-7 12 pending" in screen_text(app),
            what="the spool backlog on the status line",
        )
        write_spool_state(redis_client, "dlq:", SpoolState("web-7", "/var/spool/x", pending=0))
        await until(pilot, lambda: "spool:" not in screen_text(app), what="the backlog gone")

    with_app(profile_for(redis_server.url), scenario, size=(100, 30))
