"""treadle.testing: the conformance checks plugin authors run on their own plugins."""

from __future__ import annotations

import importlib
import inspect
import types
from pathlib import Path
from typing import Any

import pytest

from treadle import hookimpl, hookspecs
from treadle.testing import check_hookimpls, isolated_plugin_manager

EXAMPLE_SRC = Path(__file__).resolve().parents[1] / "examples" / "treadle-example-plugin" / "src"


def test_a_correct_plugin_has_no_problems() -> None:
    class Good:
        @hookimpl
        def treadle_on_epoch_end(self, epoch: int, metrics: Any) -> None:
            pass

    assert check_hookimpls(Good()) == []


def test_each_kind_of_mistake_is_reported() -> None:
    module = types.ModuleType("sloppy")

    def treadle_on_epoch_end(trainer: Any) -> None:
        pass

    @hookimpl
    def treadle_on_epoc_end(trainer: Any) -> None:
        pass

    @hookimpl
    def treadle_on_batch_end(trainer: Any, step: int) -> None:
        pass

    @hookimpl
    def treadle_on_training_end(trainer: Any, results: Any = None) -> None:
        pass

    for function in (
        treadle_on_epoch_end,
        treadle_on_epoc_end,
        treadle_on_batch_end,
        treadle_on_training_end,
    ):
        setattr(module, function.__name__, function)
    problems = "\n".join(check_hookimpls(module))
    assert "treadle_on_epoch_end is not marked with @hookimpl" in problems
    assert "treadle_on_epoc_end is marked @hookimpl but is no treadle hook" in problems
    assert "did you mean 'treadle_on_epoch_end'" in problems
    assert "treadle_on_batch_end takes step" in problems
    assert "treadle_on_training_end gives defaults to results" in problems


def test_the_example_plugin_passes_the_hook_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLE_SRC))
    plugin = importlib.import_module("treadle_example.plugin")
    assert check_hookimpls(plugin) == []


def test_isolated_managers_share_nothing() -> None:
    first = isolated_plugin_manager()
    first.registry("losses").register(
        "x",
        object.__new__(
            type(
                "L",
                (),
                {
                    "compute_loss": lambda self, logits, labels, inputs=None: None,
                    "validate_inputs": lambda self, logits, labels: None,
                },
            )
        ),
    )
    assert "x" not in isolated_plugin_manager().registry("losses")


SPECS = [
    (name, function)
    for name, function in vars(hookspecs).items()
    if name.startswith("treadle_") and callable(function)
]


@pytest.mark.parametrize(("name", "spec"), SPECS, ids=[name for name, _ in SPECS])
def test_every_hookspec_documents_itself_and_takes_no_defaults(name: str, spec: Any) -> None:
    doc = inspect.getdoc(spec) or ""
    assert "called" in doc.lower(), f"{name} must say when it is called"
    assert "return" in doc.lower() or "wrapper" in doc.lower()
    parameters = inspect.signature(spec).parameters.values()
    assert all(p.default is inspect.Parameter.empty for p in parameters)
