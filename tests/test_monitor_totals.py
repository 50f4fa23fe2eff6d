"""The UI's polls under a text filter do not rescan the queue each time: real Redis.

A text filter's count is a scan of the whole queue. The pane polls every few seconds, so a
poll that recounted would keep the shared Redis scanning for as long as the filter is on.
"""

from __future__ import annotations

import redis

from celery_morgue.core import DeadLetterQueue
from celery_morgue.core.filters import EntryFilter
from celery_morgue.tui.connection import connect_profile
from celery_morgue.tui.demo.processes import RedisServer
from celery_morgue.tui.monitor import Monitor
from tests.helpers import make_entry, profile_for

QUEUE = "text-q"
NEEDLE = EntryFilter(grep="needle")


def commands(client: redis.Redis) -> int:
    return int(client.info("stats")["total_commands_processed"])


def test_a_text_filter_poll_counts_once_and_an_action_recounts(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    dlq = DeadLetterQueue(redis_client)
    dlq.clear(QUEUE)
    # Most of the queue does not match, and the matches are the newest: a page is one read.
    assert all(dlq.add_many(make_entry(f"hay-{n}", QUEUE) for n in range(20_000)))
    needles = dlq.add_many(
        make_entry(f"needle-{n}", QUEUE, message=f"needle {n}") for n in range(60)
    )
    with connect_profile(profile_for(redis_server.url)) as connection:
        monitor = Monitor(connection)
        before = commands(redis_client)
        first = monitor.page(QUEUE, None, 50, NEEDLE)
        counting_poll = commands(redis_client) - before
        assert first.total == 60 and len(first.items) == 50

        before = commands(redis_client)
        again = monitor.page(QUEUE, None, 50, NEEDLE)
        cached_poll = commands(redis_client) - before
        assert again.total == 60
        assert cached_poll * 4 < counting_poll, (cached_poll, counting_poll)

        # What this UI does itself shows at once; a confirmation always counts afresh.
        assert monitor.delete(QUEUE, str(needles[0])) == 1
        assert monitor.page(QUEUE, None, 50, NEEDLE).total == 59
        assert monitor.count(QUEUE, NEEDLE, str(needles[-1])) == 59
