"""Drift: profiles, Jensen-Shannon divergence (base 2) and drift status."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from treadle.engine.drift import (
    DataProfile,
    DriftError,
    FeatureHistogram,
    ProfileAccumulator,
    build_profile,
    build_token_profile,
    compute_drift,
    js_divergence,
)


def two_bin_profile(name_to_counts: dict[str, tuple[int, int]]) -> DataProfile:
    return DataProfile(
        features={
            name: FeatureHistogram(kind="numeric", edges=(0.0, 1.0, 2.0), counts=counts)
            for name, counts in name_to_counts.items()
        },
        num_samples=100,
    )


def test_identical_distributions_have_zero_divergence() -> None:
    assert js_divergence([3, 5, 2], [6, 10, 4]) == 0.0


def test_disjoint_distributions_have_divergence_one() -> None:
    assert js_divergence([1, 0, 0], [0, 2, 5]) == pytest.approx(1.0)


def test_divergence_of_a_known_pair_matches_the_hand_computation() -> None:
    # p = (1, 0), q = (1/2, 1/2), m = (3/4, 1/4)
    expected = 0.5 * math.log2(4 / 3) + 0.5 * (0.5 * math.log2(2 / 3) + 0.5 * math.log2(2))
    assert js_divergence([1, 0], [1, 1]) == pytest.approx(expected)
    assert expected == pytest.approx(0.311278, abs=1e-6)


def test_divergence_is_symmetric_and_matches_scipy() -> None:
    distance = pytest.importorskip("scipy.spatial.distance")
    rng = np.random.default_rng(0)
    for _ in range(20):
        p, q = rng.integers(0, 50, size=12), rng.integers(0, 50, size=12)
        forward, backward = js_divergence(p, q), js_divergence(q, p)
        assert forward == pytest.approx(backward, abs=1e-12)
        assert forward == pytest.approx(distance.jensenshannon(p, q, base=2) ** 2, abs=1e-12)
        assert 0.0 <= forward <= 1.0


def test_an_empty_histogram_against_a_full_one_is_total_drift() -> None:
    assert js_divergence([0, 0], [1, 2]) == 1.0
    assert js_divergence([0, 0], [0, 0]) == 0.0


@pytest.mark.parametrize(
    ("warning", "critical", "status"),
    [(0.1, 0.2, "critical"), (0.3, 0.4, "warning"), (0.4, 0.5, "healthy")],
)
def test_status_follows_the_thresholds(warning: float, critical: float, status: str) -> None:
    reference = two_bin_profile({"x": (10, 0)})
    current = two_bin_profile({"x": (5, 5)})  # divergence 0.3113
    drift = compute_drift(
        reference, current, warning_threshold=warning, critical_threshold=critical
    )
    assert drift.status == status
    assert drift.details["x"] == pytest.approx(0.311278, abs=1e-6)
    assert drift.affected_features == ([] if status == "healthy" else ["x"])


def test_one_drifted_feature_sets_the_status_and_the_mean_is_reported() -> None:
    reference = two_bin_profile({"stable": (5, 5), "moved": (10, 0), "shifted": (10, 0)})
    current = two_bin_profile({"stable": (5, 5), "moved": (0, 10), "shifted": (5, 5)})
    drift = compute_drift(reference, current)
    assert drift.status == "critical"
    assert drift.affected_features == ["moved", "shifted"]  # worst first
    assert drift.js_divergence == pytest.approx((0.0 + 1.0 + 0.311278) / 3, abs=1e-6)
    assert drift.num_features == 3


def test_new_data_from_the_training_distribution_is_healthy_and_a_shift_is_not() -> None:
    rng = np.random.default_rng(0)
    training = {"age": rng.normal(40, 10, 50_000), "income": rng.lognormal(10, 1, 50_000)}
    reference = build_profile(training)
    same = build_profile(
        {"age": rng.normal(40, 10, 20_000), "income": rng.lognormal(10, 1, 20_000)},
        reference=reference,
    )
    shifted = build_profile(
        {"age": rng.normal(60, 10, 20_000), "income": rng.lognormal(10, 1, 20_000)},
        reference=reference,
    )
    assert compute_drift(reference, same).status == "healthy"
    drift = compute_drift(reference, shifted)
    assert drift.status == "critical"
    assert drift.affected_features == ["age"]


def test_profiles_bin_with_the_reference_edges_clamp_outliers_and_count_nans() -> None:
    reference = build_profile({"x": [0.0, 1.0, 2.0, 3.0, 4.0]}, bins=4)
    assert reference.features["x"].edges == (0.0, 1.0, 2.0, 3.0, 4.0)
    assert reference.features["x"].counts == (1, 1, 1, 2)
    current = build_profile({"x": [-10.0, 0.5, 99.0, math.nan]}, reference=reference)
    assert current.features["x"].edges == reference.features["x"].edges
    assert current.features["x"].counts == (2, 0, 0, 1)
    assert current.features["x"].missing == 1


def test_uneven_edges_bin_like_numpy_histogram() -> None:
    edges = (0.0, 1.0, 5.0, 6.0)
    reference = DataProfile(
        features={"x": FeatureHistogram(kind="numeric", edges=edges, counts=(0, 0, 0))},
        num_samples=0,
    )
    values = np.random.default_rng(1).uniform(0, 6, 1000)
    profile = build_profile({"x": values}, reference=reference)
    assert profile.features["x"].counts == tuple(np.histogram(values, bins=edges)[0].tolist())


def test_a_missing_column_counts_as_drift() -> None:
    reference = build_profile({"x": np.arange(100.0)})
    current = build_profile({"x": np.full(100, np.nan)}, reference=reference)
    assert compute_drift(reference, current).details["x"] == pytest.approx(1.0)


def test_tensors_and_2d_arrays_profile_as_numbered_features() -> None:
    profile = build_profile(torch.randn(100, 3))
    assert list(profile.features) == ["feature_0", "feature_1", "feature_2"]
    assert profile.num_samples == 100
    with pytest.raises(DriftError, match="2-D"):
        build_profile(np.zeros(5))


def test_profiles_round_trip_through_json() -> None:
    profile = build_profile({"a": np.arange(50.0), "b/c": np.linspace(-1, 1, 50)})
    tokens = build_token_profile([[1, 2, 3], [3, 3]], vocab_size=5)
    for original in (profile, tokens):
        restored = DataProfile.from_dict(json.loads(json.dumps(original.to_dict())))
        assert restored == original


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "other"}, "Not a treadle profile"),
        ({"features": {"x": {"kind": "numeric", "edges": [0, 1], "counts": [1, 2]}}}, "'x'"),
        ({"features": {"x": {"kind": "numeric", "edges": [1, 0], "counts": [1]}}}, "increase"),
        ({"features": {"x": {"kind": "ordinal", "edges": None, "counts": [1]}}}, "kind"),
        ({"features": {"x": {"kind": "categorical", "edges": None, "counts": [-1]}}}, ">= 0"),
    ],
)
def test_malformed_profiles_are_refused_naming_the_problem(
    change: dict[str, object], message: str
) -> None:
    data = build_profile({"x": np.arange(5.0)}).to_dict() | change
    with pytest.raises(DriftError, match=message):
        DataProfile.from_dict(data)


def test_profiles_binned_differently_cannot_be_compared() -> None:
    reference = build_profile({"x": np.arange(10.0)})
    independent = build_profile({"x": np.arange(5.0, 20.0)})
    with pytest.raises(DriftError, match=r"reference=reference_profile"):
        compute_drift(reference, independent)
    with pytest.raises(DriftError, match="only in the current: y"):
        compute_drift(reference, build_profile({"x": np.arange(10.0), "y": np.arange(10.0)}))


def test_token_profiles_count_ids_and_lengths_from_dataset_samples() -> None:
    samples = [{"input_ids": torch.tensor([1, 2, 2, 0])}, {"input_ids": [2, 4, 0, 0]}]
    profile = build_token_profile(samples, vocab_size=5, ignore_ids=[0])
    assert profile.features["token_id"].counts == (0, 1, 3, 0, 1)
    assert sum(profile.features["sequence_length"].counts) == 2
    assert profile.num_samples == 2
    with pytest.raises(DriftError, match="Sequence 1 holds token id 7"):
        build_token_profile([[1], [7]], vocab_size=5)


def test_token_drift_grows_with_a_different_vocabulary_use() -> None:
    rng = np.random.default_rng(0)
    training = [rng.integers(0, 50, 32) for _ in range(500)]
    reference = build_token_profile(training, vocab_size=100)
    same = build_token_profile(
        [rng.integers(0, 50, 32) for _ in range(500)], vocab_size=100, reference=reference
    )
    other = build_token_profile(
        [rng.integers(40, 100, 32) for _ in range(500)], vocab_size=100, reference=reference
    )
    assert compute_drift(reference, same).details["token_id"] < 0.01
    assert compute_drift(reference, other).details["token_id"] > 0.5


# -- accumulating as batches pass ---------------------------------------------------------------


def _awkward_rows() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    reference = rng.normal(0, 1, (5000, 5))
    reference[:, 3] *= 100
    current = rng.normal(0.3, 1.2, (3000, 5))
    current[5, 2] = current[6, 2] = np.nan
    current[7, 2] = np.inf
    current[9, 1] = -np.inf
    current[11, 4] = 1e30
    current[12, 0] = np.nan
    return reference, current


def test_an_accumulated_profile_equals_the_single_pass_count_for_count() -> None:
    """Batches of a (rows, features) float32 tensor, binned in one vectorized pass each, give
    the counts and NaNs of build_profile over all rows; so does a mapping of columns."""
    reference_rows, current_rows = _awkward_rows()
    current_rows = current_rows.astype(np.float32)
    reference = build_profile(reference_rows, bins=13)
    whole = build_profile(current_rows, reference=reference)
    accumulator = ProfileAccumulator(reference)
    for start in range(0, 3000, 256):
        accumulator.update(torch.from_numpy(current_rows[start : start + 256]))
    accumulated = accumulator.profile()
    assert accumulated.features == whole.features
    assert accumulated.num_samples == 3000
    assert accumulated.features["feature_2"].missing == 2
    columns = ProfileAccumulator(reference)
    for start in range(0, 3000, 500):
        columns.update({f"feature_{i}": current_rows[start : start + 500, i] for i in range(5)})
    assert columns.profile().features == whole.features
    assert compute_drift(reference, accumulated).details == compute_drift(reference, whole).details


def test_an_accumulator_bins_uneven_edges_and_named_columns_like_build_profile() -> None:
    edges = (0.0, 1.0, 5.0, 6.0)
    reference = DataProfile(
        features={
            name: FeatureHistogram(kind="numeric", edges=edges, counts=(0, 0, 0))
            for name in ("feature_0", "feature_1")
        },
        num_samples=0,
    )
    rows = np.random.default_rng(1).uniform(-1, 7, (1000, 2))
    accumulator = ProfileAccumulator(reference)
    accumulator.update(rows[:600])
    accumulator.update(rows[600:])
    assert accumulator.profile().features == build_profile(rows, reference=reference).features


def test_an_accumulator_refuses_token_profiles_and_batches_lacking_a_feature() -> None:
    tokens = build_token_profile([[1, 2, 3]], vocab_size=5)
    with pytest.raises(DriftError, match="categorical"):
        ProfileAccumulator(tokens)
    accumulator = ProfileAccumulator(build_profile({"x": [0.0, 1.0], "y": [1.0, 2.0]}))
    with pytest.raises(DriftError, match="lacks features of the reference profile: y"):
        accumulator.update({"x": [0.5]})
    with pytest.raises(DriftError, match="2-D array"):
        accumulator.update(np.zeros((2, 2, 2)))
