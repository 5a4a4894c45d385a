"""Seeding and RNG state: Python, NumPy, torch CPU and CUDA, DataLoader workers, determinism."""

from __future__ import annotations

import logging
import os
import random
from typing import Any

import torch

__all__ = [
    "capture_rng_state",
    "make_generator",
    "restore_rng_state",
    "seed_worker",
    "set_random_seed",
]

logger = logging.getLogger(__name__)

# cuBLAS needs a fixed workspace for deterministic results (CUDA >= 10.2); see
# https://docs.nvidia.com/cuda/cublas/index.html#results-reproducibility
CUBLAS_WORKSPACE = ":4096:8"


def set_random_seed(seed: int, deterministic: bool = False) -> None:
    """Seed Python's ``random``, NumPy, torch on the CPU and on every CUDA device.

    :param seed: the seed, ``0 <= seed < 2**32``.
    :param deterministic: also make torch choose deterministic algorithms: cuDNN deterministic
        and not benchmarking, ``torch.use_deterministic_algorithms(True)`` (an operation with no
        deterministic version then raises), and the cuBLAS workspace variable set. Slower, and
        bit-exact between runs on the same hardware and software. ``False`` restores the
        fast defaults (cuDNN benchmarking on).

    DataLoader workers are seeded through :func:`seed_worker` and :func:`make_generator`.
    """
    if not 0 <= seed < 2**32:
        msg = f"seed must lie in [0, 2**32): {seed}"
        raise ValueError(msg)
    random.seed(seed)
    try:
        import numpy as np
    except ImportError:  # numpy is a dependency, but torch runs without it
        logger.debug("numpy is not installed; not seeding it")
    else:
        np.random.seed(seed)
    torch.manual_seed(seed)  # seeds every CUDA device too
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    else:
        if torch.are_deterministic_algorithms_enabled():
            # only when set: the call imports torch._inductor (seconds) even to switch off
            torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False
        torch.backends.cudnn.benchmark = True


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn`` for a DataLoader: seeds ``random`` and NumPy in each worker from the
    seed torch gave it (itself derived from the loader's generator), so workers differ from each
    other and repeat across runs."""
    worker_seed = torch.initial_seed() % 2**32
    random.seed(worker_seed)
    try:
        import numpy as np
    except ImportError:
        return
    np.random.seed(worker_seed)


def make_generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed``, for a DataLoader's ``generator=``."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def capture_rng_state() -> dict[str, Any]:
    """Every RNG state as plain types and tensors, loadable with ``torch.load(weights_only=True)``
    (NumPy's legacy state holds an array and ``np.float64``, which weights-only loading refuses)."""
    python_version, python_state, python_gauss = random.getstate()
    state: dict[str, Any] = {
        "python": [python_version, list(python_state), python_gauss],
        "torch": torch.get_rng_state(),
        "cuda": [t for t in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
    }
    try:
        import numpy as np
    except ImportError:
        return state
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    assert not isinstance(keys, str)  # legacy=True gives the tuple form
    state["numpy"] = [
        str(name),
        torch.from_numpy(keys.astype(np.int64)),
        int(position),
        int(has_gauss),
        float(cached_gaussian),
    ]
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`capture_rng_state` returned."""
    version, python_state, gauss = state["python"]
    random.setstate((version, tuple(python_state), gauss))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        import numpy as np

        name, keys, position, has_gauss, cached_gaussian = state["numpy"]
        np.random.set_state(
            (name, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian)
        )
