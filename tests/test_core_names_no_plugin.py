"""The core knows kinds of plugins, never one of them: the W&B plugin's name appears in core
code only inside the API reference's own names (``use_wandb``, ``wandb_project``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[1] / "core" / "treadle"
#: names the API reference fixes; they map onto the plugin's logger without naming it
SPEC_NAMES = {"use_wandb", "wandb_project"}


def _docstrings(tree: ast.Module) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def _mentions(path: Path, plugin: str) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
            if id(node) in docstrings:
                continue
        elif isinstance(node, ast.Name | ast.arg | ast.Attribute | ast.keyword):
            text = getattr(node, "id", None) or getattr(node, "arg", None) or ""
            text = text or getattr(node, "attr", "")
            if text in SPEC_NAMES:
                continue
        else:
            continue
        if plugin in text:
            found.append(f"{path.relative_to(CORE)}:{node.lineno}: {text!r}")
    return found


@pytest.mark.parametrize("plugin", ["wandb"])
def test_core_code_does_not_name_the_plugin(plugin: str) -> None:
    offenders = [line for path in sorted(CORE.rglob("*.py")) for line in _mentions(path, plugin)]
    assert offenders == []
