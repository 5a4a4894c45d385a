"""``treadle runs`` and ``treadle registry``: aligned tables, JSON, and clear errors."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

import treadle_sqlite.plugin
from treadle.cli import main
from treadle.experiments import ExperimentDB
from treadle.model_registry import ModelRegistry
from treadle.testing import isolated_plugin_manager

HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


@pytest.fixture
def location(tmp_path: Path) -> str:
    """A store with two runs and a family of three model versions."""
    path = str(tmp_path / "treadle.db")
    manager = isolated_plugin_manager(("sqlite", treadle_sqlite.plugin))
    with ExperimentDB(path, plugin_manager=manager) as db:
        base = db.log_run("base", {"learning_rate": 0.1}, notes="first try")
        wide = db.log_run("wide", {"learning_rate": 0.05})
        for epoch in range(3):
            db.log_metrics(
                base,
                {"train_loss": 1.0 / (epoch + 1), "val_loss": 1.2 / (epoch + 1)},
                epoch=epoch,
                step=10 * (epoch + 1),
            )
            db.log_metrics(
                wide,
                {"train_loss": 0.8 / (epoch + 1), "val_loss": 0.9 / (epoch + 1)},
                epoch=epoch,
                step=10 * (epoch + 1),
            )
        db.log_metric(wide, "val_loss", math.nan, epoch=3, step=40)
        db.update_run(wide, status="completed", summary={"best_val_loss": 0.3})
    with ModelRegistry(path, plugin_manager=manager) as registry:
        root = registry.register_model(
            "gpt",
            "1.0.0",
            "a.pt",
            "language_modeling",
            {"val_loss": 0.4},
            "abc",
            1,
            model_size_mb=12.0,
            memory_req_gb=0.5,
        )
        child = registry.register_model(
            "gpt",
            "1.1.0",
            "b.pt",
            "language_modeling",
            {"val_loss": 0.3, "perplexity": 1.35},
            "abd",
            2,
            root,
            model_size_mb=12.0,
            memory_req_gb=0.5,
        )
        registry.register_model(
            "gpt",
            "2.0.0",
            "c.pt",
            "language_modeling",
            {},
            "abe",
            parent_model_id=child,
            model_size_mb=12.0,
            memory_req_gb=0.5,
        )
        registry.register_model(
            "bert",
            "1.0.0",
            "d.pt",
            "classification",
            {"accuracy": 0.9},
            model_size_mb=12.0,
            memory_req_gb=0.5,
        )
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _aligned(table: str) -> None:
    lines = table.rstrip("\n").splitlines()
    rule = lines[1]
    assert set(rule) <= {"-", " "}
    starts = [
        index
        for index, char in enumerate(rule)
        if char == "-" and (index == 0 or rule[index - 1] == " ")
    ]
    for line in lines:
        for start in starts[1:]:
            assert line[start - 1] == " ", f"column not aligned at {start}: {line!r}"


# -- runs --------------------------------------------------------------------------------


def test_runs_list_prints_an_aligned_table_and_json(
    location: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = _run(capsys, "runs", "--location", location, "list")
    assert status == 0
    _aligned(out)
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["id", "name", "status"]
    assert lines[2].split()[:3] == ["2", "wide", "completed"]
    assert lines[3].split()[:3] == ["1", "base", "running"]
    status, out, _ = _run(
        capsys, "runs", "list", "--location", location, "--json", "--status", "completed"
    )
    assert [run["run_name"] for run in json.loads(out)] == ["wide"]


def test_runs_show_summarizes_each_metric(
    location: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = _run(capsys, "runs", "--location", location, "show", "2")
    assert status == 0
    assert "summary.best_val_loss  0.3" in out
    assert "completed" in out
    metric_lines = {
        line.split()[0]: line.split()[1:]
        for line in out.splitlines()
        if line.startswith(("train_loss", "val_loss"))
    }
    assert metric_lines["val_loss"] == ["nan", "0.3", "0.9", "4"], (
        "last, min, max (NaN ignored), rows"
    )
    status, out, _ = _run(capsys, "runs", "--location", location, "show", "1", "--json")
    data = json.loads(out)
    assert data["config"] == {"learning_rate": 0.1}
    assert data["notes"] == "first try"
    assert data["metrics"]["train_loss"]["count"] == 3


def test_runs_best_and_compare(location: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = _run(capsys, "runs", "--location", location, "best", "val_loss")
    assert (status, out.strip()) == (
        0,
        "run 2 wide (completed): val_loss = 0.3 at epoch 3, step 30",
    ), "stored as epoch 2, the API's count from 0; shown counted from 1"
    status, out, _ = _run(
        capsys, "runs", "--location", location, "best", "train_loss", "--mode", "max", "--json"
    )
    assert json.loads(out)["run_name"] == "base"
    status, out, _ = _run(
        capsys, "runs", "--location", location, "compare", "1", "2", "--reduce", "min"
    )
    assert status == 0
    _aligned(out)
    assert out.splitlines()[0].split() == [
        "run_id",
        "run_name",
        "status",
        "created_at",
        "train_loss",
        "val_loss",
    ]
    status, out, _ = _run(
        capsys,
        "runs",
        "--location",
        location,
        "compare",
        "1",
        "2",
        "--metrics",
        "val_loss",
        "--json",
    )
    records = json.loads(out)
    assert [record["val_loss"] for record in records] == [pytest.approx(0.4), None], "NaN: null"


def test_runs_errors_are_one_line_with_status_2(
    location: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = _run(capsys, "runs", "--location", location, "show", "99")
    assert (status, err.strip()) == (2, f"treadle runs: No run with id 99 in {location}.")
    status, _, err = _run(capsys, "runs", "--location", location, "best", "bleu")
    assert status == 2
    assert "No run logged a number for metric 'bleu'" in err
    assert '"train_loss"' in err
    missing = tmp_path / "typo.db"
    status, _, err = _run(capsys, "runs", "--location", str(missing), "list")
    assert status == 2
    assert "No experiment store at" in err
    assert not missing.exists(), "a reading command created a store"


@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="matplotlib (the 'plot' extra) is not installed")
def test_runs_plot_writes_a_png(
    location: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    status, out, _ = _run(capsys, "runs", "--location", location, "plot", "1", "2")
    assert status == 0
    png = Path(out.strip())
    assert png == Path("runs-1-2.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    status, out, _ = _run(
        capsys,
        "runs",
        "--location",
        location,
        "plot",
        "1",
        "--metrics",
        "val_loss",
        "--output",
        "plots/one.png",
    )
    assert status == 0
    assert (tmp_path / "plots" / "one.png").stat().st_size > 1000
    status, _, err = _run(capsys, "runs", "--location", location, "plot", "1", "--metrics", "bleu")
    assert status == 2
    assert "logged none of bleu; they logged: train_loss, val_loss" in err


@pytest.mark.skipif(HAS_MATPLOTLIB, reason="matplotlib is installed")
def test_runs_plot_without_matplotlib_names_the_extra(
    location: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = _run(capsys, "runs", "--location", location, "plot", "1")
    assert status == 2
    assert 'pip install "treadle[plot]"' in err


# -- registry ----------------------------------------------------------------------------


def test_registry_list_with_metrics_and_json(
    location: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = _run(
        capsys, "registry", "--location", location, "list", "--metrics", "val_loss"
    )
    assert status == 0
    _aligned(out)
    lines = out.splitlines()
    assert lines[0].split() == [
        "id",
        "name",
        "version",
        "status",
        "tags",
        "created",
        "size_mb",
        "memory_gb",
        "run",
        "parent",
        "val_loss",
    ]
    assert [line.split()[0] for line in lines[2:]] == ["4", "3", "2", "1"]
    assert lines[4].split()[-1] == "0.3"
    status, out, _ = _run(
        capsys, "registry", "list", "--location", location, "--name", "bert", "--json"
    )
    (entry,) = json.loads(out)
    assert (entry["name"], entry["metrics"], entry["tags"]) == ("bert", {"accuracy": 0.9}, [])


def test_registry_show_by_every_kind_of_reference(
    location: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for reference, model_id in [("2", 2), ("gpt:1.1.0", 2), ("gpt", 3), ("bert", 4)]:
        status, out, _ = _run(
            capsys, "registry", "--location", location, "show", reference, "--json"
        )
        assert status == 0
        assert json.loads(out)["model_id"] == model_id
    status, out, _ = _run(capsys, "registry", "--location", location, "show", "gpt:1.1.0")
    assert "model         model 2 (gpt 1.1.0)" in out
    assert "perplexity" in out
    status, _, err = _run(capsys, "registry", "--location", location, "show", ":1.0.0")
    assert status == 2
    assert "pass name=" in err


def test_registry_promote_moves_the_tag(location: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = _run(capsys, "registry", "--location", location, "promote", "1", "production")
    assert (status, out.strip()) == (0, "model 1 (gpt 1.0.0) holds 'production'")
    status, out, _ = _run(
        capsys, "registry", "--location", location, "promote", "gpt:1.1.0", "production"
    )
    assert out.strip() == "model 2 (gpt 1.1.0) holds 'production' (moved from model 1 (gpt 1.0.0))"
    status, out, _ = _run(
        capsys, "registry", "--location", location, "show", "@production", "--json"
    )
    assert json.loads(out)["model_id"] == 2


def test_registry_compare_retire_and_lineage(
    location: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = _run(capsys, "registry", "--location", location, "compare", "1", "gpt:1.1.0")
    assert status == 0
    _aligned(out)
    assert out.splitlines()[0].split() == [
        "id",
        "name",
        "version",
        "status",
        "tags",
        "created",
        "val_loss",
        "perplexity",
    ]
    assert out.splitlines()[2].split()[-1] == "nan"
    status, out, _ = _run(capsys, "registry", "--location", location, "compare", "1", "2", "--json")
    assert [record["perplexity"] for record in json.loads(out)] == [None, 1.35]
    status, out, _ = _run(capsys, "registry", "--location", location, "lineage", "2", "--json")
    data = json.loads(out)
    assert [entry["model_id"] for entry in data["ancestors"]] == [1]
    assert [entry["model_id"] for entry in data["descendants"]] == [3]
    status, out, _ = _run(capsys, "registry", "--location", location, "lineage", "1")
    assert "ancestors (nearest first):\n  none" in out
    _run(capsys, "registry", "--location", location, "promote", "3", "production")
    status, out, _ = _run(capsys, "registry", "--location", location, "retire", "@production")
    assert out.strip() == "model 3 (gpt 2.0.0) retired; tags removed: production"
    status, _, err = _run(capsys, "registry", "--location", location, "promote", "3", "production")
    assert status == 2
    assert "retired and cannot take the tag 'production'" in err
    status, out, _ = _run(capsys, "registry", "--location", location, "show", "gpt", "--json")
    assert json.loads(out)["model_id"] == 2, "the bare name skips retired versions"


def test_registry_errors_name_the_reference(
    location: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = _run(capsys, "registry", "--location", location, "show", "99")
    assert (status, err.strip()) == (2, f"treadle registry: No model with id 99 in {location}.")
    status, _, err = _run(capsys, "registry", "--location", location, "show", "@canary")
    assert "No model holds tag 'canary'" in err
    status, _, err = _run(capsys, "registry", "--location", location, "show", "llama")
    assert "Model 'llama' has no versions" in err
