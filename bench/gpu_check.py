"""The CUDA paths, each next to a hand-written PyTorch loop doing the same work.

    python bench/gpu_check.py                       # on a CUDA machine: a few minutes
    python bench/gpu_check.py --device cpu --quick  # the CPU path (what the tests run)

Checks, on ``tiny_gpt`` and a ~100M-parameter ``tiny_gpt`` (12 layers, d_model 768):

- fp32, bf16 autocast and fp16 autocast with a GradScaler: the Trainer and a hand-written loop
  train the same initial weights on the same batches, fed through a pinned-memory DataLoader
  with non-blocking copies; their batch losses must match (identical in fp32, within 1e-3
  relative in bf16/fp16), and the ratio of step times and tokens/s of both are printed;
- GradScaler: an inf gradient injected at one step must skip that optimizer step (parameters
  unchanged, scale halved) in the Trainer as it does by hand;
- pinned memory: host-to-device copy rate of pinned vs pageable batches;
- ``torch.compile`` (``compile_mode="default"``): losses close to eager, step time after
  warm-up, next to ``torch.compile`` by hand;
- DDP over NCCL on 2 GPUs (``torchrun``), when 2 GPUs exist; skipped otherwise.

Exit status 1 when any check fails. Timings are medians over the timed steps (the first steps
warm up kernels and the allocator and are not timed).
"""

from __future__ import annotations

import argparse
import copy
import logging
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from typing import Any

import attrs
import torch
import torch.nn.functional as F

from treadle import hookimpl
from treadle.config import TrainingConfig
from treadle.engine.precision import resolve_precision
from treadle.engine.trainer import Trainer
from treadle.plugins import get_registry, make_plugin_manager
from treadle.task import TaskSpec

Batch = dict[str, torch.Tensor]
VOCAB = 259  # treadle's bytewise tokenizer

SIZES: dict[str, dict[str, int]] = {
    "tiny_gpt": {"d_model": 128, "num_layers": 2, "num_heads": 4, "d_ff": 512},
    "gpt_100m": {"d_model": 768, "num_layers": 12, "num_heads": 12, "d_ff": 3072},
    # the CPU path (--quick) trains both shapes shrunk, to exercise the code, not the card
    "tiny_gpt_quick": {"d_model": 32, "num_layers": 1, "num_heads": 2, "d_ff": 64},
    "gpt_100m_quick": {"d_model": 64, "num_layers": 2, "num_heads": 4, "d_ff": 128},
}
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")


class Results:
    """Collects pass/fail lines and prints them as they come."""

    def __init__(self) -> None:
        self.failures: list[str] = []
        self.passed = 0

    def check(self, name: str, ok: bool, detail: str) -> None:
        print(f"  [{'ok' if ok else 'FAIL'}] {name}: {detail}", flush=True)
        if ok:
            self.passed += 1
        else:
            self.failures.append(name)

    def skip(self, name: str, why: str) -> None:
        print(f"  [skip] {name}: {why}", flush=True)


def training_config(shape: str, precision: str, batch_size: int, seq: int, **extra: Any) -> Any:
    return TrainingConfig(
        epochs=1,
        batch_size=batch_size,
        learning_rate=3e-4,
        vocab_size=VOCAB,
        max_seq_len=seq,
        dropout=0.0,
        precision=precision,
        device=extra.pop("device"),
        experiment_location=None,
        keep_best_k=1,
        keep_last_n=1,
        loggers=(),
        **SIZES[shape],
        **extra,
    )


def make_batches(steps: int, batch_size: int, seq: int) -> list[Batch]:
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(steps):
        ids = torch.randint(0, VOCAB, (batch_size, seq), generator=generator)
        batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids})
    return batches


