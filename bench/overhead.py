"""The Trainer's overhead against a hand-written PyTorch loop doing the same training.

    .venv/bin/python bench/overhead.py [--repeats 7] [--threads 1] [--skip-rss] [--skip-progress]
    .venv/bin/python bench/overhead.py --instructions [--workloads mlp]

Two workloads: a tiny MLP classifier (where per-step overhead dominates) and a small causal
transformer LM. For each, both contestants train the identical model (same initial weights),
on the identical pre-collated batches in the same order, with AdamW (decay on matrices only),
warmup-then-linear-decay per step and global-norm clipping at 1.0. The Trainer runs with its
defaults on: gradient monitor, console and JSONL loggers, checkpoints at the end (outside the
timed span: both contestants are timed over the training epoch only). Runs alternate
(hand, trainer, hand, ...) after a warm-up of each (the first AdamW loads torch._dynamo), on a
fixed thread count; medians are printed with the ratio, and the batch losses of the two are
compared for equality. Peak RSS is measured in a fresh process per contestant. Each line gives
the medians, min/max over the rounds, the ratio of the medians and the range of the per-round
ratios; the load average is printed before and after.

``--instructions`` counts instructions instead of time, under valgrind's callgrind, so the
figure does not depend on the machine's load: in one process (after the same warm-ups), each
contestant trains on two epoch lengths, only those epochs are counted (``sys.call_tracing``
toggles the collection), and the difference divided by the difference in steps is the
instructions of one step, with every set-up and tear-down cost cancelled. Instructions are not
time (a BLAS kernel retires more of them per cycle than the interpreter does), but the ratio
moves with every change to the Python on the hot path, and is the same on a busy machine.
``--trainer-option name=value`` (repeatable) changes the Trainer's TrainingConfig, to count
what one feature costs. It also counts the non-finite check of one optimizer step alone (as the
loop runs it on the CPU, and the deferred device flag), minus an empty loop's iteration.

A third workload, ``hf_gpt2``, is a Hugging Face ``GPT2LMHeadModel`` (2 layers, 64 wide, built
from its config by the ``hf`` model plugin: ``transformers`` needed) on the same kind of
batches; its lines add tokens per second for both contestants (``--workloads hf_gpt2``).

``--loggers tensorboard,mlflow`` measures what each logger adds to a step instead: the MLP
through the Trainer with ``log_every_n_steps=1``, without and with that logger (alternating),
runs of 250 and 1250 steps: the difference over the extra 1000 steps is the per-step cost (wall
and process CPU, which counts the loggers' writer threads), the rest is the per-run cost
(opening the store, the run's params). The target is under 2% of a step.

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
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from treadle import hookimpl
from treadle.config import TrainingConfig
from treadle.engine.nonfinite import NonFiniteGuard
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


#: calls of the non-finite check counted alone, differenced as the epochs are
FINITE_CHECK_CALLS = (200, 600)

#: TrainingConfig changes for the Trainer (``--trainer-option``); empty: its defaults
TRAINER_OPTIONS: dict[str, Any] = {}


def with_trainer(
    model: torch.nn.Module,
    batches: list[Batch],
    task: TaskSpec,
    learning_rate: float,
    record: bool,
    progress_bar: bool | None = None,
) -> tuple[float, list[float]]:
    """The Trainer with its defaults; returns (seconds of the training epoch, losses)."""
    options = dict(TRAINER_OPTIONS)
    if progress_bar is not None:
        options["progress_bar"] = progress_bar
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
            **options,
        )
        # a tuple: ready batches (a list of dicts would be a dataset of samples)
        results = Trainer(model, None, config, task, device="cpu", plugin_manager=manager).train(
            tuple(batches), None
        )
    return results["history"][0]["epoch_time"], [float(loss) for loss in recorder.losses]


def hf_gpt2() -> torch.nn.Module:
    """A 2-layer, 64-wide GPT-2 over the 259-id byte vocabulary, from the ``hf`` plugin."""
    from treadle.config import PluginsConfig
    from treadle_hf.models import build_hf_model

    config = TrainingConfig(
        vocab_size=259,
        max_seq_len=64,
        plugins=PluginsConfig(
            options={
                "hf": {
                    "model": "gpt2",
                    # no dropout: the hand loop and the Trainer draw no random numbers
                    "config": {
                        "n_layer": 2,
                        "n_embd": 64,
                        "n_head": 2,
                        "resid_pdrop": 0.0,
                        "embd_pdrop": 0.0,
                        "attn_pdrop": 0.0,
                    },
                }
            }
        ),
    )
    return build_hf_model(config, TaskSpec.language_modeling("bench", max_seq_len=64))


WORKLOADS: dict[str, dict[str, Any]] = {
    "mlp": {
        "model": MLP,
        "batches": mlp_batches,
        "steps": 400,
        "counted_steps": (100, 300),
        "task": lambda: TaskSpec.classification("bench", num_classes=10, modality="tabular"),
        "loss": classification_loss,
        "learning_rate": 1e-3,
        "target": 1.05,
    },
    "transformer": {
        "model": CausalLM,
        "batches": lm_batches,
        "steps": 30,
        "counted_steps": (2, 6),
        "task": lambda: TaskSpec.language_modeling("bench", max_seq_len=64),
        "loss": lm_loss,
        "learning_rate": 1e-3,
        "target": 1.02,
    },
    "hf_gpt2": {
        "model": hf_gpt2,
        "batches": lm_batches,
        "steps": 30,
        "counted_steps": (2, 6),
        "task": lambda: TaskSpec.language_modeling("bench", max_seq_len=64),
        "loss": lm_loss,
        "learning_rate": 1e-3,
        "target": 1.02,
        "tokens_per_step": 16 * 64,
    },
}


def run_once(
    name: str,
    contestant: str,
    initial: torch.nn.Module,
    record: bool,
    batches: list[Batch] | None = None,
) -> Any:
    workload = WORKLOADS[name]
    if batches is None:
        batches = workload["batches"](workload["steps"])
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
            batches = workload["batches"](workload["steps"])
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
    steps = workload["steps"]
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


def load_average() -> str:
    try:
        return "load average " + ", ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "load average unknown"


def spread(values: list[float], scale: float, unit: str) -> str:
    """``median (min-max) unit`` of ``values`` times ``scale``."""
    median = statistics.median(values) * scale
    return f"{median:.1f} {unit} (min {min(values) * scale:.1f}, max {max(values) * scale:.1f})"


def measure_time(name: str, args: argparse.Namespace) -> None:
    workload = WORKLOADS[name]
    torch.manual_seed(0)
    initial = workload["model"]()
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
    ratios = [t / h for t, h in zip(trainer_times, hand_times, strict=True)]
    identical = hand_losses == trainer_losses
    target = workload["target"]
    print(
        f"{name}: {steps} steps, {args.repeats} rounds; hand-written "
        f"{spread(hand_times, 1e3, 'ms')}, Trainer {spread(trainer_times, 1e3, 'ms')}; "
        f"ratio of medians {trainer / hand:.3f} (target <= {target}; per round "
        f"{min(ratios):.3f}-{max(ratios):.3f}); {(trainer - hand) / steps * 1e6:+.1f} us/step "
        f"({hand / steps * 1e6:.0f} us/step hand-written); losses identical: {identical}"
    )
    tokens = workload.get("tokens_per_step")
    if tokens:
        print(
            f"  tokens/s: hand-written {tokens * steps / hand:,.0f}, "
            f"Trainer {tokens * steps / trainer:,.0f}"
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
    if not args.skip_rss:
        hand_rss = peak_rss_mb(name, "hand", args.threads)
        trainer_rss = peak_rss_mb(name, "trainer", args.threads)
        print(
            f"  peak RSS: hand-written {hand_rss:.0f} MB, Trainer {trainer_rss:.0f} MB, "
            f"difference {trainer_rss - hand_rss:+.0f} MB (target < 50 MB)"
        )


# -- instruction counts -------------------------------------------------------------------


def count_child(names: list[str]) -> None:
    """Under callgrind: per workload, warm both contestants up uncounted, then train each on
    the workload's two counted epoch lengths inside ``sys.call_tracing``, the function whose
    entry and exit toggle the collection (one dump per call)."""
    for name in names:
        workload = WORKLOADS[name]
        torch.manual_seed(0)
        initial = workload["model"]()
        warm_up = workload["batches"](workload["counted_steps"][0])
        run_once(name, "hand", initial, record=False, batches=warm_up)
        run_once(name, "trainer", initial, record=False, batches=warm_up)
        for contestant in ("hand", "trainer"):
            for steps in workload["counted_steps"]:
                batches = workload["batches"](steps)
                sys.call_tracing(run_once, (name, contestant, initial, False, batches))
    # the non-finite check of one step, alone: as the loop runs it on the CPU (the loss is read
    # anyway, for the epoch's sum), and the device flag of the deferred path
    norm, loss = torch.tensor(0.5), torch.tensor(2.3)
    value = loss.item()
    guard = NonFiniteGuard()

    def host_checks(count: int) -> None:
        for _ in range(count):
            if not NonFiniteGuard.finite_on_host(norm, value) or not guard.is_clear:
                raise AssertionError

    def device_flags(count: int) -> None:
        for _ in range(count):
            NonFiniteGuard.device_flag(norm, [loss])

    def empty_loop(count: int) -> None:
        for _ in range(count):
            pass

    for check in (host_checks, device_flags, empty_loop):
        check(50)
        for count in FINITE_CHECK_CALLS:
            sys.call_tracing(check, (count,))


def _totals(path: Path) -> int:
    for line in path.read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    msg = f"no totals line in {path}"
    raise RuntimeError(msg)


def measure_instructions(names: list[str], args: argparse.Namespace) -> None:
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        print("--instructions needs valgrind (apt-get install valgrind)")
        raise SystemExit(2)
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "callgrind.out"
        command = [
            valgrind,
            "--tool=callgrind",
            "--collect-atstart=no",
            "--toggle-collect=sys_call_tracing",
            "--dump-after=sys_call_tracing",
            f"--callgrind-out-file={output}",
            sys.executable,
            __file__,
            "--count-child",
            ",".join(names),
            "--threads",
            str(args.threads),
        ]
        for option in args.trainer_option:
            command += ["--trainer-option", option]
        completed = subprocess.run(command, capture_output=True, text=True, check=False)
        if completed.returncode != 0:
            print(completed.stdout + completed.stderr)
            raise SystemExit(completed.returncode)
        dumps = sorted(Path(folder).glob("callgrind.out.*"), key=lambda path: int(path.suffix[1:]))
        counts = [_totals(path) for path in dumps]
        if args.keep_dumps:
            kept = Path(args.keep_dumps)
            kept.mkdir(parents=True, exist_ok=True)
            for path in dumps:
                shutil.copy(path, kept / path.name)
            print(f"callgrind dumps in {kept} (callgrind_annotate reads them)")
    options = ", ".join(args.trainer_option) or "defaults"
    print(f"instructions per training step (callgrind; Trainer {options})")
    short_calls, long_calls = FINITE_CHECK_CALLS
    host, device, empty = (
        (counts[-6 + 2 * index + 1] - counts[-6 + 2 * index]) / (long_calls - short_calls)
        for index in range(3)
    )
    for index, name in enumerate(names):
        short, long = WORKLOADS[name]["counted_steps"]
        hand_short, hand_long, trainer_short, trainer_long = counts[4 * index : 4 * index + 4]
        hand = (hand_long - hand_short) / (long - short)
        trainer = (trainer_long - trainer_short) / (long - short)
        print(
            f"{name}: hand-written {hand:,.0f}, Trainer {trainer:,.0f}; ratio "
            f"{trainer / hand:.4f} (target <= {WORKLOADS[name]['target']}); "
            f"{trainer - hand:+,.0f} per step (epochs of {short} and {long} steps)"
        )
    print(
        f"non-finite check per optimizer step: {host - empty:,.0f} read on the CPU (the Trainer's "
        f"path there), {device - empty:,.0f} for the deferred device flag (3 kernels on the CPU "
        f"here; on a GPU they are launched without waiting)"
    )


def _parse_option(text: str) -> tuple[str, Any]:
    name, _, value = text.partition("=")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


#: Training-thread CPU seconds spent inside the measured logger's calls.
_inside_logger = [0.0]


def _timed_logger(cls: type) -> type:
    """A subclass of logger class ``cls`` whose ``log_metrics``, ``flush`` and ``begin`` (what
    its hooks call) add their thread CPU time to ``_inside_logger``."""

    def timed(method: Callable[..., Any]) -> Callable[..., Any]:
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            entered = time.thread_time()
            try:
                return method(self, *args, **kwargs)
            finally:
                _inside_logger[0] += time.thread_time() - entered

        return call

    methods = {name: timed(getattr(cls, name)) for name in ("log_metrics", "flush", "begin")}
    return type(f"Timed{cls.__name__}", (cls,), methods)


def logger_epoch(
    folder: str,
    data: list[Batch],
    logger_name: str | None,
    options: dict[str, Any],
    log_every: int = 1,
) -> tuple[float, float, float]:
    """(epoch wall seconds, process CPU seconds of ``train``, training-thread CPU seconds
    inside the logger's calls) of the MLP with ``log_every_n_steps=1``."""
    from treadle.config import PluginsConfig

    manager = make_plugin_manager()
    if logger_name is not None:
        registry = manager.registry("loggers")
        registry.register(logger_name, _timed_logger(registry.get(logger_name)), override=True)
    _inside_logger[0] = 0.0
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(dir=folder) as run_dir:
        config = TrainingConfig(
            epochs=1,
            batch_size=32,
            learning_rate=1e-3,
            checkpoint_dir=run_dir,
            experiment_location=None,
            loggers=(),
            log_every_n_steps=log_every,
            keep_best_k=1,
            keep_last_n=1,
            device="cpu",
            plugins=PluginsConfig(options={logger_name: options} if logger_name else {}),
        )
        task = TaskSpec.classification("bench", num_classes=10, modality="tabular")
        trainer = Trainer(MLP(), None, config, task, device="cpu", plugin_manager=manager)
        started = time.process_time()
        results = trainer.train(tuple(data), None)
        cpu = time.process_time() - started
    return float(results["history"][0]["epoch_time"]), cpu, _inside_logger[0]


def bench_loggers(names: list[str], repeats: int, log_every: int = 1) -> None:
    """Each logger's cost per step, apart from its cost per run (opening a store, a run's
    params): runs of 250 and 1250 steps, without and with the logger; the extra 1000 steps'
    difference is the per-step cost, the rest the per-run cost."""
    lengths = (250, 1250)
    data = {steps: mlp_batches(steps) for steps in lengths}
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            options: dict[str, Any] = {}
            if name == "mlflow":
                options = {
                    "tracking_uri": f"sqlite:///{folder}/mlflow.db",
                    "experiment": "bench",
                    # MLflow's default is ./mlruns in the working directory
                    "artifact_location": f"{folder}/artifacts",
                }
            logger_epoch(folder, data[250], None, {})  # warm-up: dynamo, the logger's imports
            logger_epoch(folder, data[250], name, options)
            runs: dict[tuple[int, bool], list[tuple[float, float, float]]] = {
                (steps, logged): [] for steps in lengths for logged in (False, True)
            }
            for _ in range(repeats):
                for steps in lengths:
                    runs[steps, False].append(
                        logger_epoch(folder, data[steps], None, {}, log_every)
                    )
                    runs[steps, True].append(
                        logger_epoch(folder, data[steps], name, options, log_every)
                    )
            for index, kind in enumerate(("wall", "process CPU")):
                median = {
                    key: statistics.median(run[index] for run in values)
                    for key, values in runs.items()
                }
                extra = {steps: median[steps, True] - median[steps, False] for steps in lengths}
                per_step = (extra[1250] - extra[250]) / 1000
                base_step = (median[1250, False] - median[250, False]) / 1000
                per_run = extra[250] - 250 * per_step
                print(
                    f"{name}: MLP, log_every_n_steps={log_every}, {kind}: "
                    f"{per_step * 1e6:+.1f} us per step ({per_step / base_step:.2%} of a "
                    f"{base_step * 1e6:.0f} us step; "
                    f"target under 2%), {per_run * 1e3:+.0f} ms per run"
                )
            inside = [
                (long[2] - short[2]) / (long[1] - short[1])
                for short, long in zip(runs[250, True], runs[1250, True], strict=True)
            ]
            print(
                f"{name}: the training thread inside the logger's calls, per step: "
                f"{statistics.median(inside):.2%} of its CPU"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workloads", default="mlp,transformer")
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--skip-progress", action="store_true")
    parser.add_argument(
        "--instructions", action="store_true", help="count instructions under callgrind"
    )
    parser.add_argument(
        "--trainer-option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a TrainingConfig field for the Trainer (value as JSON), e.g. loggers=[]",
    )
    parser.add_argument(
        "--keep-dumps",
        metavar="DIR",
        help="with --instructions: copy the callgrind dumps there (hand short, hand long, "
        "Trainer short, Trainer long per workload)",
    )
    parser.add_argument("--loggers", help="measure these loggers' per-step cost instead")
    parser.add_argument("--log-every", type=int, default=1, help="with --loggers")
    parser.add_argument("--rss-child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--count-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.disable(logging.WARNING)
    TRAINER_OPTIONS.update(_parse_option(option) for option in args.trainer_option)
    names = args.workloads.split(",")
    if args.rss_child:
        name, contestant = args.rss_child
        torch.manual_seed(0)
        run_once(name, contestant, WORKLOADS[name]["model"](), record=False)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"peak_rss_mb": peak}))
        return
    if args.count_child:
        count_child(args.count_child.split(","))
        return
    if args.instructions:
        measure_instructions(names, args)
        return
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), {args.repeats} alternating "
        f"rounds; {load_average()}"
    )
    if args.loggers:
        bench_loggers(args.loggers.split(","), args.repeats, args.log_every)
        print(f"after: {load_average()}")
        return
    for name in names:
        measure_time(name, args)
        if not args.skip_progress:
            torch.manual_seed(0)
            progress_row(name, WORKLOADS[name]["model"](), args.repeats)
    print(f"after: {load_average()}")


if __name__ == "__main__":
    main()
