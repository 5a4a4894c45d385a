"""Benchmark checkpoint I/O: CheckpointManager against plain torch.save + fsync / torch.load.

A stack of Linear layers (~100M parameters by default) with its AdamW state (~1.2 GB on disk).
Prints medians over alternating runs (ours, plain, ours, ...) so drift in the machine's load or
page cache hits both sides alike:

- save: ``CheckpointManager.save_checkpoint`` (temp file, sha256 while writing, fsync, rename,
  fsync of the folder, manifest, retention deleting the previous file) against
  ``torch.save`` to the final path + fsync of the file.
- load: ``CheckpointManager.load_checkpoint`` (sha256 check beside ``torch.load``, state loaded
  into model and optimizer) against ``torch.load(weights_only=True)`` + both
  ``load_state_dict`` calls; "hot" with the file in the page cache (just written), "cold" after
  ``posix_fadvise(DONTNEED)`` drops the file's pages, as for a resume in a fresh process.
- async stall: how long ``save_checkpoint`` with ``async_save=True`` holds the training loop
  (the copy to CPU memory), against a synchronous save.

Targets: save and load ratios <= 1.05; async stall <= 0.3x a synchronous save.

    .venv/bin/python bench/checkpoint.py [--size 100] [--repeats 5] [--dir DIR]

``--size`` is the model size in millions of parameters (``--size 10`` for a quick run). The
machine is shared and its disk is virtual: read the numbers as measured there and then.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from treadle.engine.checkpoints import CheckpointManager

WIDTH = 2048


def build(size_millions: float) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """Linear layers of WIDTH x WIDTH adding up to about ``size_millions`` parameters, and
    AdamW after one step (so both moments exist)."""
    layers = max(1, round(size_millions * 1e6 / (WIDTH * WIDTH + WIDTH)))
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(WIDTH, WIDTH) for _ in range(layers)])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model(torch.randn(2, WIDTH)).square().mean().backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return model, optimizer


def timed(function: Callable[[], Any]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def drop_cached_pages(path: Path) -> None:
    """Evict the (clean, fsynced) file from the page cache, so the next read hits the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--size", type=float, default=100.0, help="millions of parameters")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None, help="where to write (a temp folder)")
    args = parser.parse_args()

    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    model, optimizer = build(args.size)
    parameters = sum(parameter.numel() for parameter in model.parameters())
    root = Path(tempfile.mkdtemp(prefix="treadle-bench-checkpoint-", dir=args.dir))
    try:
        run(model, optimizer, parameters, root, args.repeats)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    parameters: int,
    root: Path,
    repeats: int,
) -> None:
    plain_path = root / "plain" / "checkpoint.pt"
    plain_path.parent.mkdir()
    manager = CheckpointManager(root / "ours", keep_best_k=0, keep_last_n=1)
    async_manager = CheckpointManager(root / "async", keep_best_k=0, keep_last_n=1, async_save=True)

    epochs = iter(range(1 << 30))

    def plain_save() -> None:
        state = {
            "model_state_dict": model.state_dict(),
            "optimizer_state_dict": optimizer.state_dict(),
            "epoch": next(epochs),
        }
        torch.save(state, plain_path)
        fsync_file(plain_path)

    def our_save() -> None:
        manager.save_checkpoint(next(epochs), {"val_loss": 1.0}, model, optimizer)

    saves: dict[str, list[float]] = {"ours": [], "plain": []}
    our_save()  # warm-up: first-write allocations, the manifest
    plain_save()
    for _ in range(repeats):
        saves["ours"].append(timed(our_save))
        saves["plain"].append(timed(plain_save))

    latest = manager.latest_valid_checkpoint()
    assert latest is not None
    size_bytes = latest.stat().st_size

    def plain_load() -> None:
        state = torch.load(plain_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model_state_dict"])
        optimizer.load_state_dict(state["optimizer_state_dict"])

    def our_load() -> None:
        manager.load_checkpoint(latest, model, optimizer)

    loads: dict[str, list[float]] = {"ours": [], "plain": []}
    our_load()
    plain_load()
    for _ in range(repeats):
        loads["ours"].append(timed(our_load))
        loads["plain"].append(timed(plain_load))
    cold: dict[str, list[float]] = {"ours": [], "plain": []}
    if hasattr(os, "posix_fadvise"):
        for _ in range(repeats):
            drop_cached_pages(latest)
            cold["ours"].append(timed(our_load))
            drop_cached_pages(plain_path)
            cold["plain"].append(timed(plain_load))

    stalls: list[float] = []
    finishes: list[float] = []
    for epoch in range(repeats):
        start = time.perf_counter()
        async_manager.save_checkpoint(epoch, {"val_loss": 1.0}, model, optimizer)
        stalls.append(time.perf_counter() - start)
        async_manager.wait()
        finishes.append(time.perf_counter() - start)
    async_manager.close()

    megabytes = size_bytes / 1e6
    save_ours, save_plain = statistics.median(saves["ours"]), statistics.median(saves["plain"])
    load_ours, load_plain = statistics.median(loads["ours"]), statistics.median(loads["plain"])
    stall, finish = statistics.median(stalls), statistics.median(finishes)
    print(
        f"checkpoint: {parameters / 1e6:.1f}M parameters + AdamW state = {megabytes:.0f} MB on "
        f"disk; median of {repeats}, alternating runs; {os.cpu_count()} CPUs; {root}"
    )
    print(f"{'':43}{'seconds':>9}{'MB/s':>9}{'ratio':>8}")
    rows = [
        ("save: CheckpointManager (atomic)", save_ours, save_ours / save_plain, "<= 1.05"),
        ("save: torch.save + fsync", save_plain, None, ""),
        ("load hot: CheckpointManager (sha256)", load_ours, load_ours / load_plain, "<= 1.05"),
        ("load hot: torch.load + load_state_dict", load_plain, None, ""),
        ("async save: stall of the caller", stall, stall / save_ours, "<= 0.3 x sync"),
        ("async save: until written", finish, None, ""),
    ]
    if cold["ours"]:
        cold_ours, cold_plain = statistics.median(cold["ours"]), statistics.median(cold["plain"])
        rows[4:4] = [
            ("load cold: CheckpointManager", cold_ours, cold_ours / cold_plain, "<= 1.05"),
            ("load cold: torch.load + load_state_dict", cold_plain, None, ""),
        ]
    for label, seconds, ratio, target in rows:
        ratio_text = f"{ratio:8.2f}" if ratio is not None else " " * 8
        print(f"  {label:41}{seconds:9.3f}{megabytes / seconds:9.0f}{ratio_text}  {target}")
    print(
        "  runs (s): save ours "
        + " ".join(f"{value:.2f}" for value in saves["ours"])
        + " | plain "
        + " ".join(f"{value:.2f}" for value in saves["plain"])
    )
    for name, runs in (("load hot ", loads), ("load cold", cold)):
        print(
            f"            {name} ours "
            + " ".join(f"{value:.2f}" for value in runs["ours"])
            + " | plain "
            + " ".join(f"{value:.2f}" for value in runs["plain"])
        )


if __name__ == "__main__":
    main()
