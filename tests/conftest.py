"""Shared fixtures: offline environment, isolated plugin managers, fake installed plugins."""

from __future__ import annotations

import os
import re
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest_plugins = ["treadle.testing"]

# Tests never reach a hub; see shared/ENVIRONMENT.md.
os.environ.update(
    {
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "WANDB_MODE": "offline",
    }
)

ROOT = Path(__file__).resolve().parents[1]


#: The rows of the promises table (shared/RELIABILITY.md): C1..C6, J1..J9, S1..S4, D1, D2, R1,
#: R2, X1..X5, L1, L2. tests/test_reliability_rows.py checks that each has a test naming it.
RELIABILITY_ROW = re.compile(r"\b(C[1-6]|J[1-9]|S[1-4]|D[12]|R[12]|X[1-5]|L[12])\b")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A RELIABILITY row named in a test's docstring selects it too: ``pytest -k S2`` runs the
    tests whose name or docstring names S2 (``-k`` alone matches names only)."""
    for item in items:
        function = getattr(item, "function", None)
        doc = getattr(function, "__doc__", None) or ""
        item.extra_keyword_matches.update(RELIABILITY_ROW.findall(doc))


#: What treadle writes into the working directory by default (the store, run folders, bundles,
#: MLflow's default store): a test that lets one land in the checkout leaves litter behind
_DEFAULT_OUTPUTS = (
    "treadle.db",
    "experiments.db",
    "models.db",
    "jobs.db",
    "mlflow.db",
    "mlruns",
    "checkpoints",
    "exports",
    "runs",
)


@pytest.fixture(scope="session", autouse=True)
def _nothing_written_into_the_working_directory() -> Iterator[None]:
    folder = Path.cwd()
    before = {name for name in _DEFAULT_OUTPUTS if (folder / name).exists()}
    yield
    written = sorted(
        name for name in _DEFAULT_OUTPUTS if (folder / name).exists() and name not in before
    )
    assert not written, (
        f"the tests wrote {written} into {folder}: run the command of such a test with "
        f"cwd=tmp_path (or point its locations there)"
    )


@pytest.fixture(autouse=True)
def _no_env_disabled_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TREADLE_DISABLE_PLUGINS", raising=False)
    monkeypatch.delenv("TREADLE_TRACE_HOOKS", raising=False)
    monkeypatch.delenv("TREADLE_PLUGINS", raising=False)


FakeDist = Callable[..., Path]


@pytest.fixture
def fake_plugin_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDist]:
    """Write an installed-looking distribution into a folder on ``sys.path``: a module and a
    ``<name>-<version>.dist-info`` with METADATA and entry_points.txt, which
    ``importlib.metadata`` finds with its name and version (no pip, no fakes of the stdlib).

    ``fake_plugin_dist("acme-treadle", "1.2.0", {"acme": "acme_treadle"}, {"acme_treadle":
    "source"})`` returns the folder.
    """
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    monkeypatch.syspath_prepend(str(site))
    imported: list[str] = []

    def make(
        distribution: str,
        version: str,
        entry_points: dict[str, str],
        modules: dict[str, str],
    ) -> Path:
        for module, source in modules.items():
            imported.append(module)
            monkeypatch.delitem(sys.modules, module, raising=False)
            (site / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
        info = site / f"{distribution.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n", encoding="utf-8"
        )
        lines = "\n".join(f"{name} = {target}" for name, target in entry_points.items())
        (info / "entry_points.txt").write_text(f"[treadle]\n{lines}\n", encoding="utf-8")
        return site

    yield make
    for module in imported:
        sys.modules.pop(module, None)
