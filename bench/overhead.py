"""The Trainer's overhead against a hand-written PyTorch loop doing the same training.

    .venv/bin/python bench/overhead.py [--repeats 5] [--threads 1] [--skip-rss] [--skip-progress]

Two workloads: a tiny MLP classifier (where per-step overhead dominates) and a small causal
transformer LM. For each, both contestants train the identical model (same initial weights),
on the identical pre-collated batches in the same order, with AdamW (decay on matrices only),
warmup-then-linear-decay per step and global-norm clipping at 1.0. The Trainer runs with its
defaults on: gradient monitor, console and JSONL loggers, checkpoints at the end (outside the
timed span: both contestants are timed over the training epoch only). Runs alternate
(hand, trainer, hand, ...) after a warm-up of each (the first AdamW loads torch._dynamo), on a
fixed thread count; medians are printed with the ratio, and the batch losses of the two are
compared for equality. Peak RSS is measured in a fresh process per contestant.

A second row per workload prices the progress display: the same Trainer run with
``progress_bar=False``, with it on and stderr no terminal (plain lines, every 10 s), and with it
on and stderr a pseudo-terminal (a tqdm bar, drawn and read), alternating; medians and ratios
to the run without it. Those differences are within this machine's noise, so the row also
times the display's own per-batch hook call (through pluggy, as the Trainer calls it) in a
tight loop: plain lines and a bar.

The machine is shared and noisy: read the ratio, and rerun before believing small differences.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import logging
import math
import os
import pty
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F

from treadle import hookimpl
from treadle.config import TrainingConfig
from treadle.engine.trainer import Trainer
from treadle.plugins import make_plugin_manager
from treadle.task import TaskSpec

Batch = dict[str, torch.Tensor]


class MLP(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(32, 64),
            torch.nn.ReLU(),
            torch.nn.Linear(64, 64),
            torch.nn.ReLU(),
            torch.nn.Linear(64, 10),
        )

    def forward(self, features: torch.Tensor, **unused: Any) -> torch.Tensor:
        return self.layers(features)


class CausalLM(torch.nn.Module):
    def __init__(self, vocab: int = 259, d_model: int = 128, layers: int = 2, seq: int = 64):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, d_model)
        self.position = torch.nn.Embedding(seq, d_model)
        layer = torch.nn.TransformerEncoderLayer(
            d_model, 4, 4 * d_model, dropout=0.0, batch_first=True, norm_first=True
        )
        self.blocks = torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = torch.nn.LayerNorm(d_model)
        self.head = torch.nn.Linear(d_model, vocab)
        self.register_buffer("mask", torch.nn.Transformer.generate_square_subsequent_mask(seq))

    def forward(self, input_ids: torch.Tensor, **unused: Any) -> torch.Tensor:
        length = input_ids.shape[1]
        positions = torch.arange(length, device=input_ids.device)
        hidden = self.embed(input_ids) + self.position(positions)
        hidden = self.blocks(hidden, mask=self.mask[:length, :length], is_causal=True)
        return self.head(self.norm(hidden))


def mlp_batches(steps: int) -> list[Batch]:
    generator = torch.Generator().manual_seed(0)
    return [
        {
            "features": torch.randn(32, 32, generator=generator),
            "labels": torch.randint(0, 10, (32,), generator=generator),
        }
        for _ in range(steps)
    ]


def lm_batches(steps: int) -> list[Batch]:
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(steps):
        ids = torch.randint(0, 259, (16, 64), generator=generator)
        batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids})
    return batches


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, labels)


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    shifted = logits[:, :-1, :].reshape(-1, logits.shape[-1])
    return F.cross_entropy(shifted, labels[:, 1:].reshape(-1), ignore_index=-100)


def hand_written(
    model: torch.nn.Module,
    batches: list[Batch],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    learning_rate: float,
) -> tuple[float, list[float]]:
    """A plain loop with what the Trainer does by default; returns (seconds, losses)."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=learning_rate,
    )
    total = len(batches)
    warmup = math.ceil(total * 0.1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return 1.0 - min((step - warmup) / max(total - warmup, 1), 1.0)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    losses = []
    model.train()
    started = time.perf_counter()
    for batch in batches:
        inputs = dict(batch)
        labels = inputs.pop("labels")
        loss = loss_fn(model(**inputs), labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach())
    seconds = time.perf_counter() - started
    return seconds, [float(loss) for loss in losses]


class LossRecorder:
    def __init__(self) -> None:
        self.losses: list[torch.Tensor] = []

    @hookimpl
    def treadle_on_batch_end(self, loss: torch.Tensor) -> None:
        self.losses.append(loss)


def with_trainer(
    model: torch.nn.Module,
    batches: list[Batch],
    task: TaskSpec,
    learning_rate: float,
    record: bool,
    progress_bar: bool = True,
) -> tuple[float, list[float]]:
    """The Trainer with its defaults; returns (seconds of the training epoch, losses)."""
    recorder = LossRecorder()
    manager = make_plugin_manager(plugins=[("bench_recorder", recorder)] if record else [])
    with tempfile.TemporaryDirectory() as folder:
        config = TrainingConfig(
            epochs=1,
            batch_size=len(batches[0]["labels"]),
            learning_rate=learning_rate,
            checkpoint_dir=folder,
            experiment_location=None,
            keep_best_k=1,
            keep_last_n=1,
            device="cpu",
            progress_bar=progress_bar,
        )
        # a tuple: ready batches (a list of dicts would be a dataset of samples)
        results = Trainer(model, None, config, task, device="cpu", plugin_manager=manager).train(
            tuple(batches), None
        )
    return results["history"][0]["epoch_time"], [float(loss) for loss in recorder.losses]


WORKLOADS: dict[str, dict[str, Any]] = {
    "mlp": {
        "model": MLP,
        "batches": lambda: mlp_batches(400),
        "task": lambda: TaskSpec.classification("bench", num_classes=10, modality="tabular"),
        "loss": classification_loss,
        "learning_rate": 1e-3,
        "target": 1.05,
    },
    "transformer": {
        "model": CausalLM,
        "batches": lambda: lm_batches(30),
        "task": lambda: TaskSpec.language_modeling("bench", max_seq_len=64),
        "loss": lm_loss,
        "learning_rate": 1e-3,
        "target": 1.02,
    },
}


def run_once(name: str, contestant: str, initial: torch.nn.Module, record: bool) -> Any:
    workload = WORKLOADS[name]
    batches = workload["batches"]()
    model = copy.deepcopy(initial)
    if contestant == "hand":
        return hand_written(model, batches, workload["loss"], workload["learning_rate"])
    return with_trainer(model, batches, workload["task"](), workload["learning_rate"], record)


@contextlib.contextmanager
def stderr_on(kind: str) -> Iterator[None]:
    """``sys.stderr`` for the block: ``"pty"``, a 120 x 40 pseudo-terminal whose output a
    thread reads and drops (so the bar is drawn in full); ``"pipe"``, no terminal."""
    if kind == "pipe":
        saved, sys.stderr = sys.stderr, io.StringIO()
        try:
            yield
        finally:
            sys.stderr = saved
        return
    import fcntl
    import struct
    import termios

    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    stop = threading.Event()

    def drain() -> None:
        import select

        while not stop.is_set():
            if select.select([controller], [], [], 0.05)[0]:
                try:
                    os.read(controller, 65536)
                except OSError:
                    return

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    stream = open(terminal, "w", encoding="utf-8", buffering=1, closefd=True)  # noqa: SIM115
    saved, sys.stderr = sys.stderr, stream
    try:
        yield
    finally:
        sys.stderr = saved
        stream.close()
        stop.set()
        reader.join()
        os.close(controller)


def display_call_us(stderr: str) -> float:
    """Microseconds per ``treadle_on_batch_end`` call into the progress display, through a
    pluggy hook with it as the only implementation: the best of 5 loops of 100,000 calls."""
    from types import SimpleNamespace

    from treadle_loggers.progress import ProgressDisplay

    config = TrainingConfig(epochs=1)
    view = SimpleNamespace(
        epoch=0, num_training_batches=10**9, num_validation_batches=None, training_config=config
    )
    loss = torch.tensor(0.5)
    with stderr_on(stderr):
        display = ProgressDisplay(training_config=config)
        manager = make_plugin_manager(load_entry_points=False, plugins=[("progress", display)])
        hook = manager.hook.treadle_on_batch_end
        display.treadle_on_epoch_start(view, 0)
        display.log_metrics({"train/batch_loss": 0.5, "train/learning_rate": 1e-3}, 1)
        best = math.inf
        for _ in range(5):
            started = time.perf_counter()
            for index in range(100_000):
                hook(trainer=view, batch_index=index, loss=loss, control=None)
            best = min(best, (time.perf_counter() - started) / 100_000)
        display.close()
    return best * 1e6


def progress_row(name: str, initial: torch.nn.Module, repeats: int) -> None:
    """The Trainer without the progress display, with plain lines and with a bar on a pty."""
    workload = WORKLOADS[name]
    contestants = {"off": (False, "pipe"), "plain": (True, "pipe"), "bar": (True, "pty")}
    times: dict[str, list[float]] = {label: [] for label in contestants}
    for repeat in range(repeats + 1):  # the first round warms up (tqdm's import)
        for label, (progress_bar, stderr) in contestants.items():
            batches = workload["batches"]()
            with stderr_on(stderr):
                seconds, _ = with_trainer(
                    copy.deepcopy(initial),
                    batches,
                    workload["task"](),
                    workload["learning_rate"],
                    record=False,
                    progress_bar=progress_bar,
                )
            if repeat:
                times[label].append(seconds)
    steps = len(workload["batches"]())
    off = statistics.median(times["off"])
    shown = ", ".join(
        f"{label} {statistics.median(times[label]) * 1e3:.1f} ms (ratio "
        f"{statistics.median(times[label]) / off:.3f}, "
        f"{(statistics.median(times[label]) - off) / steps * 1e6:+.1f} us/step)"
        for label in ("plain", "bar")
    )
    print(f"  progress display: off {off * 1e3:.1f} ms; {shown}")
    print(
        f"  progress display's own batch hook: plain lines {display_call_us('pipe'):.2f} us, "
        f"bar on a pty {display_call_us('pty'):.2f} us per call"
    )


def peak_rss_mb(name: str, contestant: str, threads: int) -> float:
    """Peak RSS of a fresh process that builds the workload and trains it once."""
    completed = subprocess.run(
        [sys.executable, __file__, "--rss-child", name, contestant, "--threads", str(threads)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(json.loads(completed.stdout.strip().splitlines()[-1])["peak_rss_mb"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workloads", default="mlp,transformer")
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--skip-progress", action="store_true")
    parser.add_argument("--rss-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.disable(logging.WARNING)
    if args.rss_child:
        name, contestant = args.rss_child
        torch.manual_seed(0)
        run_once(name, contestant, WORKLOADS[name]["model"](), record=False)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"peak_rss_mb": peak}))
        return
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.repeats} alternating runs")
    for name in args.workloads.split(","):
        torch.manual_seed(0)
        initial = WORKLOADS[name]["model"]()
        run_once(name, "hand", initial, record=False)  # warm-up: dynamo import, allocator
        run_once(name, "trainer", initial, record=False)
        hand_times, trainer_times = [], []
        hand_losses: list[float] = []
        trainer_losses: list[float] = []
        for _ in range(args.repeats):
            seconds, hand_losses = run_once(name, "hand", initial, record=False)
            hand_times.append(seconds)
            seconds, _ = run_once(name, "trainer", initial, record=False)
            trainer_times.append(seconds)
        _, trainer_losses = run_once(name, "trainer", initial, record=True)
        steps = len(hand_losses)
        hand = statistics.median(hand_times)
        trainer = statistics.median(trainer_times)
        identical = hand_losses == trainer_losses
        target = WORKLOADS[name]["target"]
        print(
            f"{name}: {steps} steps; hand-written median {hand * 1e3:.1f} ms "
            f"({hand / steps * 1e6:.0f} us/step), Trainer median {trainer * 1e3:.1f} ms "
            f"({trainer / steps * 1e6:.0f} us/step); ratio {trainer / hand:.3f} "
            f"(target <= {target}); +{(trainer - hand) / steps * 1e6:.1f} us/step; "
            f"losses identical: {identical}"
        )
        if not identical:
            first = (
                next(
                    i
                    for i, (a, b) in enumerate(zip(hand_losses, trainer_losses, strict=True))
                    if a != b
                )
                if len(hand_losses) == len(trainer_losses)
                else None
            )
            print(f"  first difference at step {first}: lengths {steps} / {len(trainer_losses)}")
        if not args.skip_progress:
            progress_row(name, initial, args.repeats)
        if not args.skip_rss:
            hand_rss = peak_rss_mb(name, "hand", args.threads)
            trainer_rss = peak_rss_mb(name, "trainer", args.threads)
            print(
                f"  peak RSS: hand-written {hand_rss:.0f} MB, Trainer {trainer_rss:.0f} MB, "
                f"difference {trainer_rss - hand_rss:+.0f} MB (target < 50 MB)"
            )


if __name__ == "__main__":
    main()
