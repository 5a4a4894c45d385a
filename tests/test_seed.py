"""Seeding: every generator repeats, RNG state survives a weights-only checkpoint round trip."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from treadle.seed import (
    capture_rng_state,
    make_generator,
    restore_rng_state,
    seed_worker,
    set_random_seed,
)


def draw() -> tuple[float, float, list[float]]:
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def test_the_same_seed_gives_the_same_numbers_in_every_library() -> None:
    set_random_seed(123)
    first = draw()
    set_random_seed(123)
    assert draw() == first
    set_random_seed(124)
    assert draw() != first


def test_deterministic_mode_sets_the_switches_and_fast_mode_clears_them() -> None:
    try:
        set_random_seed(1, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic
        assert not torch.backends.cudnn.benchmark
    finally:
        set_random_seed(1, deterministic=False)
    assert not torch.are_deterministic_algorithms_enabled()


def test_seeds_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError, match="seed must lie in"):
        set_random_seed(-1)


def test_rng_state_round_trips_through_a_weights_only_load() -> None:
    set_random_seed(7)
    random.random()
    np.random.randn()  # leaves a cached gaussian in NumPy's legacy state
    state = capture_rng_state()
    expected = draw()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    restore_rng_state(loaded)
    assert draw() == expected


def test_seeded_loaders_with_workers_repeat_their_order_and_worker_randomness() -> None:
    class Noisy(torch.utils.data.Dataset[float]):
        def __len__(self) -> int:
            return 8

        def __getitem__(self, index: int) -> float:
            return index + random.random()

    def run() -> list[float]:
        loader = DataLoader(
            Noisy(),
            batch_size=2,
            shuffle=True,
            num_workers=2,
            worker_init_fn=seed_worker,
            generator=make_generator(5),
        )
        return [value for batch in loader for value in batch.tolist()]

    assert run() == run()
