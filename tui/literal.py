"""Text from tasks, made safe to show: control, format and separator characters as escapes.

Shared by the CLI's tables and the UI's cells, so a right-to-left override or an escape
sequence in an exception message reads as ``\\u202e`` / ``\\x1b`` everywhere.
"""

from __future__ import annotations

import unicodedata

_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})


def printable(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with control, format and line-separator characters written as escapes."""
    if text.isprintable() and "\n" not in text:
        return text
    out = []
    for char in text:
        if keep_newlines and char in "\n\t":
            out.append(char)
        elif char == "\n":
            out.append("\\n")
        elif unicodedata.category(char) in _ESCAPED_CATEGORIES:
            out.append(char.encode("unicode_escape").decode("ascii"))
        else:
            out.append(char)
    return "".join(out)
