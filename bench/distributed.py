"""DDP step time with 2 CPU processes (gloo) against one process.

    .venv/bin/python bench/distributed.py [--steps 30] [--batch-size 64] [--epochs 4]

Each contestant runs the Trainer in a fresh spawned process (one thread per process, as
torchrun sets OMP_NUM_THREADS=1), on a synthetic classification Dataset that the Trainer
batches and, under DDP, shards. The step time is an epoch's training time over its optimizer
steps, median over the epochs after the first (warm-up: the first AdamW loads
torch._dynamo). Contestants:

- ``1 proc, batch B``: one process, the per-rank batch: the step DDP repeats on each rank;
- ``1 proc, batch 2B``: one process over DDP's global batch;
- ``1 proc x2 threads, batch 2B``: the same with both cores for intra-op threads;
- ``DDP 2 procs, batch B each``: two ranks, global batch 2B;
- ``hand DDP loop, B each``: the same two ranks running a plain PyTorch DDP loop (forward,
  backward, clipping, AdamW): what the Trainer adds to a distributed step.

Two models: a wide MLP (2.4 M parameters: gradient all-reduce matters) and a tiny one
(per-step overhead dominates). The machine is shared and noisy: read the ratios, rerun before
believing small differences.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import attrs
import torch
import torch.distributed as dist
from torch.multiprocessing.spawn import start_processes

from treadle.config import TrainingConfig
from treadle.engine.trainer import Trainer
from treadle.task import TaskSpec

WIDTHS = {"wide_mlp": (256, 1024, 10), "tiny_mlp": (8, 16, 2)}


class Features(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    def __init__(self, size: int, inputs: int, classes: int) -> None:
        generator = torch.Generator().manual_seed(0)
        self.features = torch.randn(size, inputs, generator=generator)
        self.labels = torch.randint(0, classes, (size,), generator=generator)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"features": self.features[index], "labels": self.labels[index]}


class MLP(torch.nn.Module):
    def __init__(self, inputs: int, hidden: int, classes: int) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(inputs, hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, classes),
        )

    def forward(self, features: torch.Tensor, **unused: Any) -> torch.Tensor:
        logits: torch.Tensor = self.layers(features)
        return logits


def contestant(rank: int, spec: dict[str, Any]) -> None:
    """One process of one contestant: trains, and rank 0 writes the step times."""
    import treadle_losses.plugin
    import treadle_metrics.plugin
    from treadle.testing import isolated_plugin_manager

    torch.set_num_threads(spec["threads"])
    if spec["world_size"] > 1:
        dist.init_process_group(
            "gloo", init_method=spec["init"], rank=rank, world_size=spec["world_size"]
        )
    try:
        manager = isolated_plugin_manager(
            ("losses", treadle_losses.plugin), ("metrics", treadle_metrics.plugin)
        )
        manager.registry("collators").register("stack", torch.utils.data.default_collate)
        inputs, hidden, classes = WIDTHS[spec["model"]]
        task = attrs.evolve(
            TaskSpec.classification("bench", num_classes=classes, modality="tabular"),
            collator="stack",
        )
        config = TrainingConfig(
            epochs=spec["epochs"],
            batch_size=spec["batch_size"],
            learning_rate=1e-3,
            checkpoint_dir=str(Path(spec["out"]) / f"run-{spec['name']}"),
            loggers=(),
            experiment_location=None,
            device="cpu",
            early_stopping_patience=None,
            keep_last_n=1,
            keep_best_k=0,
            save_every_n_epochs=spec["epochs"],
        )
        torch.manual_seed(0)
        model = MLP(inputs, hidden, classes)
        data = Features(spec["samples"], inputs, classes)
        trainer = Trainer(model, None, config, task, device="cpu", plugin_manager=manager)
        results = trainer.train(data)
        if rank == 0:
            steps = results["global_step"] // spec["epochs"]
            times = [row["epoch_time"] / steps for row in results["history"][1:]]
            (Path(spec["out"]) / f"{spec['name']}.json").write_text(
                json.dumps({"step_seconds": times, "steps": steps})
            )
    finally:
        if spec["world_size"] > 1:
            dist.destroy_process_group()


def hand_loop(rank: int, spec: dict[str, Any]) -> None:
    """The plain PyTorch DDP loop over the same shards and batches."""
    from torch.utils.data import DataLoader, DistributedSampler

    torch.set_num_threads(spec["threads"])
    dist.init_process_group("gloo", init_method=spec["init"], rank=rank, world_size=2)
    try:
        inputs, hidden, classes = WIDTHS[spec["model"]]
        torch.manual_seed(0)
        model = MLP(inputs, hidden, classes)
        wrapped = torch.nn.parallel.DistributedDataParallel(model)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        data = Features(spec["samples"], inputs, classes)
        sampler: DistributedSampler[int] = DistributedSampler(data, seed=0)
        loader = DataLoader(data, batch_size=spec["batch_size"], sampler=sampler)
        times = []
        for epoch in range(spec["epochs"]):
            sampler.set_epoch(epoch)
            started = time.perf_counter()
            for batch in loader:
                logits = wrapped(batch["features"])
                loss = torch.nn.functional.cross_entropy(logits, batch["labels"])
                loss.backward()  # type: ignore[no-untyped-call]
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            times.append((time.perf_counter() - started) / len(loader))
        if rank == 0:
            (Path(spec["out"]) / f"{spec['name']}.json").write_text(
                json.dumps({"step_seconds": times[1:], "steps": len(loader)})
            )
    finally:
        dist.destroy_process_group()


def measure(name: str, model: str, out: Path, **spec: Any) -> float:
    spec = {"name": name, "model": model, "out": str(out), **spec}
    spec["init"] = f"file://{out / (name + '.rendezvous')}"
    start: Any = start_processes  # untyped in torch
    function = hand_loop if spec.get("hand") else contestant
    start(function, args=(spec,), nprocs=spec["world_size"], start_method="spawn")
    data = json.loads((out / f"{name}.json").read_text())
    return float(statistics.median(data["step_seconds"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per epoch")
    parser.add_argument("--batch-size", type=int, default=64, help="per-rank batch B")
    parser.add_argument("--epochs", type=int, default=4, help="epochs; the first is warm-up")
    args = parser.parse_args()
    batch = args.batch_size
    samples = args.steps * 2 * batch
    common = {"epochs": args.epochs, "samples": samples}
    print(f"{args.steps} steps per epoch, B={batch}, median of {args.epochs - 1} epochs")
    print(f"{'model':10} {'contestant':28} {'step ms':>9} {'samples/s':>10}")
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        for model in WIDTHS:
            timings = {
                "1 proc, batch B": measure(
                    f"{model}-single-B", model, out, world_size=1, threads=1,
                    batch_size=batch, **{**common, "samples": samples // 2},
                ),
                "1 proc, batch 2B": measure(
                    f"{model}-single-2B", model, out, world_size=1, threads=1,
                    batch_size=2 * batch, **common,
                ),
                "1 proc x2 threads, batch 2B": measure(
                    f"{model}-threads-2B", model, out, world_size=1, threads=2,
                    batch_size=2 * batch, **common,
                ),
                "DDP 2 procs, batch B each": measure(
                    f"{model}-ddp", model, out, world_size=2, threads=1,
                    batch_size=batch, **common,
                ),
                "hand DDP loop, B each": measure(
                    f"{model}-hand", model, out, world_size=2, threads=1,
                    batch_size=batch, hand=True, **common,
                ),
            }  # fmt: skip
            global_batch = {
                "1 proc, batch B": batch,
                "1 proc, batch 2B": 2 * batch,
                "1 proc x2 threads, batch 2B": 2 * batch,
                "DDP 2 procs, batch B each": 2 * batch,
                "hand DDP loop, B each": 2 * batch,
            }
            for name, seconds in timings.items():
                rate = global_batch[name] / seconds
                print(f"{model:10} {name:28} {seconds * 1e3:9.2f} {rate:10.0f}")
            ddp = timings["DDP 2 procs, batch B each"]
            print(
                f"{model:10} DDP step / 1-proc step at batch B: "
                f"{ddp / timings['1 proc, batch B']:.2f}x; "
                f"speed-up over 1 proc at the global batch: "
                f"{timings['1 proc, batch 2B'] / ddp:.2f}x (1 thread), "
                f"{timings['1 proc x2 threads, batch 2B'] / ddp:.2f}x (2 threads); "
                f"Trainer DDP step / hand DDP step: {ddp / timings['hand DDP loop, B each']:.2f}x"
            )


if __name__ == "__main__":
    main()
