"""docs/plugin-kinds.md stays true: each kind's example plugin runs, registers its kind, and
passes the conformance kit; every rule of the kit is on the page."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from treadle.plugins import make_plugin_manager
from treadle.registry import KINDS
from treadle.testing import rules_of
from treadle.testing.runner import ConformanceCase, run_case

from .docs_examples import DOCS, docs_examples

PAGE = "plugin-kinds.md"
EXAMPLES = docs_examples(PAGE, "tests/test_plugin_kinds_docs.py")


def test_every_kind_has_an_example_and_every_rule_is_listed() -> None:
    assert len(EXAMPLES) == len(KINDS)
    text = (DOCS / PAGE).read_text(encoding="utf-8")
    for kind in KINDS:
        assert f"`treadle_register_{kind}`" in text
        for rule in rules_of(kind):
            assert f"| `{rule.name}` |" in text, f"{kind}: rule {rule.name!r} is not on the page"


@pytest.mark.parametrize("index", range(len(EXAMPLES)))
def test_the_example_registers_its_kind_and_passes_the_kit(
    index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"docs_kind_example_{index}"
    (tmp_path / f"{name}.py").write_text(EXAMPLES[index], encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # the commands kit imports it afresh
    module = importlib.import_module(name)
    manager = make_plugin_manager(plugins=[("docs", module)])
    settings = {
        "loggers": {"step_lines": {"read_steps": getattr(module, "read_steps", None)}},
        "storage": {"folder": {"location": "folder://{tmp}/stores"}},
        "job_types": {"echo": {"config": {"message": "hi"}, "bad_config": {"message": 3}}},
        "commands": {"hello": {"argv": ["--name", "kit"]}},
    }

    cases = [
        ConformanceCase(kind, entry.name, str(entry.provenance))
        for kind in KINDS
        for entry in manager.registry(kind).entries()
        if entry.provenance.plugin == "docs"
    ]

    assert len(cases) == 1, cases
    result = run_case(cases[0], settings, tmp_path / "work", manager)
    assert result.outcome == "passed", result.message
    assert result.report is not None
    skipped = dict(result.report.skipped)
    assert set(skipped) <= {"masks", "runs in process", "outputs match"} | {
        rule.name for rule in rules_of("exporters")[4:]
    }, skipped


def test_the_guide_s_kit_table_counts_each_kind_s_rules() -> None:
    from treadle.testing import _KIT_MODULES

    rows = {
        line.split("|")[2]: line
        for line in (DOCS / "plugins.md").read_text(encoding="utf-8").splitlines()
        if line.startswith("| ") and "`treadle.testing." in line
    }
    for kind, module in _KIT_MODULES.items():
        (row,) = [line for kit, line in rows.items() if f"`{module}." in kit]
        assert row.rstrip(" |").endswith(f"| {len(rules_of(kind))}"), row
