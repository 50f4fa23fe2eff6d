"""The list of dead-letter queues beside the pane, each with its live count."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.reactive import reactive
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from celery_morgue.core.dlq import QueueInfo

NAME_WIDTH = 10
COUNT_WIDTH = 6


def _short_count(total: int) -> str:
    if total < 100_000:
        return f"{total:,}"
    if total < 10_000_000:
        return f"{total / 1000:,.0f}k"
    return f"{total / 1_000_000:,.0f}M"


def queue_prompt(info: QueueInfo) -> Text:
    name = info.queue if len(info.queue) <= NAME_WIDTH else info.queue[: NAME_WIDTH - 1] + "…"
    return Text.assemble(name.ljust(NAME_WIDTH), " ", _short_count(info.total).rjust(COUNT_WIDTH))


class QueueList(OptionList):
    """Option ids are the queue names; highlighting one shows its pane.

    Set :attr:`queues` to what a refresh found: the counts change in place, and only a change
    of the queues themselves rebuilds the list.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j", "cursor_down", "Down", show=False, id="cursor_down_j"),
        Binding("k", "cursor_up", "Up", show=False, id="cursor_up_k"),
    ]

    queues: reactive[tuple[QueueInfo, ...]] = reactive((), init=False)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, classes="pane")
        self.border_title = "Queues"

    @property
    def names(self) -> list[str]:
        return [option.id or "" for option in self.options]

    @property
    def highlighted_queue(self) -> str | None:
        option = self.highlighted_option
        return option.id if option is not None else None

    def watch_queues(self, queues: tuple[QueueInfo, ...]) -> None:
        """Show ``queues`` (sorted by name), keeping the highlighted queue if it is still there."""
        self.border_title = f"Queues · {len(queues)}" if queues else "Queues"
        if [info.queue for info in queues] == self.names:
            for info in queues:
                self.replace_option_prompt(info.queue, queue_prompt(info))
            return
        current = self.highlighted_queue
        index = self.highlighted
        self.set_options(Option(queue_prompt(info), id=info.queue) for info in queues)
        names = self.names
        if not names:
            return
        if current in names:
            self.highlighted = names.index(current)
        else:
            self.highlighted = min(index or 0, len(names) - 1)
