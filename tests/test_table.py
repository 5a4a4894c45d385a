"""The CLI's plain-text tables: every table command goes through ``format_table``."""

from __future__ import annotations

import time

from treadle_cli.table import MAX_CELL_WIDTH, format_table, shorten


def test_columns_are_padded_to_their_widest_cell() -> None:
    table = format_table(["name", "n"], [["a", 1], ["bbb", 22]])

    assert table.splitlines() == ["name  n", "----  --", "a     1", "bbb   22"]


def test_a_huge_cell_is_cut_naming_its_length_and_pads_no_other_row() -> None:
    """Issue 14: one 50 MB value padded every row to 50 MB (2 GB written for ``--plan``)."""
    huge = "x" * 50_000_000
    started = time.monotonic()

    table = format_table(["field", "value"], [["notes", huge], ["epochs", 3]])

    assert time.monotonic() - started < 5
    assert len(table) < 3 * MAX_CELL_WIDTH + 100
    assert max(len(line) for line in table.splitlines()) <= len("epochs  ") + MAX_CELL_WIDTH
    assert "\u2026 (50,000,000 chars)" in table
    assert table.splitlines()[-1].rstrip() == "epochs  3"


def test_control_characters_are_shown_escaped_and_never_break_a_row() -> None:
    table = format_table(["note"], [["two\nlines \x1b[2J and a tab\t"]])

    assert table.splitlines()[2] == "two\\nlines \\x1b[2J and a tab\\t"
    assert len(table.splitlines()) == 3


def test_shorten_keeps_short_text_and_cuts_long_text_to_the_width() -> None:
    assert shorten("abc", 10) == "abc"
    cut = shorten("y" * 100, 30)
    assert len(cut) == 30
    assert cut.endswith("\u2026 (100 chars)")
    assert len(shorten("\n" * 100, 30)) == 30, "escaping cannot push a cell past the width"
