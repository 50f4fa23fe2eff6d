"""How messages word what they quote and count: the same in the reaper's report, the CLI and the UI.

Here, not in the UI, because core's own reports and errors need the same words and core may not
import the UI.
"""

from __future__ import annotations


def one_line(value: object) -> str:
    """``value``'s text on one line, every run of whitespace one space.

    An exception without text (``TimeoutError()``) is named by its type, so a report or an
    error message never ends in an empty reason.
    """
    text = " ".join(str(value).split())
    if not text and isinstance(value, BaseException):
        return type(value).__name__
    return text


def plural(count: int, noun: str, many: str | None = None) -> str:
    """``1 entry``, ``2 entries``, ``1,204 tasks``; ``many`` for a plural the rule gets wrong."""
    if count == 1:
        return f"{count:,} {noun}"
    if many is None:
        consonant_y = noun.endswith("y") and noun[-2:-1] not in "aeiou"
        many = noun[:-1] + "ies" if consonant_y else noun + "s"
    return f"{count:,} {many}"
