"""``treadle train``: config resolution with sources, ``--plan``, the main job in a
subprocess, SIGTERM then ``--resume``, and ``verify-resume``."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.processes import default_sigint
from tests.trainer_fixtures import TINY_GPT, needs_main_job
from treadle.cli import main
from treadle.errors import ConfigError
from treadle_cli.arguments import add_config_arguments, resolve_arguments

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    *TINY_GPT,
    "--set",
    "max_train_samples=96",
    "--set",
    "max_val_samples=32",
    "--set",
    "experiment_location=null",
    "--set",
    'loggers=["jsonl"]',
]


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    return parser.parse_args(list(argv))


def test_values_resolve_defaults_then_preset_then_file_then_flags(tmp_path: Path) -> None:
    config_file = tmp_path / "run.toml"
    config_file.write_text("epochs = 7\nlearning_rate = 0.002\n", encoding="utf-8")
    resolved = resolve_arguments(
        parse("--config", str(config_file), "--set", "learning_rate=3e-4", "--epochs", "2")
    )
    assert resolved.config.epochs == 2
    assert resolved.config.learning_rate == 3e-4
    assert resolved.config.d_model == 128  # quick_prototype's
    assert resolved.sources["epochs"] == "flag --epochs"
    assert resolved.sources["learning_rate"] == "flag --set"
    assert resolved.sources["d_model"] == "preset quick_prototype"
    assert resolved.sources["weight_decay"] == "default"


def test_unknown_fields_and_bad_overrides_name_the_problem() -> None:
    with pytest.raises(ConfigError, match="lerning_rate"):
        resolve_arguments(parse("--set", "lerning_rate=0.1"))
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        resolve_arguments(parse("--set", "epochs"))
    with pytest.raises(ConfigError, match="Unknown preset 'fast'"):
        resolve_arguments(parse("--preset", "fast"))


@needs_main_job
def test_plan_prints_sources_hooks_steps_and_a_disk_estimate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(
        [
            "train",
            "--plan",
            *TINY,
            "--set",
            "gradient_accumulation_steps=2",
            "--run-dir",
            str(tmp_path / "run"),
        ]
    )
    out = capsys.readouterr().out
    assert status == 0
    assert "d_model" in out
    assert "flag --set" in out
    assert "preset quick_prototype" in out
    assert "treadle_on_batch_end" in out
    assert "optimizer steps per epoch: 3" in out  # 96 samples / 16 = 6 batches / 2
    assert "effective batch size: 16 x 2 accumulation x 1 devices = 32" in out
    assert "warmup steps" in out
    assert "MB per checkpoint" in out
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def run_cli(
    *argv: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TREADLE_DISABLE_PLUGINS": "", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "treadle", *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
        check=False,
    )


@needs_main_job
@pytest.mark.slow
def test_train_runs_the_main_job_and_prints_a_summary(tmp_path: Path) -> None:
    completed = run_cli(
        "train",
        *TINY,
        "--epochs",
        "2",
        "--set",
        f'checkpoint_dir="{tmp_path / "runs"}"',
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr
    out = completed.stdout
    assert "best epoch:" in out
    assert "best val loss:" in out
    assert "perplexity" in out
    assert "checkpoints: " in out
    run_dir = tmp_path / "runs" / "quick-prototype"
    assert list(run_dir.glob("*.pt")), "checkpoints were written into the run folder"
    assert "treadle_loggers.progress: Epoch 2/2: 6/6 batches in " in completed.stderr, (
        "progress lines go to stderr, through logging without a terminal"
    )


@needs_main_job
@pytest.mark.slow
def test_verify_resume_reports_an_exact_resume(tmp_path: Path) -> None:
    completed = run_cli(
        "verify-resume",
        *TINY,
        "--epochs",
        "2",
        "--kill-at",
        "3",
        "8",
        "--keep",
        str(tmp_path / "verify"),
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "resume is exact" in completed.stdout
    assert "losses: all" in completed.stdout
    assert "parameters: identical" in completed.stdout


@needs_main_job
@pytest.mark.slow
def test_verify_resume_leaves_nothing_in_the_temp_folder_without_keep(tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    completed = run_cli(
        "verify-resume",
        *TINY,
        "--epochs",
        "1",
        "--kill-at",
        "2",
        cwd=tmp_path,
        # torch keeps its compile cache (torchinductor_<user>) in the temp folder by design,
        # across runs: not ours to delete, so it goes elsewhere here
        env={"TMPDIR": str(temp), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")},
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "resume is exact" in completed.stdout
    assert "runs deleted (keep them: --keep DIR)" in completed.stdout
    assert list(temp.iterdir()) == []


def test_verify_resume_cleans_up_when_a_training_part_fails(tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    completed = run_cli(
        "verify-resume", "--set", "lerning_rate=0.1", cwd=tmp_path, env={"TMPDIR": str(temp)}
    )
    assert completed.returncode == 2
    assert "a training run failed" in completed.stderr
    assert "lerning_rate" in completed.stderr
    assert list(temp.iterdir()) == []


@needs_main_job
def test_verify_resume_cleans_up_on_ctrl_c(tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {
        **os.environ,
        "TREADLE_DISABLE_PLUGINS": "",
        "TMPDIR": str(temp),
        "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "treadle", "verify-resume", *TINY, "--epochs", "1"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )
    deadline = time.monotonic() + 120
    while not any(temp.glob("treadle-verify-resume-*/reference")):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the first part never started"
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert list(temp.iterdir()) == []
