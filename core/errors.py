"""What the DLQ's operations raise when they cannot be done as asked."""

from __future__ import annotations

import re


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


# How Redis words an ACL refusal (6.2 and 7): redis-py drops the NOPERM of a refused command
# (NoPermissionError); one inside a script or a pipeline comes wrapped in a ResponseError.
_NOPERM = re.compile(
    r"(?:this user has no permissions|The user executing the script can't|No permissions to)"
    r"[^\r\n]*",
    re.IGNORECASE,
)
_CERTIFICATE = re.compile(r"certificate verify failed:?\s*(?P<why>[^\r\n\](]*)", re.IGNORECASE)


def acl_refusal(text: str) -> str | None:
    """What a Redis ACL refused, from an error's text; None for any other error."""
    found = _NOPERM.search(text)
    if found is None:
        return None
    # A refusal inside a script ends with where: "... script: <sha>, on @user_script:1."
    why = found.group(0).split(" script:", 1)[0].strip().rstrip(".")
    return f"the Redis ACL user may not do this: {why} (NOPERM)"


def certificate_refusal(text: str) -> str | None:
    """Why TLS certificate verification failed, from a connection error's text; None if it did
    not."""
    found = _CERTIFICATE.search(text)
    if found is None:
        return None
    why = found.group("why").strip()
    return f"TLS certificate verification failed ({why or 'untrusted certificate'})"
