"""What the DLQ's operations raise when they cannot be done as asked."""

from __future__ import annotations


class DLQError(RuntimeError):
    """An operation on the DLQ that cannot be done as asked."""


class EntryNotFound(DLQError):
    pass


class EntryBusy(DLQError):
    """Someone else is requeueing this entry right now."""


class AlreadyRequeued(EntryBusy):
    """The entry was sent again earlier, as ``task_id``, by a requeue that stopped before it
    could remove the entry: sending it again would run the task twice."""

    def __init__(self, message: str, task_id: str) -> None:
        super().__init__(message)
        self.task_id = task_id


class UnreadableEntryError(DLQError):
    """The stream entry is not a celery-morgue entry: it can be shown and deleted, not sent."""


class LossyEntryError(DLQError):
    """Requeueing would send the task different arguments from the ones it failed with."""


class InvalidEntryError(DLQError):
    """The entry's stored options are not something the broker client can send."""


class UnroutableEntry(DLQError):
    """This app cannot tell where to publish the entry: it would route nowhere and be lost."""
