"""Benchmark drift detection: 100 features x 100k samples per profile, against a stored profile.

    .venv/bin/python bench/drift.py [--features 100] [--samples 100000] [--repeats 7]

What a drift check adds at an epoch's end, two ways (target <= 10 ms on one core):

- **single pass**: build the current profile from the data with the reference's edges, then
  the divergence (``build_profile(data, reference=...)`` + ``compute_drift``);
- **accumulated**: the data passed through a ``ProfileAccumulator`` batch by batch (as
  validation batches pass; the per-batch cost is printed, for batches of ``--batch`` rows as a
  float32 ``(rows, features)`` tensor), so the epoch's end only turns the counts into a
  profile and computes the divergence.

Also the divergence alone (two ready profiles), building the reference, and the straightforward
baseline: per feature ``numpy.histogram`` on both sides and
``scipy.spatial.distance.jensenshannon``. Every figure is the median (min-max) of
``--repeats`` runs after a warm-up, in thread CPU time (``time.thread_time``: unlike wall time,
it does not count the time a busy machine gives to other processes); the load average is
printed before and after. The accumulated profile is checked equal to the single pass's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from treadle.engine.drift import ProfileAccumulator, build_profile, compute_drift


def cpu_ms(function: Callable[[], Any], repeats: int) -> list[float]:
    function()  # warm-up
    timings = []
    for _ in range(repeats):
        start = time.thread_time()
        function()
        timings.append((time.thread_time() - start) * 1000)
    return timings


def spread(timings: list[float], unit: str = "ms") -> str:
    return (
        f"{statistics.median(timings):8.2f} {unit} (min {min(timings):.2f}, max {max(timings):.2f})"
    )


def load_average() -> str:
    return "load average " + ", ".join(f"{value:.2f}" for value in os.getloadavg())


def baseline(reference: dict[str, np.ndarray], current: dict[str, np.ndarray], bins: int) -> float:
    """The straightforward way: histogram each feature on shared edges, scipy's JS distance."""
    from scipy.spatial.distance import jensenshannon

    scores = []
    for name, values in reference.items():
        edges = np.histogram_bin_edges(values, bins=bins)
        p, _ = np.histogram(values, bins=edges)
        q, _ = np.histogram(np.clip(current[name], edges[0], edges[-1]), bins=edges)
        scores.append(jensenshannon(p, q, base=2) ** 2)
    return float(np.mean(scores))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=100)
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--bins", type=int, default=20)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        f"drift: {args.features} features x {args.samples} samples per profile, {args.bins} "
        f"bins; median (min, max) of {args.repeats}, thread CPU time; {load_average()}"
    )

    rng = np.random.default_rng(0)
    shifts = rng.uniform(0, 0.5, args.features)
    names = [f"feature_{i}" for i in range(args.features)]
    reference_data = {name: rng.normal(0, 1, args.samples) for name in names}
    current_data = {name: rng.normal(shifts[i], 1, args.samples) for i, name in enumerate(names)}
    reference = build_profile(reference_data, bins=args.bins)
    drift = compute_drift(reference, build_profile(current_data, reference=reference))

    current = build_profile(current_data, reference=reference)
    divergence = cpu_ms(lambda: compute_drift(reference, current), args.repeats)
    build_reference = cpu_ms(lambda: build_profile(reference_data, bins=args.bins), args.repeats)
    single_pass = cpu_ms(
        lambda: compute_drift(reference, build_profile(current_data, reference=reference)),
        args.repeats,
    )

    # as validation batches: float32 (rows, features) tensors
    matrix = np.stack([current_data[name] for name in names], axis=1).astype(np.float32)
    batches = [
        torch.from_numpy(matrix[start : start + args.batch])
        for start in range(0, args.samples, args.batch)
    ]
    reference_f32 = build_profile(
        np.stack([reference_data[name] for name in names], axis=1).astype(np.float32),
        bins=args.bins,
    )
    accumulator = ProfileAccumulator(reference_f32)

    def accumulate() -> None:
        for batch in batches:
            accumulator.update(batch)

    accumulate_all = cpu_ms(accumulate, args.repeats)
    per_batch = [total / len(batches) * 1000 for total in accumulate_all]
    epoch_end = cpu_ms(lambda: compute_drift(reference_f32, accumulator.profile()), args.repeats)
    fresh = ProfileAccumulator(reference_f32)
    for batch in batches:
        fresh.update(batch)
    same = fresh.profile().features == build_profile(matrix, reference=reference_f32).features

    print(f"  divergence only (2 profiles -> DriftMetrics):  {spread(divergence)}")
    print(f"  build the reference profile:                   {spread(build_reference)}")
    print(f"  epoch end, single pass (profile + divergence): {spread(single_pass)}  (target <= 10)")
    print(f"  epoch end, accumulated (counts -> divergence): {spread(epoch_end)}  (target <= 10)")
    print(
        f"    accumulating, per batch of {args.batch} rows:   {spread(per_batch, 'us')}; equal "
        f"to the single pass: {same}"
    )
    try:
        base = cpu_ms(lambda: baseline(reference_data, current_data, args.bins), args.repeats)
    except ImportError:
        print("  baseline skipped: scipy is not installed")
    else:
        both = statistics.median(build_reference) + statistics.median(single_pass)
        print(f"  baseline np.histogram + scipy, both sides:     {spread(base)}")
        print(
            f"  ratio, both profiles + divergence / baseline:  {both / statistics.median(base):.2f}"
        )
        print(
            f"  mean JS divergence: treadle {drift.js_divergence:.5f}, baseline "
            f"{baseline(reference_data, current_data, args.bins):.5f}"
        )
    print(f"  status {drift.status}, {len(drift.affected_features)} affected features")
    print(f"after: {load_average()}")


if __name__ == "__main__":
    main()
