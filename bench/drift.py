"""Benchmark drift detection: 100 features x 100k samples per profile.

Prints medians (ms) of the divergence alone (two ready profiles -> DriftMetrics), of profile
building (numeric data -> DataProfile, reference edges and reused edges), and of the
straightforward baseline: per feature ``numpy.histogram`` on both sides and
``scipy.spatial.distance.jensenshannon``. Target: the divergence under 20 ms.

    .venv/bin/python bench/drift.py [--features 100] [--samples 100000] [--repeats 7]

The machine is shared: read the numbers as measured there and then, not as constants.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from treadle.engine.drift import build_profile, compute_drift


def median_ms(function: Callable[[], Any], repeats: int) -> float:
    function()  # warm-up
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        timings.append((time.perf_counter() - start) * 1000)
    return statistics.median(timings)


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
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    shifts = rng.uniform(0, 0.5, args.features)
    reference_data = {f"f{i}": rng.normal(0, 1, args.samples) for i in range(args.features)}
    current_data = {f"f{i}": rng.normal(shifts[i], 1, args.samples) for i in range(args.features)}
    reference = build_profile(reference_data, bins=args.bins)
    current = build_profile(current_data, reference=reference)
    drift = compute_drift(reference, current)

    divergence = median_ms(lambda: compute_drift(reference, current), args.repeats)
    build_reference = median_ms(lambda: build_profile(reference_data, bins=args.bins), args.repeats)
    build_current = median_ms(
        lambda: build_profile(current_data, reference=reference), args.repeats
    )
    end_to_end = build_current + divergence
    print(
        f"drift: {args.features} features x {args.samples} samples per profile, "
        f"{args.bins} bins; median of {args.repeats} (ms)"
    )
    print(f"  divergence only (2 profiles -> DriftMetrics): {divergence:8.2f}  (target < 20)")
    print(f"  build reference profile (edges from data):   {build_reference:8.2f}")
    print(f"  build current profile (reference edges):     {build_current:8.2f}")
    print(f"  current profile + divergence:                {end_to_end:8.2f}")
    try:
        base = median_ms(lambda: baseline(reference_data, current_data, args.bins), args.repeats)
    except ImportError:
        print("  baseline skipped: scipy is not installed")
    else:
        print(f"  baseline np.histogram + scipy, both sides:   {base:8.2f}")
        both_sides = build_reference + build_current + divergence
        print(f"  ratio, both profiles + divergence / baseline: {both_sides / base:.2f}")
        print(
            f"  mean JS divergence: treadle {drift.js_divergence:.5f}, baseline "
            f"{baseline(reference_data, current_data, args.bins):.5f}"
        )
    print(f"  status {drift.status}, {len(drift.affected_features)} affected features")


if __name__ == "__main__":
    main()