def loader(batches: list[Batch], pin: bool) -> torch.utils.data.DataLoader[Batch]:
    """Pre-collated batches through a DataLoader: pinned when the device is CUDA."""
    return torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False, pin_memory=pin)


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    shifted = logits[:, :-1, :].reshape(-1, logits.shape[-1])
    return F.cross_entropy(shifted, labels[:, 1:].reshape(-1), ignore_index=-100)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepTimer:
    """Records wall time per optimizer step (synchronized) and the batch losses."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.times: list[float] = []
        self.losses: list[torch.Tensor] = []
        self._last = time.perf_counter()

    def mark(self, loss: torch.Tensor) -> None:
        synchronize(self.device)
        now = time.perf_counter()
        self.times.append(now - self._last)
        self._last = now
        self.losses.append(loss.detach().float().cpu())


class TimerPlugin:
    def __init__(self, timer: StepTimer, inject_inf_at: int | None) -> None:
        self.timer = timer
        self.inject_inf_at = inject_inf_at
        self.step = 0
        self.before: list[torch.Tensor] | None = None
        self.unchanged_at_injection: bool | None = None

    @hookimpl
    def treadle_on_batch_start(self, trainer: Any) -> None:
        if self.step == self.inject_inf_at:
            self.before = [p.detach().clone() for p in trainer.model.parameters()]

    @hookimpl
    def treadle_on_after_backward(self, trainer: Any) -> None:
        if self.step == self.inject_inf_at:
            first = next(p for p in trainer.model.parameters() if p.grad is not None)
            first.grad.view(-1)[0] = math.inf

    @hookimpl
    def treadle_on_batch_end(self, trainer: Any, loss: torch.Tensor) -> None:
        if self.step == self.inject_inf_at and self.before is not None:
            after = list(trainer.model.parameters())
            self.unchanged_at_injection = all(
                torch.equal(a, b) for a, b in zip(self.before, after, strict=True)
            )
        self.step += 1
        self.timer.mark(loss)


def hand_written(
    model: torch.nn.Module,
    batches: list[Batch],
    config: Any,
    device: torch.device,
    *,
    inject_inf_at: int | None = None,
    compile_model: bool = False,
) -> dict[str, Any]:
    """What the Trainer does by default, written out: AdamW with decay on matrices, linear
    warm-up then decay per step, global-norm clipping at 1.0, autocast and GradScaler."""
    precision = resolve_precision(config.precision, config.use_amp, device)
    model.to(device)
    forward: Callable[..., torch.Tensor] = torch.compile(model) if compile_model else model
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.learning_rate,
    )
    total = len(batches)
    warmup = math.ceil(total * config.warmup_ratio)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return 1.0 - min((step - warmup) / max(total - warmup, 1), 1.0)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    scaler = precision.make_scaler()
    timer = StepTimer(device)
    scales: list[float] = []
    unchanged: bool | None = None
    model.train()
    for step, batch in enumerate(loader(batches, pin=device.type == "cuda")):
        inputs = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
        labels = inputs.pop("labels")
        with precision.autocast():
            loss = lm_loss(forward(**inputs), labels)
        if scaler is not None:
            scaler.scale(loss).backward()
        else:
            loss.backward()
        before = None
        if step == inject_inf_at:  # before unscale_, which is where the scaler looks for infs
            before = [p.detach().clone() for p in model.parameters()]
            next(p for p in model.parameters() if p.grad is not None).grad.view(-1)[0] = math.inf
        if scaler is not None:
            scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm, foreach=True)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
            scales.append(float(scaler.get_scale()))
        else:
            optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if before is not None:
            unchanged = all(
                torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True)
            )
        timer.mark(loss)
    return {"timer": timer, "unchanged": unchanged, "scales": scales}


def with_trainer(
    model: torch.nn.Module,
    batches: list[Batch],
    config: Any,
    device: torch.device,
    *,
    inject_inf_at: int | None = None,
) -> dict[str, Any]:
    timer = StepTimer(device)
    plugin = TimerPlugin(timer, inject_inf_at)
    manager = make_plugin_manager(plugins=[("gpu_check", plugin)])
    task = TaskSpec.language_modeling("gpu_check", max_seq_len=config.max_seq_len)
    with tempfile.TemporaryDirectory() as folder:
        config = attrs.evolve(config, checkpoint_dir=folder)
        trainer = Trainer(model, None, config, task, device=str(device), plugin_manager=manager)
        trainer.train(loader(batches, pin=device.type == "cuda"), None)
    return {"timer": timer, "unchanged": plugin.unchanged_at_injection}


def step_summary(times: list[float], warmup: int) -> float:
    timed = times[warmup:] or times
    return statistics.median(timed)


def compare_losses(
    hand: list[torch.Tensor], trainer: list[torch.Tensor], exact: bool
) -> tuple[bool, str]:
    if len(hand) != len(trainer):
        return False, f"{len(hand)} hand-written losses vs {len(trainer)} from the Trainer"
    a, b = torch.stack(hand), torch.stack(trainer)
    finite = torch.isfinite(a) & torch.isfinite(b)
    difference = (a[finite] - b[finite]).abs().max().item() if finite.any() else 0.0
    relative = difference / max(a[finite].abs().max().item(), 1e-12) if finite.any() else 0.0
    same_nonfinite = torch.equal(torch.isfinite(a), torch.isfinite(b))
    ok = same_nonfinite and (difference == 0.0 if exact else relative <= 1e-3)
    return ok, f"max |difference| {difference:.3g} (relative {relative:.2g})"


def run_precisions(
    shape: str, device: torch.device, args: argparse.Namespace, results: Results
) -> None:
    batch_size, seq = (4, 32) if args.quick else (args.batch_size, args.seq_len)
    steps = args.steps
    batches = make_batches(steps, batch_size, seq)
    tokens = batch_size * seq
    for precision in PRECISIONS:
        cuda_without_bf16 = device.type == "cuda" and not torch.cuda.is_bf16_supported()
        if precision == "bf16-mixed" and cuda_without_bf16:
            results.skip(f"{shape} {precision}", "this GPU has no bf16")
            continue
        if precision == "16-mixed" and device.type != "cuda":
            results.skip(f"{shape} {precision}", "fp16 with a GradScaler is CUDA-only")
            continue
        config = training_config(shape, precision, batch_size, seq, device=str(device))
        task = TaskSpec.language_modeling("gpu_check", max_seq_len=seq)
        torch.manual_seed(0)
        initial = get_registry("models").get("tiny_gpt")(config, task)
        parameters = sum(p.numel() for p in initial.parameters())
        hand = hand_written(copy.deepcopy(initial), batches, config, device)
        treadle = with_trainer(copy.deepcopy(initial), batches, config, device)
        ok, detail = compare_losses(
            hand["timer"].losses, treadle["timer"].losses, exact=precision == "32-true"
        )
        warmup = min(3, steps // 3)
        hand_step = step_summary(hand["timer"].times, warmup)
        treadle_step = step_summary(treadle["timer"].times, warmup)
        results.check(
            f"{shape} ({parameters / 1e6:.1f}M params) {precision}",
            ok,
            f"losses {detail}; step hand {hand_step * 1e3:.2f} ms, treadle "
            f"{treadle_step * 1e3:.2f} ms, ratio {treadle_step / hand_step:.3f}; tokens/s hand "
            f"{tokens / hand_step:,.0f}, treadle {tokens / treadle_step:,.0f}",
        )


def check_grad_scaler(device: torch.device, args: argparse.Namespace, results: Results) -> None:
    if device.type != "cuda":
        results.skip("GradScaler skips an inf step", "needs CUDA (fp16 + GradScaler)")
        return
    shape = "tiny_gpt_quick" if args.quick else "tiny_gpt"
    batches = make_batches(8, 4, 32)
    config = training_config(shape, "16-mixed", 4, 32, device=str(device))
    task = TaskSpec.language_modeling("gpu_check", max_seq_len=32)
    torch.manual_seed(0)
    initial = get_registry("models").get("tiny_gpt")(config, task)
    hand = hand_written(copy.deepcopy(initial), batches, config, device, inject_inf_at=4)
    treadle = with_trainer(copy.deepcopy(initial), batches, config, device, inject_inf_at=4)
    ok, detail = compare_losses(hand["timer"].losses, treadle["timer"].losses, exact=False)
    scales = hand["scales"]
    halved = len(scales) > 4 and scales[4] < scales[3]
    results.check(
        "GradScaler skips an inf step",
        bool(hand["unchanged"]) and bool(treadle["unchanged"]) and halved and ok,
        f"parameters unchanged at the inf step: hand {hand['unchanged']}, treadle "
        f"{treadle['unchanged']}; scale {scales[3] if len(scales) > 3 else '?'} -> "
        f"{scales[4] if len(scales) > 4 else '?'}; later losses {detail}",
    )


def check_pinned_copies(device: torch.device, results: Results) -> None:
    if device.type != "cuda":
        results.skip("pinned-memory copies", "needs CUDA")
        return
    host = torch.randn(64, 1024, 1024)  # 256 MiB
    pinned = host.pin_memory()
    rates = {}
    for name, source in (("pageable", host), ("pinned", pinned)):
        source.to(device, non_blocking=True)
        synchronize(device)
        started = time.perf_counter()
        for _ in range(5):
            source.to(device, non_blocking=True)
        synchronize(device)
        rates[name] = 5 * source.numel() * 4 / (time.perf_counter() - started) / 1e9
    results.check(
        "pinned-memory copies",
        rates["pinned"] >= rates["pageable"],
        f"host to device {rates['pageable']:.1f} GB/s pageable, {rates['pinned']:.1f} GB/s pinned",
    )


def check_compile(device: torch.device, args: argparse.Namespace, results: Results) -> None:
    if device.type != "cuda" and not args.compile_on_cpu:
        results.skip("torch.compile", "on CPU only with --compile-on-cpu (slow to compile)")
        return
    shape = "tiny_gpt_quick" if args.quick else "tiny_gpt"
    batch_size, seq = (4, 32) if args.quick else (args.batch_size, args.seq_len)
    batches = make_batches(args.steps, batch_size, seq)
    eager_config = training_config(shape, "32-true", batch_size, seq, device=str(device))
    config = training_config(
        shape, "32-true", batch_size, seq, device=str(device), compile_mode="default"
    )
    task = TaskSpec.language_modeling("gpu_check", max_seq_len=seq)
    torch.manual_seed(0)
    initial = get_registry("models").get("tiny_gpt")(config, task)
    eager = hand_written(copy.deepcopy(initial), batches, eager_config, device)
    hand = hand_written(copy.deepcopy(initial), batches, config, device, compile_model=True)
    treadle = with_trainer(copy.deepcopy(initial), batches, config, device)
    ok, detail = compare_losses(eager["timer"].losses, treadle["timer"].losses, exact=False)
    warmup = min(5, args.steps // 2)
    hand_step = step_summary(hand["timer"].times, warmup)
    treadle_step = step_summary(treadle["timer"].times, warmup)
    eager_step = step_summary(eager["timer"].times, warmup)
    results.check(
        "torch.compile",
        ok,
        f"losses vs eager {detail}; step eager {eager_step * 1e3:.2f} ms, compiled by hand "
        f"{hand_step * 1e3:.2f} ms, treadle {treadle_step * 1e3:.2f} ms, ratio "
        f"{treadle_step / hand_step:.3f}",
    )


def check_ddp(device: torch.device, args: argparse.Namespace, results: Results) -> None:
    if device.type != "cuda" or torch.cuda.device_count() < 2:
        results.skip("DDP over NCCL", "needs 2 GPUs")
        return
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        __file__,
        "--ddp-child",
        "--steps",
        str(args.steps),
    ]
    started = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - started
    lines = [line for line in completed.stdout.splitlines() if line.startswith("ddp:")]
    results.check(
        "DDP over NCCL (2 GPUs)",
        completed.returncode == 0 and bool(lines),
        (lines[-1] if lines else completed.stderr[-400:]) + f" (launch and run {seconds:.1f} s)",
    )


def ddp_child(args: argparse.Namespace) -> None:
    """One rank under torchrun: the Trainer with strategy ddp on NCCL."""
    rank = int(os.environ["RANK"])
    device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    torch.cuda.set_device(device)
    batches = make_batches(args.steps, 8, 128)
    config = training_config("tiny_gpt", "bf16-mixed", 8, 128, device="cuda", strategy="ddp")
    config = attrs.evolve(config, devices=2)
    task = TaskSpec.language_modeling("gpu_check", max_seq_len=128)
    torch.manual_seed(0)
    model = get_registry("models").get("tiny_gpt")(config, task)
    timer = StepTimer(device)
    manager = make_plugin_manager(plugins=[("gpu_check", TimerPlugin(timer, None))])
    with tempfile.TemporaryDirectory() as folder:
        config = attrs.evolve(config, checkpoint_dir=folder)
        Trainer(model, None, config, task, device="cuda", plugin_manager=manager).train(
            batches, None
        )
    if rank == 0:
        step = step_summary(timer.times, 3)
        losses = [float(loss) for loss in timer.losses]
        print(
            f"ddp: {len(losses)} steps, first loss {losses[0]:.4f}, last {losses[-1]:.4f}, "
            f"step {step * 1e3:.2f} ms, {2 * 8 * 128 / step:,.0f} tokens/s over 2 ranks",
            flush=True,
        )


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return f"{name}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s)"
    return f"CPU, {torch.get_num_threads()} thread(s)"


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="small shapes: the CPU test path")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--compile-on-cpu", action="store_true")
    parser.add_argument("--ddp-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(None if argv is None else list(argv))
    logging.basicConfig(level=logging.WARNING)
    if args.ddp_child:
        ddp_child(args)
        return 0
    device = torch.device(args.device)
    if args.quick:
        args.steps = min(args.steps, 6)
    print(f"treadle gpu_check: torch {torch.__version__} on {describe(device)}", flush=True)
    started = time.perf_counter()
    results = Results()
    shapes = ("tiny_gpt_quick", "gpt_100m_quick") if args.quick else ("tiny_gpt", "gpt_100m")
    for shape in shapes:
        run_precisions(shape, device, args, results)
    check_grad_scaler(device, args, results)
    check_pinned_copies(device, results)
    check_compile(device, args, results)
    check_ddp(device, args, results)
    print(
        f"{results.passed} passed, {len(results.failures)} failed"
        + (f" ({', '.join(results.failures)})" if results.failures else "")
        + f" in {time.perf_counter() - started:.0f} s"
    )
    return 1 if results.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
