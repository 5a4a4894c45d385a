"""Distributed training on the CPU with gloo, 2 processes: the same parameters as one process
over the global batch (with and without accumulation, DDP and FSDP), metrics summed across
ranks, resume of a distributed run, its checkpoints in a single process, a failing rank, and
one ``torchrun`` launch of the main job."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.multiprocessing.spawn import ProcessRaisedException

from tests import distributed_workers as workers
from tests.trainer_fixtures import TinyClassifier, needs_main_job, small_config
from treadle.engine.checkpoints import CheckpointManager
from treadle.engine.distributed import (
    DistributedError,
    launch_environment,
    warn_about_launch,
)
from treadle.engine.distributed.state_dicts import by_index, by_name
from treadle.engine.optim import build_optimizer

ROOT = Path(__file__).resolve().parents[1]

#: float32 sums in another order (per rank, then all-reduced) move the last bits only
RTOL = 1e-5
ATOL = 1e-6

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="this torch build has no torch.distributed"
)


def _assert_same_state(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert sorted(got) == sorted(expected)
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, rtol=RTOL, atol=ATOL, msg=name)


def _spawn(function: Callable[..., None], *args: object) -> None:
    """``function(rank, *args)`` in WORLD_SIZE fresh processes; raises the first failure."""
    from torch.multiprocessing.spawn import start_processes

    start: Any = start_processes  # untyped in torch
    start(function, args=args, nprocs=workers.WORLD_SIZE, start_method="spawn")


@pytest.fixture(scope="module")
def distributed_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Runs every 2-process scenario once (one spawn, ≈3.5 s of start-up on an idle machine):
    DDP, DDP with 2 accumulation steps, an interrupted and resumed DDP run, FSDP."""
    out = tmp_path_factory.mktemp("distributed")
    init = f"file://{out / 'rendezvous'}"
    _spawn(workers.scenarios, init, out)
    return out


