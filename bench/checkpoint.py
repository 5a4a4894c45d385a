"""Benchmark checkpoint I/O: CheckpointManager against plain torch.save + fsync / torch.load.

A stack of Linear layers (~100M parameters by default) with its AdamW state (~1.2 GB on disk).
Each round runs ours and the plain baseline back to back (alternating which goes first), so
drift in the machine's load or page cache hits both alike; each ratio is ours / plain within a
round, reported as the median with its min and max over the rounds, next to the load average
before and after:

- save: ``CheckpointManager.save_checkpoint`` (temp file, block digest hashed behind the
  writer, fsync, rename, fsync of the folder, manifest, retention deleting the previous file)
  against ``torch.save`` to the final path + fsync of the file. Target <= 1.05.
- load warm: ``CheckpointManager.load_checkpoint`` (digest checked beside ``torch.load``,
  state loaded into model and optimizer) against ``torch.load(weights_only=True)`` + both
  ``load_state_dict`` calls, the file in the page cache. Target <= 1.05.
- load cold: the same after ``posix_fadvise(DONTNEED)`` drops the file's pages, as for a
  resume in a fresh process. Target <= 1.2.
- async stall: how long ``save_checkpoint`` with ``async_save=True`` holds the training loop
  (the copy to CPU memory), against a synchronous save of the same round. Target <= 0.25.

It also times the hashes a manifest may name (sha256, blake2b) on this CPU, in memory, which
decided ``treadle.engine.checkpoints.digests.DEFAULT_ALGORITHM``.

    .venv/bin/python bench/checkpoint.py [--size 100] [--rounds 5] [--dir DIR]

``--size`` is the model size in millions of parameters (``--size 10`` for a quick run). Run it
alone on the machine: a benchmark beside other work measures the other work.
"""

from __future__ import annotations

import argparse
import hashlib
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
from treadle.engine.checkpoints.digests import ALGORITHMS, DEFAULT_ALGORITHM

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


def hash_speeds(rounds: int) -> dict[str, list[float]]:
    """MB/s of each hash a manifest may name, over 64 MiB in memory fed in 4 MiB pieces."""
    data = os.urandom(1 << 26)
    view = memoryview(data)
    speeds: dict[str, list[float]] = {name: [] for name in sorted(ALGORITHMS)}
    for _ in range(rounds):
        for name in speeds:
            digest = hashlib.new(name)
            start = time.perf_counter()
            for offset in range(0, len(data), 1 << 22):
                digest.update(view[offset : offset + (1 << 22)])
            speeds[name].append(len(data) / (time.perf_counter() - start) / 1e6)
    return speeds


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--size", type=float, default=100.0, help="millions of parameters")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None, help="where to write (a temp folder)")
    args = parser.parse_args()

    load_before = os.getloadavg()
    speeds = hash_speeds(args.rounds)
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    model, optimizer = build(args.size)
    parameters = sum(parameter.numel() for parameter in model.parameters())
    root = Path(tempfile.mkdtemp(prefix="treadle-bench-checkpoint-", dir=args.dir))
    try:
        rows, size_bytes = run(model, optimizer, root, args.rounds)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    load_after = os.getloadavg()
    report(parameters, size_bytes, args.rounds, speeds, rows, load_before, load_after)


Pair = tuple[list[float], list[float]]


