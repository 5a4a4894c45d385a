"""A lean ``pip install treadle`` (no onnx, onnxscript, pandas or croniter) imports, trains and
runs the command line; a feature whose extra is missing names the exact pip command.

Each check runs in a fresh interpreter whose import system refuses those packages, as an
install without the extras would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.trainer_fixtures import needs_main_job

#: What a lean install lacks: the extras onnx, pandas and jobs.
EXTRAS_ONLY = ("onnx", "onnxscript", "pandas", "croniter")

BLOCK = textwrap.dedent(
    f"""
    import importlib.abc, importlib.machinery, sys

    class Absent(importlib.abc.Loader):
        def create_module(self, spec):
            raise ModuleNotFoundError(f"No module named {{spec.name!r}}", name=spec.name)

        def exec_module(self, module):
            raise AssertionError("unreachable")

    class LeanInstall(importlib.abc.MetaPathFinder):
        # a spec whose loading fails: torch._dynamo probes with find_spec and must not fail
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in {EXTRAS_ONLY!r}:
                return importlib.machinery.ModuleSpec(name, Absent())
            return None

    sys.meta_path.insert(0, LeanInstall())
    """
)


def lean_python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "TREADLE_DISABLE_PLUGINS": ""}
    return subprocess.run(
        [sys.executable, "-c", BLOCK + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=environment,
        timeout=600,
        check=False,
    )


def test_the_blocker_really_blocks(tmp_path: Path) -> None:
    result = lean_python("import pandas", tmp_path)
    assert result.returncode != 0
    assert "No module named 'pandas'" in result.stderr


@needs_main_job
@pytest.mark.slow
def test_import_training_and_the_cli_work_without_the_extras(tmp_path: Path) -> None:
    result = lean_python(
        """
        import json, sys
        import treadle
        from treadle.cli import main
        status = main([
            "train", "--set", "epochs=1", "--set", "max_train_samples=32",
            "--set", "max_val_samples=8", "--set", "d_model=32", "--set", "num_layers=1",
            "--set", "num_heads=2", "--set", "d_ff=64", "--json",
        ])
        listed = main(["runs", "list"])
        plugins = main(["plugins"])
        print(json.dumps({"train": status, "runs": listed, "plugins": plugins}))
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    statuses = json.loads(result.stdout.strip().splitlines()[-1])
    assert statuses == {"train": 0, "runs": 0, "plugins": 0}
    assert list((tmp_path / "checkpoints").rglob("*.pt"))


@pytest.mark.parametrize(
    ("code", "command"),
    [
        (
            "from treadle.experiments import ExperimentDB\nExperimentDB('x.db').list_runs()",
            'pip install "treadle[pandas]"',
        ),
        (
            "from treadle.engine.metrics import MetricsEngine\nMetricsEngine().get_summary()",
            'pip install "treadle[pandas]"',
        ),
        (
            "from treadle.model_registry import ModelRegistry\nModelRegistry('x.db').list_models()",
            'pip install "treadle[pandas]"',
        ),
        (
            "from treadle.jobs.cron import CronSchedule\nCronSchedule('0 2 * * *')",
            'pip install "treadle[jobs]"',
        ),
    ],
    ids=["experiments", "metrics", "registry", "cron"],
)
def test_a_missing_extra_names_the_pip_command(tmp_path: Path, code: str, command: str) -> None:
    result = lean_python(code, tmp_path)
    assert result.returncode != 0
    assert "MissingDependencyError" in result.stderr
    assert command in result.stderr


def test_the_onnx_format_names_its_extra(tmp_path: Path) -> None:
    result = lean_python(
        """
        from pathlib import Path

        import torch
        from treadle_onnx.exporter import OnnxExporter
        try:
            OnnxExporter().export(
                torch.nn.Linear(2, 2), (torch.ones(1, 2),), Path("m.onnx"), input_names=["x"],
                output_names=["y"], dynamic_axes={}, metadata={},
            )
        except Exception as error:
            print(type(error).__name__, error)
        """,
        tmp_path,
    )
    assert 'pip install "treadle[onnx]"' in result.stdout, result.stderr[-2000:]
