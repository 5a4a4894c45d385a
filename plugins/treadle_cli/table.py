"""Aligned plain-text tables for terminal output."""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["MAX_CELL_WIDTH", "format_table", "shorten"]

#: The widest a table cell is shown; a longer value is cut and says how long it was, so one
#: huge value (a 50 MB ``notes``) neither pads every row nor floods the terminal.
MAX_CELL_WIDTH = 120

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _escape(match: re.Match[str]) -> str:
    # shown as Python writes it (\n, \x1b): a value never breaks a row or drives the terminal
    return repr(match.group())[1:-1]


def shorten(value: object, width: int = MAX_CELL_WIDTH) -> str:
    """``str(value)`` on one line of at most ``width`` characters: control characters shown
    escaped (``\\n``, ``\\x1b``), and a longer text cut with its full length named
    (``'xxxx… (50,000,002 chars)``). Costs time in ``width``, not in the length of the text."""
    text = str(value)
    head = _CONTROL.sub(_escape, text[: width + 1])
    if len(text) <= width and len(head) <= width:
        return head
    suffix = f"\u2026 ({len(text):,} chars)"
    return head[: max(width - len(suffix), 1)] + suffix


def format_table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], *, max_width: int = MAX_CELL_WIDTH
) -> str:
    """Columns padded to their widest cell, a rule under the header, no trailing spaces.

    :param max_width: the widest a cell is shown; longer ones are cut by :func:`shorten`.
    """
    cells = [[shorten(cell, max_width) for cell in row] for row in rows]
    widths = [len(header) for header in headers]
    for row in cells:
        for index, cell in enumerate(row):
            widths[index] = max(widths[index], len(cell))

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            value.ljust(width) for value, width in zip(values, widths, strict=True)
        ).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(list(headers)), rule, *(line(row) for row in cells)])
