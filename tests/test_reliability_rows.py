"""Every promise of the RELIABILITY table has a test that names it, so ``pytest -k X3`` runs the
tests of row X3 (a name such as ``test_x3_...``, or the row in the test's docstring, which
conftest.py adds to what ``-k`` matches)."""

from __future__ import annotations

import ast

import pytest

from tests.conftest import RELIABILITY_ROW, ROOT

#: The rows of shared/RELIABILITY.md, kept here because CI may not see that folder.
ROWS = (
    *(f"C{n}" for n in range(1, 7)),
    *(f"J{n}" for n in range(1, 10)),
    *(f"S{n}" for n in range(1, 5)),
    "D1",
    "D2",
    "R1",
    "R2",
    *(f"X{n}" for n in range(1, 6)),
    "L1",
    "L2",
)


def rows_named_by_tests() -> dict[str, set[str]]:
    """For each row, the tests (``file::name``) naming it in their name or docstring."""
    named: dict[str, set[str]] = {row: set() for row in ROWS}
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            if not node.name.startswith("test_"):
                continue
            tokens = {token.upper() for token in node.name.split("_")}
            found = tokens & set(ROWS)
            found |= set(RELIABILITY_ROW.findall(ast.get_docstring(node) or ""))
            for row in found:
                named[row].add(f"{path.name}::{node.name}")
    return named


def test_every_reliability_row_is_named_by_a_test() -> None:
    missing = [row for row, tests in rows_named_by_tests().items() if not tests]
    assert missing == [], f"rows without a test naming them: {', '.join(missing)}"


def test_the_rows_here_are_those_of_the_shared_table() -> None:
    table = ROOT.parent / "shared" / "RELIABILITY.md"
    if not table.exists():
        pytest.skip(f"{table} is not beside this checkout")
    rows = {
        line.split("|")[1].strip()
        for line in table.read_text(encoding="utf-8").splitlines()
        if line.startswith("| ") and RELIABILITY_ROW.fullmatch(line.split("|")[1].strip())
    }
    assert rows == set(ROWS)
