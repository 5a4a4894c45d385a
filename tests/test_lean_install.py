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

from tests.conftest import ROOT
from tests.trainer_fixtures import needs_main_job

#: What a lean install lacks: the extras onnx, pandas and jobs.
EXTRAS_ONLY = ("onnx", "onnxscript", "pandas", "croniter")


def blocker(blocked: tuple[str, ...]) -> str:
    """Python code that makes ``blocked`` packages unimportable, as if not installed."""
    return textwrap.dedent(
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
            if name.partition(".")[0] in {blocked!r}:
                return importlib.machinery.ModuleSpec(name, Absent())
            return None

    sys.meta_path.insert(0, LeanInstall())
    """
    )


BLOCK = blocker(EXTRAS_ONLY)


def lean_python(code: str, cwd: Path, block: str = BLOCK) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "TREADLE_DISABLE_PLUGINS": ""}
    return subprocess.run(
        [sys.executable, "-c", block + textwrap.dedent(code)],
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
        from treadle.export import ExportRequest
        from treadle_onnx.exporter import OnnxExporter
        try:
            OnnxExporter().export(
                ExportRequest(
                    model=torch.nn.Linear(2, 2), example_inputs=(torch.ones(1, 2),),
                    path=Path("m.onnx"), input_names=("x",), output_names=("y",),
                    dynamic_axes={},
                )
            )
        except Exception as error:
            print(type(error).__name__, error)
        """,
        tmp_path,
    )
    assert 'pip install "treadle[onnx]"' in result.stdout, result.stderr[-2000:]


@needs_main_job
@pytest.mark.parametrize(
    ("logger", "package"), [("tensorboard", "tensorboard"), ("mlflow", "mlflow")]
)
def test_a_logger_without_its_package_fails_at_run_start_with_the_pip_command(
    tmp_path: Path, logger: str, package: str
) -> None:
    result = lean_python(
        f"""
        import torch
        from tests.trainer_fixtures import (
            TinyClassifier, classification_task, engine_plugin_manager, loaders, small_config)
        from treadle import hookimpl
        from treadle.config.training import PluginsConfig
        from treadle.engine.trainer import Trainer
        import treadle_{logger}.plugin

        class Steps:
            count = 0

            @hookimpl
            def treadle_on_batch_end(self):
                Steps.count += 1

        config = small_config(
            "run", plugins=PluginsConfig(options={{"{logger}": {{}}}}))
        manager = engine_plugin_manager(("{logger}", treadle_{logger}.plugin), ("steps", Steps()))
        try:
            Trainer(TinyClassifier(), None, config, classification_task(), device="cpu",
                    plugin_manager=manager).train(*loaders())
        except Exception as error:
            print(type(error).__name__, "|", error, "| steps:", Steps.count)
        """,
        tmp_path,
        block=blocker((package,)) + f"sys.path.insert(0, {str(ROOT)!r})\n",
    )
    assert f'pip install "treadle[{logger}]"' in result.stdout, result.stderr[-2000:]
    assert result.stdout.startswith("PluginLoadError")
    assert result.stdout.strip().endswith("steps: 0")  # before the first step


@pytest.mark.parametrize(
    ("package", "options", "command"),
    [
        ("transformers", {"model": "gpt2"}, 'pip install "treadle[hf]"'),
        (
            "peft",
            {"model": "gpt2", "config": {"n_layer": 1}, "peft": {"method": "lora"}},
            'pip install "treadle[peft]"',
        ),
    ],
)
def test_hf_models_without_their_packages_name_the_pip_command(
    tmp_path: Path, package: str, options: dict[str, object], command: str
) -> None:
    result = lean_python(
        f"""
        from treadle.config import PluginsConfig, TrainingConfig
        from treadle.task import TaskSpec
        from treadle_hf.models import build_hf_model

        config = TrainingConfig(
            vocab_size=64, plugins=PluginsConfig(options={{"hf": {options!r}}}))
        build_hf_model(config, TaskSpec.language_modeling())
        """,
        tmp_path,
        block=blocker((package,)),
    )
    assert "MissingDependencyError" in result.stderr
    assert command in result.stderr
