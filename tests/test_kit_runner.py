"""One entry point for a plugin author's CI: ``python -m treadle.testing DIST`` and
``pytest --treadle-conformance`` find every name a distribution registers and run its kind's
check, with a table per name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from treadle.plugins import make_plugin_manager
from treadle.registry import KINDS
from treadle.testing.runner import find_settings, run_conformance

from .conftest import FakeDist

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]

# A third party's plugin: a good loss, a metric whose state does not add up over ranks, a
# storage scheme (no location declared) and a command.
ACME = """
from treadle import hookimpl


@hookimpl
def treadle_register_losses(register):
    register("acme_ce", "tests.kit_fixtures:GoodLoss")


@hookimpl
def treadle_register_metrics(register):
    register("acme_accuracy", "tests.kit_fixtures:FloatSums")


@hookimpl
def treadle_register_storage(register):
    from treadle_sqlite.backend import SQLiteBackend

    register("acme", SQLiteBackend())


@hookimpl
def treadle_register_commands(register):
    from tests.kit_fixtures import GoodCommand

    register("acme-greet", GoodCommand())
"""


@pytest.fixture
def acme_site(fake_plugin_dist: FakeDist) -> Path:
    return fake_plugin_dist("acme-kit", "1.0.0", {"acme": "acme_kit"}, {"acme_kit": ACME})


def _environment(site: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT), *sys.path])}


def test_the_runner_checks_every_name_the_distribution_registers(acme_site: Path) -> None:
    run = run_conformance(
        "acme-kit",
        settings={"commands": {"acme-greet": {"argv": ["--name", "kit"]}}},
        plugin_manager=make_plugin_manager(),
    )

    outcomes = {result.case.id: result.outcome for result in run.results}
    assert outcomes == {
        "losses:acme_ce": "passed",
        "metrics:acme_accuracy": "failed",
        "storage:acme": "skipped",
        "commands:acme-greet": "passed",
    }
    assert not run.ok
    by_id = {result.case.id: result for result in run.results}
    assert "fails 'shards add up'" in by_id["metrics:acme_accuracy"].message
    assert "location" in by_id["storage:acme"].message
    assert by_id["losses:acme_ce"].case.provenance == "acme: acme-kit 1.0.0"
    table = run.table().splitlines()
    assert table[0].split() == ["kind", "name", "result", "seconds", "rules"]
    assert any(line.split()[:3] == ["losses", "acme_ce", "passed"] for line in table)
    assert table[-1] == "2 passed, 1 failed, 1 skipped"


def test_a_declared_location_runs_the_store_checks(acme_site: Path, tmp_path: Path) -> None:
    run = run_conformance(
        "acme-kit",
        settings={"storage": {"acme": {"location": str(tmp_path / "store.db")}}},
        plugin_manager=make_plugin_manager(),
        kinds=["storage"],
    )
    (result,) = run.results
    assert result.outcome == "passed", result.message
    assert result.report is not None
    from treadle.testing.stores import STORE_CHECKS

    assert len(result.report.passed) == len(STORE_CHECKS)


def test_an_uninstalled_distribution_says_how_to_install_it() -> None:
    with pytest.raises(ValueError, match=r"pip install -e \."):
        run_conformance("acme-not-installed", settings={})


@pytest.mark.slow  # a fresh interpreter importing torch
def test_python_m_treadle_testing_prints_the_table_and_exits_1_on_a_broken_rule(
    acme_site: Path,
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "treadle.testing", "acme-kit", "--kind", "metrics", "--json"],
        capture_output=True,
        text=True,
        env=_environment(acme_site),
        timeout=300,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    (record,) = json.loads(done.stdout)
    assert (record["kind"], record["name"], record["outcome"]) == (
        "metrics",
        "acme_accuracy",
        "failed",
    )
    assert "shards add up" in record["message"]


def test_settings_come_from_the_project_s_pyproject(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        textwrap.dedent(
            """
            [project]
            name = "acme-kit"

            [tool.treadle.conformance.losses.acme_ce]
            layout = "classification"
            """
        )
    )
    assert find_settings("acme-kit", tmp_path) == {
        "losses": {"acme_ce": {"layout": "classification"}}
    }


@pytest.mark.slow  # a pytest session in a fresh interpreter
def test_pytest_treadle_conformance_adds_a_test_per_name_and_a_table(
    acme_site: Path, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyprojecttoml(
        """
        [project]
        name = "acme-kit"

        [tool.treadle.conformance.commands.acme-greet]
        argv = ["--name", "kit"]
        """
    )
    pytester.makeconftest('pytest_plugins = ["treadle.testing"]')
    monkeypatch.setenv("PYTHONPATH", _environment(acme_site)["PYTHONPATH"])

    result = pytester.runpytest_subprocess("--treadle-conformance", "-v", "-p", "no:xdist")

    result.assert_outcomes(passed=2, failed=1, skipped=1)
    result.stdout.fnmatch_lines(
        [
            "*treadle-conformance::losses:acme_ce PASSED*",
            "*treadle-conformance::metrics:acme_accuracy FAILED*",
            "*fails 'shards add up'*",
            "*treadle conformance*",
            "*commands*acme-greet*passed*4 passed*",
            "2 passed, 1 failed, 1 skipped",
        ]
    )


# -- treadle's own built-ins pass the kit they give third parties -----------------------------


def jsonl_steps(run_dir: Path) -> list[int]:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["step"] for line in lines]


def experiment_steps(run_dir: Path) -> list[int]:
    from treadle.experiments import ExperimentDB

    with ExperimentDB(run_dir / "experiments.db") as db:
        (run,) = db.find_runs(run_dir=str(run_dir))
        rows = db.get_metrics(run.run_id, names=["train/batch_loss"])
        return [int(step) for step in rows["step"]]


def _built_in_settings() -> dict[str, Any]:
    from treadle.config import TrainingConfigBuilder
    from treadle.task import TaskSpec

    training = {"training_config": TrainingConfigBuilder.quick_prototype().build().to_dict()}
    refused = {"training_config": {"batch_size": 0}}
    return {
        "collators": {
            "sequence_to_sequence": {
                "samples": [
                    {"input_ids": [5, 6, 7], "target_ids": [8, 9]},
                    {"input_ids": [4], "target_ids": [3, 2, 1]},
                ],
                "task": TaskSpec.sequence_to_sequence().to_dict(),
            }
        },
        "models": {
            # the hf factory builds what plugins.options.hf names: a two-layer GPT-2
            "hf": {
                "config": {
                    "plugins": {
                        "options": {
                            "hf": {
                                "model": "gpt2",
                                "config": {"n_layer": 2, "n_embd": 32, "n_head": 2},
                            }
                        }
                    }
                },
                "task": TaskSpec.language_modeling("kit", max_seq_len=16).to_dict(),
            }
        },
        "loggers": {
            "jsonl": {"read_steps": "tests.test_kit_runner:jsonl_steps"},
            "experiment": {"read_steps": "tests.test_kit_runner:experiment_steps"},
        },
        "storage": {"sqlite": {"location": "sqlite:///{tmp}/store.db"}},
        "job_types": {
            "training": {"config": training, "bad_config": refused, "run": False},
            "retraining": {"config": training, "bad_config": refused, "run": False},
            "evaluation": {
                "config": {"model": "tiny:1.0.0"},
                "bad_config": {"model": "tiny:1.0.0", "overrides": [1]},
                "run": False,
            },
            "export": {
                "config": {"model": 1, "formats": ["onnx"]},
                "bad_config": {"model": 1, "formats": "onnx"},
                "run": False,
            },
        },
        "commands": {"plugins": {"argv": ["--json"]}},
    }


@pytest.mark.slow  # every built-in model, data set and command: about 30 s
def test_treadle_s_own_built_ins_pass_the_kit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kinds = [kind for kind in KINDS if kind != "exporters"]  # test_export_formats checks them
    run = run_conformance("treadle", settings=_built_in_settings(), workdir=tmp_path, kinds=kinds)

    failed = [f"{r.case.id}: {r.message}" for r in run.results if r.outcome == "failed"]
    assert run.ok, "\n".join(failed)
    outcomes = {result.case.id: result.outcome for result in run.results}
    assert {case for case, outcome in outcomes.items() if outcome == "skipped"} == {
        "storage:postgres",  # needs a server: tests/test_postgres_storage.py runs the checks
        "storage:postgresql",
    }
    resumed = {
        result.case.name: result.report.details["steps"]
        for result in run.results
        if result.case.kind == "loggers" and result.report and "steps" in result.report.details
    }
    assert resumed == {"jsonl": list(range(1, 9)), "experiment": list(range(1, 9))}
