"""What each process of the distributed tests runs: module-level functions, so that
``torch.multiprocessing`` can start them with ``spawn``."""

from __future__ import annotations

import json
import os
import traceback
from pathlib import Path
from typing import Any

import attrs
import torch
import torch.distributed as dist

from tests.trainer_fixtures import (
    Blobs,
    TinyClassifier,
    classification_task,
    engine_plugin_manager,
    small_config,
)
from treadle import hookimpl
from treadle.control import TrainerControl
from treadle.engine.trainer import Trainer
from treadle.plugins import PluginManager
from treadle.protocols import TrainerView
from treadle.task import TaskSpec

#: the per-rank batch; the single-process reference uses WORLD_SIZE times it
RANK_BATCH = 8
WORLD_SIZE = 2
TRAIN_SIZE = 64
VAL_SIZE = 32


def stacked_task(manager: PluginManager) -> TaskSpec:
    """The blobs task, batched by ``default_collate`` (registered as ``stack``)."""
    manager.registry("collators").register("stack", torch.utils.data.default_collate)
    return attrs.evolve(classification_task(), collator="stack")


def run(
    checkpoint_dir: Path,
    *,
    batch_size: int,
    plugins: tuple[tuple[str, object], ...] = (),
    **overrides: Any,
) -> tuple[Trainer, dict[str, Any]]:
    """Train a TinyClassifier on the blobs (as Datasets) with the test settings."""
    manager = engine_plugin_manager(*plugins)
    task = stacked_task(manager)
    values: dict[str, Any] = {"epochs": 2, "batch_size": batch_size, **overrides}
    config = small_config(checkpoint_dir, **values)
    torch.manual_seed(0)
    trainer = Trainer(TinyClassifier(), None, config, task, device="cpu", plugin_manager=manager)
    results = trainer.train(Blobs(TRAIN_SIZE, seed=0), Blobs(VAL_SIZE, seed=1))
    return trainer, results


def full_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's whole state on rank 0 (gathered from the shards under FSDP)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state: dict[str, Any] = get_model_state_dict(model, options=options)
    return state


def keep(out: Path, name: str, trainer: Trainer, results: dict[str, Any]) -> None:
    state = full_state(trainer.model)  # a collective: every rank calls it
    if dist.get_rank() == 0:
        torch.save(state, out / f"{name}.pt")
        history = [{k: float(v) for k, v in row.items()} for row in results["history"]]
        summary = {
            "history": history,
            "global_step": results["global_step"],
            "best_checkpoint": results["best_checkpoint"],
            "stop_reason": results["stop_reason"],
        }
        (out / f"{name}.json").write_text(json.dumps(summary), encoding="utf-8")


class StopAndSave:
    """Asks for a checkpoint and a stop after optimizer step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    @hookimpl
    def treadle_on_batch_end(
        self, trainer: TrainerView, batch_index: int, loss: torch.Tensor, control: TrainerControl
    ) -> None:
        if trainer.global_step + 1 == self.step:
            control.should_save = True
            control.request_stop("test interruption")


def scenarios(rank: int, init_method: str, out: Path) -> None:
    """Every run of the equivalence, resume and FSDP tests, in one process group."""
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=WORLD_SIZE)
    try:
        root = out / "runs"
        for name, accumulation in (("ddp", 1), ("ddp_accumulated", 2)):
            trainer, results = run(
                root / name, batch_size=RANK_BATCH, gradient_accumulation_steps=accumulation
            )
            keep(out, name, trainer, results)
        evaluated = trainer.evaluate(Blobs(VAL_SIZE, seed=1))
        if rank == 0:
            (out / "evaluate.json").write_text(json.dumps(evaluated), encoding="utf-8")
        # interrupted mid-epoch 1 at step 6 (4 steps per epoch), then resumed with 'auto'
        run(root / "resumed", batch_size=RANK_BATCH, plugins=(("stop", StopAndSave(6)),))
        trainer, results = run(root / "resumed", batch_size=RANK_BATCH, resume="auto")
        keep(out, "resumed", trainer, results)
        fsdp: dict[str, Any] = {
            "strategy": "fsdp",
            "devices": WORLD_SIZE,
            "gradient_accumulation_steps": 2,
        }
        trainer, results = run(root / "fsdp", batch_size=RANK_BATCH, **fsdp)
        keep(out, "fsdp", trainer, results)
        # 2 steps per epoch: interrupted after step 3, mid-epoch 1
        run(
            root / "fsdp_resumed",
            batch_size=RANK_BATCH,
            plugins=(("stop", StopAndSave(3)),),
            **fsdp,
        )
        trainer, results = run(root / "fsdp_resumed", batch_size=RANK_BATCH, resume="auto", **fsdp)
        keep(out, "fsdp_resumed", trainer, results)
        uneven_shards(rank, out)
    finally:
        dist.destroy_process_group()


def uneven_shards(rank: int, out: Path) -> None:
    """Rank 1 sees fewer validation batches (none at all for the metric): the lockstep
    iteration and the metric-state sum cope."""
    from treadle.engine.distributed import DistributedContext
    from treadle_metrics.classification import Accuracy

    context = DistributedContext.current(torch.device("cpu"))
    assert context is not None
    steps = list(context.lockstep(range(3) if rank == 0 else range(1)))
    metric = Accuracy()
    if rank == 0:
        metric.update(torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]]), torch.tensor([0, 1, 1]))
    context.sync_metrics([metric])
    found = {"steps": [[int(batch), counts] for batch, counts in steps], **metric.compute()}
    (out / f"uneven{rank}.json").write_text(json.dumps(found), encoding="utf-8")


class Explode:
    """Raises on one rank at one step."""

    def __init__(self, rank: int, step: int) -> None:
        self.rank = rank
        self.step = step

    @hookimpl
    def treadle_on_batch_end(
        self, trainer: TrainerView, batch_index: int, loss: torch.Tensor, control: TrainerControl
    ) -> None:
        if dist.get_rank() == self.rank and trainer.global_step == self.step:
            msg = f"rank {self.rank} exploded at step {self.step}"
            raise ValueError(msg)


def failing(rank: int, port: int, out: Path) -> None:
    """torchrun's environment, set by hand: the Trainer starts the process group itself;
    rank 1 raises at step 2. Each rank writes what it raised before raising it."""
    os.environ.update(
        {
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(WORLD_SIZE),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
    )
    try:
        run(out / "run", batch_size=RANK_BATCH, plugins=(("explode", Explode(1, 2)),))
    except BaseException as error:
        text = "".join(traceback.format_exception_only(error))
        (out / f"rank{rank}.txt").write_text(text, encoding="utf-8")
        raise
    finally:
        (out / f"rank{rank}.initialized").write_text(str(dist.is_initialized()))
