"""What a checkpoint file holds: the dict a save builds from the model, optimizer and trainer
state (plain values and tensors only, so ``torch.load(weights_only=True)`` reads it), and
putting a loaded one back into the model and its companions."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from treadle.engine.checkpoints.errors import CheckpointError
from treadle.seed import capture_rng_state

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "apply_state",
    "build_payload",
    "check_loadable",
    "clean_metrics",
    "copy_to_cpu",
    "tensor_mib",
]

logger = logging.getLogger(__name__)

#: Version of the checkpoint dict's layout; a newer file is refused with an upgrade hint.
CHECKPOINT_FORMAT_VERSION = 1
_CHECKPOINT_FORMAT = "treadle.checkpoint"
_MIB = float(1 << 20)
_SEQUENCE_TYPES = (list, tuple, set)
_LEAF_TYPES = (type(None), bool, int, float, complex, str, bytes, bytearray)
_TORCH_LEAF_TYPES = (torch.dtype, torch.device, torch.Size)


def build_payload(
    *,
    epoch: int,
    global_step: int,
    mid_epoch: bool,
    timestamp: str,
    metrics: dict[str, float],
    monitor: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any,
    scaler: Any,
    trainer_state: dict[str, Any] | None,
    metadata: dict[str, Any],
    run_id: str | None = None,
) -> dict[str, Any]:
    """The checkpoint dict (its keys are listed in ``docs/checkpoints.md``)."""
    trainer_state = trainer_state or {}
    # the Trainer's state already holds these; pickling shares one copy of each
    rng_state = trainer_state.get("rng_state") or capture_rng_state()
    return {
        "format": _CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "epoch": epoch,
        "global_step": global_step,
        "mid_epoch": mid_epoch,
        "timestamp": timestamp,
        "metrics": metrics,
        "monitor": monitor,
        "model_state_dict": model.state_dict(),
        "optimizer_state_dict": None if optimizer is None else optimizer.state_dict(),
        "scheduler_state_dict": None if scheduler is None else scheduler.state_dict(),
        "scaler_state_dict": None if scaler is None else scaler.state_dict(),
        "trainer_state": trainer_state or None,
        "rng_state": rng_state,
        "config": trainer_state.get("config"),
        "task": trainer_state.get("task"),
        "metadata": metadata,
        "run_id": run_id,
        "torch_version": str(torch.__version__),
    }


def apply_state(
    file: Path,
    payload: Mapping[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any,
    scaler: Any,
) -> None:
    """Load the payload's states into the parts given.

    :raises CheckpointError: the file holds no optimizer state but an optimizer was given,
        or a state does not fit its part.
    """
    parts: list[tuple[str, Any, str]] = [("model", model, "model_state_dict")]
    if optimizer is not None:
        parts.append(("optimizer", optimizer, "optimizer_state_dict"))
    if scheduler is not None:
        parts.append(("scheduler", scheduler, "scheduler_state_dict"))
    if scaler is not None:
        parts.append(("scaler", scaler, "scaler_state_dict"))
    for what, target, key in parts:
        state = payload.get(key)
        if state is None or (what == "scaler" and not state):
            if what == "optimizer":
                msg = f"checkpoint {file} holds no optimizer state; load it without one"
                raise CheckpointError(msg)
            logger.warning("checkpoint %s holds no %s state; %s left as is", file, what, what)
            continue
        try:
            target.load_state_dict(state)
        except (RuntimeError, ValueError, KeyError, TypeError) as err:
            msg = f"checkpoint {file} does not fit the {what}: {err}"
            raise CheckpointError(msg) from err


def clean_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """``metrics`` as floats (0-d tensors and ints too).

    :raises ValueError: a name is not a string or a value not a number.
    """
    clean: dict[str, float] = {}
    for name, value in metrics.items():
        if not isinstance(name, str):
            msg = f"metric names must be strings, got {name!r}"
            raise ValueError(msg)
        number = value
        if isinstance(number, torch.Tensor):
            if number.numel() != 1:
                msg = f"metric {name!r} is a tensor of shape {tuple(number.shape)}, not a number"
                raise ValueError(msg)
            number = number.item()
        try:
            clean[name] = float(number)
        except (TypeError, ValueError) as err:
            msg = f"metric {name!r} is {value!r}, not a number"
            raise ValueError(msg) from err
    return clean


def check_loadable(value: Any, where: str) -> None:
    """Refuse, before anything is written, a value ``torch.load(weights_only=True)`` would
    refuse on load. Exact types: ``np.float64`` subclasses float and is still refused.

    :raises TypeError: naming the value's place, ``checkpoint['metadata']['root']``.
    """
    kind = type(value)
    if kind in _LEAF_TYPES or isinstance(value, (torch.Tensor, *_TORCH_LEAF_TYPES)):
        return
    if kind in (dict, OrderedDict):
        for key, item in value.items():
            if type(key) not in _LEAF_TYPES and type(key) is not tuple:
                msg = f"{where} has a key of type {type(key).__name__}: {key!r}"
                raise TypeError(msg)
            check_loadable(item, f"{where}[{key!r}]")
        return
    if kind in _SEQUENCE_TYPES:
        for index, item in enumerate(value):
            check_loadable(item, f"{where}[{index}]")
        return
    msg = (
        f"{where} is a {kind.__module__}.{kind.__qualname__}, which torch.load(weights_only=True) "
        "refuses: store plain values (str, int, float, bool, None, lists, dicts, tensors), "
        "such as str(path) or float(value)"
    )
    raise TypeError(msg)


def copy_to_cpu(value: Any, memo: dict[int, Any]) -> Any:
    """A copy of ``value`` whose tensors are fresh CPU tensors, so training can go on while
    the copy is written. Tensors seen twice (tied weights) are copied once."""
    if isinstance(value, torch.Tensor):
        found = memo.get(id(value))
        if found is None:
            found = memo[id(value)] = value.detach().to("cpu", copy=True)
        return found
    kind = type(value)
    if kind in (dict, OrderedDict):
        return kind((key, copy_to_cpu(item, memo)) for key, item in value.items())
    if kind in _SEQUENCE_TYPES:
        return kind(copy_to_cpu(item, memo) for item in value)
    return value


def tensor_mib(value: Any) -> float:
    """MiB held by the tensors in a nested state (each tensor counted once)."""
    seen: set[int] = set()
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            if id(item) not in seen:
                seen.add(id(item))
                total += item.nelement() * item.element_size()
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return total / _MIB
