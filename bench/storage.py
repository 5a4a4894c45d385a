"""The stores' speed: the model registry at 10,000 models, and logging metrics while training.

    .venv/bin/python bench/storage.py [--models 10000] [--repeats 5] [--threads 1] [--skip-trainer]

1. Registry: register ``--models`` versions (4 metrics each, every 100th tagged), then time
   ``list_models()``, ``list_models(limit=50)``, ``compare_models`` of 10, 1,000 and every
   model, and ``get_model(tag=...)``.
2. Metric throughput: ``ExperimentDB.log_metric`` (one transaction per call) and the
   ``experiment`` logger (buffered; written at each "epoch" end), in rows per second.
3. Training-loop overhead: a tiny MLP (the worst case: ~1 ms steps) trained by a hand-written
   loop that reads the loss each step, with and without the ``experiment`` logger logging two
   metrics every step and an epoch row every 100 steps; then the Trainer with
   ``log_every_n_steps=1``, with and without an experiment store. Runs alternate after a
   warm-up; medians and their ratio are printed. Those ratios drown in the noise of a shared
   machine, so each run also counts the thread CPU time spent inside the logger's calls (SQLite
   writes in the calling thread): that share of the loop's CPU is the figure to read
   (target: under 2%).

The machine may be shared and noisy: rerun before believing small differences.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from treadle.experiments import ExperimentDB
from treadle.model_registry import ModelRegistry
from treadle_tracking.logger import ExperimentLogger


def timed(function: Callable[[], Any], repeats: int) -> float:
    """Median seconds of ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def bench_registry(folder: Path, models: int, repeats: int) -> None:
    registry = ModelRegistry(folder / "registry.db")
    started = time.perf_counter()
    for index in range(models):
        model_id = registry.register_model(
            f"model-{index % 50}",
            f"1.{index // 50}.0",
            f"checkpoints/{index}.pt",
            "classification",
            {"val_loss": 1.0 / (index + 1), "accuracy": 0.5, "f1": 0.4, "perplexity": 2.0},
            "0" * 64,
            training_run_id=index,
            model_size_mb=12.5,
            memory_req_gb=0.5,
        )
        if index % 100 == 0:
            registry.promote_model(model_id, f"tag-{index % 7}")
    seconds = time.perf_counter() - started
    print(f"register_model      {models / seconds:10.0f} models/s ({seconds:.1f} s for {models})")
    ids = [int(model_id) for model_id in registry.list_models()["model_id"]]
    for label, call in [
        (f"list_models() [{models}]", lambda: registry.list_models()),
        ("list_models(limit=50)", lambda: registry.list_models(limit=50)),
        ("compare_models(10)", lambda: registry.compare_models(ids[:10])),
        ("compare_models(1000)", lambda: registry.compare_models(ids[:1000])),
        (f"compare_models({len(ids)})", lambda: registry.compare_models(ids)),
        ("get_model(tag, name)", lambda: registry.get_model(tag="tag-0", name="model-0")),
    ]:
        print(f"{label:<28}{timed(call, repeats) * 1000:10.1f} ms")
    registry.close()


