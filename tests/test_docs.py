"""Docs stay true: the hook reference matches the hookspec docstrings."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from treadle import hookspecs

DOCS = Path(__file__).resolve().parents[1] / "docs"


def load_generator() -> Any:
    spec = importlib.util.spec_from_file_location("generate_hooks", DOCS / "generate_hooks.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hooks_md_is_generated_from_the_current_docstrings() -> None:
    expected = load_generator().render()
    actual = (DOCS / "hooks.md").read_text(encoding="utf-8")
    assert actual == expected, "docs/hooks.md is stale: run python docs/generate_hooks.py"


def test_every_hook_has_a_reference_section_with_its_signature() -> None:
    text = (DOCS / "hooks.md").read_text(encoding="utf-8")
    for name in vars(hookspecs):
        if name.startswith("treadle_"):
            assert f"## `{name}`" in text
            assert f"def {name}(" in text