def run(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, root: Path, rounds: int
) -> tuple[dict[str, Pair], int]:
    """Times of ours and of the baseline per round, for each measurement."""
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
        manager.wait()  # the old file's deletion, which the baseline's truncation pays too

    def plain_load() -> None:
        state = torch.load(plain_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model_state_dict"])
        optimizer.load_state_dict(state["optimizer_state_dict"])

    def our_load() -> None:
        manager.load_checkpoint(newest["path"], model, optimizer)

    def async_stall() -> None:
        async_manager.save_checkpoint(next(epochs), {"val_loss": 1.0}, model, optimizer)

    rows: dict[str, Pair] = {
        name: ([], []) for name in ("save", "load warm", "load cold", "async stall")
    }
    newest: dict[str, Path] = {}

    def find_newest() -> None:
        found = manager.latest_valid_checkpoint()
        assert found is not None
        newest["path"] = found

    our_save()  # warm-up: first-write allocations, the manifest
    plain_save()
    for index in range(rounds):
        ours_first = index % 2 == 0
        pair(rows["save"], our_save, plain_save, ours_first)
        find_newest()
        size_bytes = newest["path"].stat().st_size
        our_load()  # both files in the page cache
        plain_load()
        pair(rows["load warm"], our_load, plain_load, ours_first)
        if hasattr(os, "posix_fadvise"):
            pair(
                rows["load cold"],
                our_load,
                plain_load,
                ours_first,
                before_ours=lambda: drop_cached_pages(newest["path"]),
                before_plain=lambda: drop_cached_pages(plain_path),
            )
        rows["async stall"][0].append(timed(async_stall))
        async_manager.wait()
        rows["async stall"][1].append(timed(our_save))
    async_manager.close()
    return rows, size_bytes


def pair(
    row: Pair,
    ours: Callable[[], Any],
    plain: Callable[[], Any],
    ours_first: bool,
    *,
    before_ours: Callable[[], Any] = lambda: None,
    before_plain: Callable[[], Any] = lambda: None,
) -> None:
    """Time ``ours`` and ``plain`` back to back, in the order given, each after its untimed
    ``before_*``."""
    sides = [(ours, before_ours, row[0]), (plain, before_plain, row[1])]
    for function, before, times in sides if ours_first else sides[::-1]:
        before()
        times.append(timed(function))


def report(
    parameters: int,
    size_bytes: int,
    rounds: int,
    speeds: dict[str, list[float]],
    rows: dict[str, Pair],
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
) -> None:
    megabytes = size_bytes / 1e6
    print(
        f"checkpoint: {parameters / 1e6:.1f}M parameters + AdamW state = {megabytes:.0f} MB on "
        f"disk; {rounds} rounds; {os.cpu_count()} CPUs; load average {load_before[0]:.2f} "
        f"before, {load_after[0]:.2f} after"
    )
    print(
        "hash, in memory (MB/s, median of rounds): "
        + ", ".join(
            f"{name} {statistics.median(values):.0f} (min {min(values):.0f}, max {max(values):.0f})"
            for name, values in speeds.items()
        )
        + f"; manifests use {DEFAULT_ALGORITHM}"
    )
    targets = {"save": 1.05, "load warm": 1.05, "load cold": 1.2, "async stall": 0.25}
    baselines = {
        "save": "torch.save + fsync",
        "load warm": "torch.load + load_state_dict",
        "load cold": "torch.load + load_state_dict",
        "async stall": "a synchronous save",
    }
    print(f"  {'':12}{'ours s':>9}{'base s':>9}{'ratio':>8}{'min':>7}{'max':>7}  target  baseline")
    for name, (ours, plain) in rows.items():
        if not ours:
            print(f"  {name:12} (not measured here)")
            continue
        ratios = [mine / theirs for mine, theirs in zip(ours, plain, strict=True)]
        met = "met" if statistics.median(ratios) <= targets[name] else "MISSED"
        print(
            f"  {name:12}{statistics.median(ours):9.3f}{statistics.median(plain):9.3f}"
            f"{statistics.median(ratios):8.2f}{min(ratios):7.2f}{max(ratios):7.2f}"
            f"  <= {targets[name]:<4} {met:6} {baselines[name]}"
        )
    for name, (ours, plain) in rows.items():
        print(
            f"  rounds, {name}: ours "
            + " ".join(f"{value:.3f}" for value in ours)
            + " | baseline "
            + " ".join(f"{value:.3f}" for value in plain)
        )


if __name__ == "__main__":
    main()
