"""Instructions per step of each logger, counted by callgrind: a figure the machine's load
does not move (wall-clock ratios on a shared 2-core machine do).

    .venv/bin/python bench/logger_instructions.py [--loggers tensorboard,mlflow] [--calls 3000]

For each logger, and for one training step of the MLP of ``bench/overhead.py`` (AdamW, batch
32), a child process runs under ``valgrind --tool=callgrind`` twice: once doing the setup only,
once doing the setup and then ``--calls`` calls (a ``log_metrics`` of ``train/batch_loss`` and
``train/learning_rate``, with an epoch row every 100 steps, as the Trainer sends with
``log_every_n_steps=1``; or training steps). The difference, divided by the calls, is the
instructions one call costs, every thread counted (the loggers' writer threads included) and
the final flush shared out; child processes (the mlflow logger's sender) are traced too and
reported apart. The ratio of a logger's figure to a step's is its share of a step.
Needs valgrind; each child takes minutes (torch's import under callgrind).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any


def child(kind: str, calls: int, folder: str) -> None:
    import torch

    if kind == "step":
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Linear(32, 64),
            torch.nn.ReLU(),
            torch.nn.Linear(64, 64),
            torch.nn.ReLU(),
            torch.nn.Linear(64, 10),
        )
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        features, labels = torch.randn(32, 32), torch.randint(0, 10, (32,))

        def step() -> None:
            loss = torch.nn.functional.cross_entropy(model(features), labels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss.item()

        step()  # warm: dynamo and the allocator
        for _ in range(calls):
            step()
        return
    from treadle.config import PluginsConfig, TrainingConfig
    from treadle.plugins import get_registry

    options: dict[str, Any] = {}
    if kind == "mlflow":
        options = {"tracking_uri": f"sqlite:///{folder}/mlflow.db", "experiment": "bench"}
    config = TrainingConfig(
        checkpoint_dir=folder, plugins=PluginsConfig(options={kind: options} if options else {})
    )
    sink = get_registry("loggers").create(kind, training_config=config, run_dir=Path(folder))
    sink.log_metrics({"train/batch_loss": 1.0, "train/learning_rate": 1e-3}, 0)
    if hasattr(sink, "flush"):
        sink.flush()  # the first write opens files and stores: setup, not per step
    for step in range(1, calls + 1):
        sink.log_metrics({"train/batch_loss": 1.0 / step, "train/learning_rate": 1e-3}, step)
        if step % 100 == 0:
            sink.log_metrics({"epoch": step // 100, "train_loss": 0.5, "val_loss": 0.6}, step)
    sink.close()


def collected(kind: str, calls: int) -> tuple[int, int]:
    """Instructions of (the training process, every process: the mlflow logger's sender
    process included) for one child run."""
    with tempfile.TemporaryDirectory() as folder:
        completed = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--trace-children=yes",
                "--callgrind-out-file=/dev/null",
                sys.executable,
                __file__,
                "--child",
                kind,
                str(calls),
                folder,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    found = re.findall(r"==(\d+)== Collected : (\d+)", completed.stderr)
    if not found:
        raise RuntimeError(completed.stderr[-2000:])
    first_pid = re.search(r"==(\d+)==", completed.stderr)
    assert first_pid is not None
    own = sum(int(count) for pid, count in found if pid == first_pid.group(1))
    return own, sum(int(count) for _, count in found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loggers", default="tensorboard,mlflow,jsonl")
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument(
        "--step-instructions", type=int, help="reuse a step's count instead of measuring it"
    )
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, calls, folder = args.child
        child(kind, int(calls), folder)
        return
    if args.step_instructions:
        per_step = float(args.step_instructions)  # a figure an earlier run printed
    else:
        step_calls, step_none = collected("step", args.steps), collected("step", 0)
        per_step = (step_calls[0] - step_none[0]) / args.steps
    print(f"MLP training step (batch 32, AdamW): {per_step:,.0f} instructions")
    for name in args.loggers.split(","):
        with_calls, without = collected(name, args.calls), collected(name, 0)
        own = (with_calls[0] - without[0]) / args.calls
        every = (with_calls[1] - without[1]) / args.calls
        print(
            f"{name}: per logged step, the training process (all its threads): {own:,.0f} "
            f"instructions, {own / per_step:.2%} of a step; every process: {every:,.0f}, "
            f"{every / per_step:.2%}"
        )


if __name__ == "__main__":
    main()