@pytest.fixture(scope="module")
def single_process(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[int, tuple[dict[str, torch.Tensor], dict[str, Any]]]:
    """One process over the global batch (WORLD_SIZE times the per-rank batch), with 1 and
    2 accumulation steps: final state and results."""
    runs = {}
    for accumulation in (1, 2):
        trainer, results = workers.run(
            tmp_path_factory.mktemp(f"single{accumulation}"),
            batch_size=workers.RANK_BATCH * workers.WORLD_SIZE,
            gradient_accumulation_steps=accumulation,
        )
        runs[accumulation] = (trainer.model.state_dict(), results)
    return runs


def _history(out: Path, name: str) -> list[dict[str, float]]:
    rows: list[dict[str, float]] = json.loads((out / f"{name}.json").read_text())["history"]
    return rows


@pytest.mark.parametrize(
    ("name", "accumulation"), [("ddp", 1), ("ddp_accumulated", 2), ("fsdp", 2)]
)
def test_two_ranks_end_with_the_parameters_of_one_process_over_the_global_batch(
    distributed_runs: Path, single_process: Any, name: str, accumulation: int
) -> None:
    expected, results = single_process[accumulation]
    initial = TinyClassifier().state_dict()
    assert any(not torch.equal(expected[key], initial[key]) for key in initial), "it trained"
    _assert_same_state(torch.load(distributed_runs / f"{name}.pt", weights_only=True), expected)
    summary = json.loads((distributed_runs / f"{name}.json").read_text())
    assert summary["global_step"] == results["global_step"]


@pytest.mark.parametrize("name", ["ddp", "fsdp"])
def test_losses_and_metrics_are_summed_over_ranks_not_averaged_per_rank(
    distributed_runs: Path, single_process: Any, name: str
) -> None:
    _, results = single_process[2 if name == "fsdp" else 1]
    for got, expected in zip(_history(distributed_runs, name), results["history"], strict=True):
        for metric in ("train_loss", "val_loss", "val_accuracy", "learning_rate"):
            assert got[metric] == pytest.approx(expected[metric], rel=1e-5), metric


@pytest.mark.parametrize(
    ("resumed", "uninterrupted"), [("resumed", "ddp"), ("fsdp_resumed", "fsdp")]
)
def test_a_distributed_run_resumed_mid_epoch_ends_like_an_uninterrupted_one(
    distributed_runs: Path, resumed: str, uninterrupted: str
) -> None:
    got_state = torch.load(distributed_runs / f"{resumed}.pt", weights_only=True)
    expected_state = torch.load(distributed_runs / f"{uninterrupted}.pt", weights_only=True)
    for key, tensor in expected_state.items():
        assert torch.equal(got_state[key], tensor), key
    for got, expected in zip(
        _history(distributed_runs, resumed), _history(distributed_runs, uninterrupted), strict=True
    ):
        assert got["train_loss"] == pytest.approx(expected["train_loss"], rel=1e-6)
        assert got["val_loss"] == pytest.approx(expected["val_loss"], rel=1e-6)


def test_evaluate_in_a_distributed_run_counts_every_sample_once(distributed_runs: Path) -> None:
    evaluated = json.loads((distributed_runs / "evaluate.json").read_text())
    last_epoch = _history(distributed_runs, "ddp_accumulated")[-1]
    assert evaluated["eval_samples"] == workers.VAL_SIZE
    assert evaluated["eval_loss"] == pytest.approx(last_epoch["val_loss"], rel=1e-6)
    assert evaluated["eval_accuracy"] == pytest.approx(last_epoch["val_accuracy"], rel=1e-6)


def test_uneven_shards_keep_fsdp_forwards_in_step_and_metrics_whole(
    distributed_runs: Path,
) -> None:
    rank0, rank1 = (json.loads((distributed_runs / f"uneven{r}.json").read_text()) for r in (0, 1))
    assert rank0["steps"] == [[0, True], [1, True], [2, True]]
    assert rank1["steps"] == [[0, True], [0, False], [0, False]], "repeats, uncounted"
    assert rank0["accuracy"] == rank1["accuracy"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("name", ["ddp", "fsdp"])
def test_a_distributed_checkpoint_loads_into_a_single_process_model_and_optimizer(
    distributed_runs: Path, tmp_path: Path, name: str
) -> None:
    summary = json.loads((distributed_runs / f"{name}.json").read_text())
    run_dir = distributed_runs / "runs" / name
    manager = CheckpointManager(run_dir)
    model = TinyClassifier()
    optimizer = build_optimizer(model, small_config(tmp_path))  # the Trainer's two groups
    files = sorted(run_dir.glob("epoch_*.pt"))
    assert files, "rank 0 wrote checkpoints"
    assert summary["best_checkpoint"] in {str(file) for file in files}
    loaded = manager.load_checkpoint(files[-1], model, optimizer)
    assert loaded.epoch == 1
    final = torch.load(distributed_runs / f"{name}.pt", weights_only=True)
    _assert_same_state(model.state_dict(), final)
    assert all("module." not in key for key in model.state_dict())
    assert len(optimizer.state) == len(list(model.parameters())), "optimizer state restored"


def test_a_single_process_checkpoint_loads_into_an_fsdp_optimizer_layout() -> None:
    """The optimizer state of a checkpoint is keyed by position, as a single process saves it;
    FSDP loads it keyed by parameter name: the two layouts convert both ways."""
    model = TinyClassifier()
    optimizer = torch.optim.AdamW(model.parameters())
    model(features=torch.randn(4, 8)).sum().backward()
    optimizer.step()
    by_position = optimizer.state_dict()
    keyed_by_name = by_name(by_position, model, optimizer)
    assert set(keyed_by_name["state"]) == {name for name, _ in model.named_parameters()}
    back = by_index(keyed_by_name)
    assert back["param_groups"] == by_position["param_groups"]
    for index, state in by_position["state"].items():
        for key, value in state.items():
            assert torch.equal(back["state"][index][key], value)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_a_rank_that_raises_fails_the_run_with_its_error_on_every_rank(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(ProcessRaisedException, match="rank 1 exploded at step 2"):
        _spawn(workers.failing, _free_port(), tmp_path)
    elapsed = time.monotonic() - started
    assert elapsed < 120, f"the failure took {elapsed:.0f} s to surface"
    assert "ValueError: rank 1 exploded at step 2" in (tmp_path / "rank1.txt").read_text()
    if (tmp_path / "rank0.txt").exists():  # unless the parent stopped rank 0 first
        survivor = (tmp_path / "rank0.txt").read_text()
        assert "DistributedError" in survivor
        assert "rank 1 failed: ValueError: rank 1 exploded at step 2" in survivor
    # the Trainer started the group from torchrun's variables, so it tore it down again
    assert (tmp_path / "rank1.initialized").read_text() == "False"


def test_launch_variables_are_read_and_checked() -> None:
    assert launch_environment({}) is None
    launch = launch_environment({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"})
    assert launch is not None
    assert (launch.rank, launch.world_size, launch.local_rank) == (3, 4, 1)
    with pytest.raises(DistributedError, match=r"RANK must lie in 0\.\.WORLD_SIZE-1"):
        launch_environment({"WORLD_SIZE": "2", "RANK": "2"})
    with pytest.raises(DistributedError, match="must be integers"):
        launch_environment({"WORLD_SIZE": "two"})


def test_a_strategy_without_a_launcher_warns_and_trains_in_one_process() -> None:
    with pytest.warns(UserWarning, match="torchrun --nproc_per_node=2"):
        warn_about_launch(None, "ddp", 2)


@pytest.mark.slow
@needs_main_job
def test_torchrun_runs_the_main_job_with_the_distributed_preset(tmp_path: Path) -> None:
    tiny = {
        "devices": 2,
        "d_model": 32,
        "num_heads": 2,
        "d_ff": 64,
        "num_layers": 1,
        "max_seq_len": 32,
        "max_train_samples": 64,
        "max_val_samples": 16,
        "experiment_location": None,
        "loggers": ["jsonl"],
        "checkpoint_dir": str(tmp_path / "checkpoints"),
    }
    overrides = [
        part for key, value in tiny.items() for part in ("--set", f"{key}={json.dumps(value)}")
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "treadle.cli", "train", "--preset", "distributed", "--epochs", "1", "--json",
        *overrides,
    ]  # fmt: skip
    finished = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    results = json.loads(finished.stdout)  # one JSON document: rank 0 alone prints
    assert results["global_step"] == 2  # 64 samples / (16 per rank x 2 ranks)
    run_dir = Path(results["run_dir"])
    assert run_dir.parent == tmp_path / "checkpoints"
    assert sorted(path.name for path in run_dir.glob("epoch_*.pt")) == ["epoch_000.pt"]
    assert len(list((tmp_path / "checkpoints").iterdir())) == 1, "both ranks chose one folder"