def bench_metrics(folder: Path) -> None:
    with ExperimentDB(folder / "metrics.db") as db:
        run_id = db.log_run("direct", {})
        calls = 2000
        started = time.perf_counter()
        for step in range(calls):
            db.log_metric(run_id, "train/loss", 0.5, epoch=0, step=step)
        seconds = time.perf_counter() - started
        print(f"ExperimentDB.log_metric  {calls / seconds:10.0f} rows/s (one transaction each)")
    sink = ExperimentLogger(location=folder / "metrics.db", run_name="buffered")
    steps = 200_000
    started = time.perf_counter()
    for step in range(steps):
        sink.log_metrics({"train/batch_loss": 0.5, "train/learning_rate": 1e-3}, step)
        if step % 1000 == 999:
            sink.log_metrics({"epoch": step // 1000, "train_loss": 0.5}, step)
    sink.close()
    seconds = time.perf_counter() - started
    rows = steps * 2 + steps // 1000
    print(
        f"experiment logger        {rows / seconds:10.0f} rows/s buffered, "
        f"{seconds / steps * 1e6:.2f} us per 2-metric call (flushes included)"
    )


class MLP(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10)
        )

    def forward(self, features: torch.Tensor, **unused: Any) -> torch.Tensor:
        output: torch.Tensor = self.layers(features)
        return output


def batches(steps: int) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [
        {
            "features": torch.randn(32, 32, generator=generator),
            "labels": torch.randint(0, 10, (32,), generator=generator),
        }
        for _ in range(steps)
    ]


def hand_loop(
    data: list[dict[str, torch.Tensor]], sink: ExperimentLogger | None
) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds of this thread, CPU seconds of this thread inside the
    logger's calls) of one pass over ``data``; the logger's ``close`` is not part of it."""
    torch.manual_seed(0)
    model = MLP()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    cpu_clock = time.thread_time  # SQLite runs in this thread; a descheduled thread costs 0
    in_logger = 0.0
    started, started_cpu = time.perf_counter(), cpu_clock()
    for step, batch in enumerate(data, start=1):
        loss = F.cross_entropy(model(batch["features"]), batch["labels"])
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        value = loss.item()  # both contestants read the loss: the logger's cost alone differs
        if sink is not None:
            entered = cpu_clock()
            sink.log_metrics({"train/batch_loss": value, "train/learning_rate": 1e-3}, step)
            if step % 100 == 0:
                sink.log_metrics({"epoch": step // 100 - 1, "train_loss": value}, step)
            in_logger += cpu_clock() - entered
    wall, cpu = time.perf_counter() - started, cpu_clock() - started_cpu
    if sink is not None:
        sink.close()
    return wall, cpu, in_logger


def _ratio(label: str, plain: Sequence[Sequence[float]], logged: Sequence[Sequence[float]]) -> None:
    for index, kind in enumerate(("wall", "cpu")):
        base = statistics.median(run[index] for run in plain)
        other = statistics.median(run[index] for run in logged)
        print(
            f"{label} {kind:>4}: {base * 1000:7.0f} ms without, "
            f"{other * 1000:7.0f} ms with: ratio {other / base:.3f}"
        )


def bench_loop(folder: Path, repeats: int) -> None:
    """The hand loop with and without the logger, alternating."""
    data = batches(1000)
    hand_loop(data, None)
    hand_loop(data, ExperimentLogger(location=folder / "warm.db"))
    plain, logged = [], []
    for repeat in range(repeats):
        plain.append(hand_loop(data, None))
        sink = ExperimentLogger(location=folder / "loop.db", run_name=f"loop-{repeat}")
        logged.append(hand_loop(data, sink))
    _ratio("hand loop, 1000 steps, logging every step,", plain, logged)
    shares = [run[2] / run[1] for run in logged]
    per_step = statistics.median(run[2] for run in logged) / len(data) * 1e6
    print(
        f"hand loop: CPU inside the logger's calls: {statistics.median(shares):.2%} of the "
        f"loop's CPU (min {min(shares):.2%}, max {max(shares):.2%}), {per_step:.1f} us per step"
    )


class TimedLogger(ExperimentLogger):
    """The experiment logger, adding the thread CPU time of its calls to ``spent``."""

    spent = 0.0

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        entered = time.thread_time()
        super().log_metrics(metrics, step)
        TimedLogger.spent += time.thread_time() - entered

    def checkpoint_state(self) -> dict[str, Any]:
        entered = time.thread_time()
        state = super().checkpoint_state()
        TimedLogger.spent += time.thread_time() - entered
        return state

    def begin(self, *, global_step: int) -> None:
        entered = time.thread_time()
        super().begin(global_step=global_step)
        TimedLogger.spent += time.thread_time() - entered


def trainer_epoch(
    folder: Path, data: list[dict[str, torch.Tensor]], location: str | None
) -> tuple[float, float, float]:
    """(wall seconds of the epoch, thread CPU seconds of the whole ``train`` call, thread CPU
    seconds inside the experiment logger's calls until training ends)."""
    from treadle.config import TrainingConfig
    from treadle.engine.trainer import Trainer
    from treadle.plugins import make_plugin_manager
    from treadle.task import TaskSpec

    manager = make_plugin_manager()
    manager.registry("loggers").register("experiment", TimedLogger, override=True)
    TimedLogger.spent = 0.0

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(dir=folder) as run_dir:
        config = TrainingConfig(
            epochs=1,
            batch_size=32,
            learning_rate=1e-3,
            checkpoint_dir=run_dir,
            experiment_location=location,
            loggers=(),
            log_every_n_steps=1,
            keep_best_k=1,
            keep_last_n=1,
            device="cpu",
        )
        task = TaskSpec.classification("bench", num_classes=10, modality="tabular")
        trainer = Trainer(MLP(), None, config, task, device="cpu", plugin_manager=manager)
        started_cpu = time.thread_time()
        # a tuple: ready batches (a list of dicts would be a dataset of samples)
        results = trainer.train(tuple(data), None)
        cpu = time.thread_time() - started_cpu
    return float(results["history"][0]["epoch_time"]), cpu, TimedLogger.spent


def bench_trainer(folder: Path, repeats: int) -> None:
    data = batches(1000)
    location = str(folder / "trainer.db")
    trainer_epoch(folder, data, None)
    trainer_epoch(folder, data, location)
    plain, logged = [], []
    for _ in range(repeats):
        plain.append(trainer_epoch(folder, data, None))
        logged.append(trainer_epoch(folder, data, location))
    _ratio("Trainer, 1000 steps, log_every_n_steps=1, experiment store", plain, logged)
    shares = [run[2] / run[1] for run in logged]
    print(
        f"Trainer: CPU inside the experiment logger: {statistics.median(shares):.2%} of the "
        f"train() call's CPU (min {min(shares):.2%}, max {max(shares):.2%})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-trainer", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        bench_registry(folder, args.models, args.repeats)
        bench_metrics(folder)
        bench_loop(folder, args.repeats)
        if not args.skip_trainer:
            bench_trainer(folder, args.repeats)


if __name__ == "__main__":
    main()
