"""What a DLQ pane is narrowed to: a failure group chosen in the groups view, text typed after
``/``, or both; and how a title and a confirmation name it.

The pane's rows, the counts its confirmations give and the entries its actions touch all come
from the same :class:`EntryFilter` (:attr:`Scope.entry_filter`), read by the server.
"""

from __future__ import annotations

from dataclasses import dataclass

from celery_morgue.core.filters import EntryFilter
from celery_morgue.core.groups import GroupSummary
from celery_morgue.tui.literal import printable

EVERY_ENTRY = EntryFilter()
"""The empty filter, as a default: what an unnarrowed pane reads."""


@dataclass(frozen=True)
class GroupChoice:
    """A group as the groups view showed it: its id and what it is, in words."""

    group: str
    task: str
    exception: str
    where: str  # "file:function" of the innermost frame, or ""

    @classmethod
    def of(cls, summary: GroupSummary) -> GroupChoice:
        return cls(summary.group, summary.task, summary.exception, summary.where)

    @property
    def caption(self) -> str:
        """``ValueError in parse_invoice``: the exception and the function that raised it (the
        task's when no frame is known)."""
        exception = self.exception.rsplit(".", 1)[-1] or "failure"
        function = self.where.rpartition(":")[2] or self.task.rsplit(".", 1)[-1]
        return printable(f"{exception} in {function}" if function else exception)


@dataclass(frozen=True)
class Scope:
    """The empty scope is the whole queue."""

    group: GroupChoice | None = None
    text: str = ""

    @property
    def is_empty(self) -> bool:
        return self.group is None and not self.text

    @property
    def entry_filter(self) -> EntryFilter:
        return EntryFilter(group=self.group.group if self.group else None, grep=self.text or None)

    @property
    def title(self) -> str:
        """For the pane's title: ``group 3f9a0c1d2e4b · ValueError in parse_invoice``."""
        parts: list[str] = []
        if self.group is not None:
            parts += [f"group {self.group.group}", self.group.caption]
        if self.text:
            parts.append(f'"{printable(self.text)}"')
        return " · ".join(parts)

    @property
    def phrase(self) -> str:
        """For a confirmation: ``group 3f9a0c1d2e4b (ValueError in parse_invoice)``."""
        parts: list[str] = []
        if self.group is not None:
            parts.append(f"group {self.group.group} ({self.group.caption})")
        if self.text:
            parts.append(f'containing "{printable(self.text)}"')
        return ", ".join(parts) if parts else "the queue"
