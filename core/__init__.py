"""celery-morgue's headless core: the Redis dead-letter queue, the zombie reaper, backoff.

Workers import this package; it never imports textual or rich.
"""

from celery_morgue.core.backoff import calculate_backoff, retry_with_backoff
from celery_morgue.core.dlq import DeadLetterQueue, Page, QueueInfo, RequeueReport, StoredEntry
from celery_morgue.core.entry import Entry, UnreadableEntry
from celery_morgue.core.errors import (
    AlreadyRequeued,
    DLQError,
    EntryBusy,
    EntryNotFound,
    InvalidEntryError,
    LossyEntryError,
    UnreadableEntryError,
    UnroutableEntry,
)
from celery_morgue.core.install import Installation, install
from celery_morgue.core.urls import RedisURLError, redact_url

__all__ = [
    "AlreadyRequeued",
    "DLQError",
    "DeadLetterQueue",
    "Entry",
    "EntryBusy",
    "EntryNotFound",
    "Installation",
    "InvalidEntryError",
    "LossyEntryError",
    "Page",
    "QueueInfo",
    "RedisURLError",
    "RequeueReport",
    "StoredEntry",
    "UnreadableEntry",
    "UnreadableEntryError",
    "UnroutableEntry",
    "calculate_backoff",
    "install",
    "redact_url",
    "retry_with_backoff",
]
