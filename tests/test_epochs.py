"""One epoch convention: everything a person reads (the train summary, ``runs show``,
``runs best``, plots, log lines) counts epochs from 1; the API, the stores and ``--json`` count
from 0, so the epoch a person reads is ``results["best_epoch"] + 1``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.test_cli_train import run_cli
from tests.trainer_fixtures import TINY_GPT, needs_main_job
from treadle.experiments import ExperimentDB
from treadle_cli.commands.runs import _x_axis
from treadle_cli.output import format_epoch

TINY = [
    *TINY_GPT,
    "--set",
    "max_train_samples=96",
    "--set",
    "max_val_samples=32",
    "--set",
    'loggers=["console"]',
]


def test_an_epoch_reads_counted_from_one() -> None:
    assert format_epoch(0, 2) == "1 of 2"
    assert format_epoch(2) == "3"
    assert format_epoch(1.0, 4) == "2 of 4", "a stored float epoch"
    assert format_epoch(None, 2) == "-"


@needs_main_job
@pytest.mark.slow
def test_the_summary_runs_show_runs_best_plots_and_logs_agree_on_the_best_epoch(
    tmp_path: Path,
) -> None:
    location = tmp_path / "runs.db"
    trained = run_cli(
        "train",
        *TINY,
        "--set",
        f'experiment_location="{location}"',
        "--set",
        f'checkpoint_dir="{tmp_path / "checkpoints"}"',
        "--epochs",
        "2",
        cwd=tmp_path,
    )
    assert trained.returncode == 0, trained.stderr
    shown_json = run_cli("runs", "--location", str(location), "show", "1", "--json", cwd=tmp_path)
    assert shown_json.returncode == 0, shown_json.stderr
    stored = json.loads(shown_json.stdout)
    best = stored["summary"]["best_epoch"]  # the API's results["best_epoch"], as stored
    assert best in (0, 1)
    person = best + 1

    assert f"best epoch: {person} of 2" in trained.stdout.splitlines()

    shown = run_cli("runs", "--location", str(location), "show", "1", cwd=tmp_path)
    assert re.search(rf"^summary\.best_epoch +{person} of 2$", shown.stdout, re.MULTILINE), (
        shown.stdout
    )

    best_run = run_cli("runs", "--location", str(location), "best", "val_loss", cwd=tmp_path)
    assert f" at epoch {person}, " in best_run.stdout, best_run.stdout

    with ExperimentDB(str(location)) as db:
        rows = [row for row in db.metric_rows([1], names=["val_loss"])]
    xs, axis = _x_axis(rows)
    assert (axis, xs) == ("epoch", [1, 2]), "the plot's epoch axis runs 1..2"
    assert [row.epoch for row in rows] == [0, 1], "the store keeps the API's count"

    log = trained.stderr
    assert "epoch=" not in log, "no epoch counted from 0 in the console lines"
    console = re.findall(r"treadle_loggers\.console: epoch (\d+)/2 \(step", log)
    assert console == ["1", "2"], log
    progress = re.findall(r"treadle_loggers\.progress: Epoch (\d+)/2: \d+/\d+ batches", log)
    assert progress == ["1", "2"], log
