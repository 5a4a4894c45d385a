"""Optimizer with decay/no-decay parameter groups, and warmup-then-decay schedules per step."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from treadle.errors import ConfigError

if TYPE_CHECKING:
    from treadle.config import TrainingConfig

__all__ = [
    "NO_DECAY_MODULES",
    "WarmupThenDecay",
    "build_optimizer",
    "build_scheduler",
    "parameter_groups",
    "warmup_steps",
]

#: Modules whose weights are scales, not projections: never weight-decayed.
NO_DECAY_MODULES: tuple[type[torch.nn.Module], ...] = (
    torch.nn.LayerNorm,
    torch.nn.GroupNorm,
    torch.nn.LocalResponseNorm,
    torch.nn.RMSNorm,
    torch.nn.modules.batchnorm._NormBase,
)


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters in two groups: with ``weight_decay``, and without it for biases,
    normalization weights and any other parameter of fewer than two dimensions.

    Frozen parameters (``requires_grad=False``) are left out. A parameter shared by several
    modules is listed once.
    """
    no_decay_ids: set[int] = set()
    for module in model.modules():
        if isinstance(module, NO_DECAY_MODULES):
            no_decay_ids.update(id(p) for p in module.parameters(recurse=False))
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for parameter in model.parameters():
        if not parameter.requires_grad:
            continue
        if parameter.ndim < 2 or id(parameter) in no_decay_ids:
            no_decay.append(parameter)
        else:
            decay.append(parameter)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return [group for group in groups if group["params"]]


def build_optimizer(model: torch.nn.Module, config: TrainingConfig) -> torch.optim.Optimizer:
    """AdamW (or SGD with momentum 0.9) over :func:`parameter_groups` with the config's
    learning rate, betas, epsilon and weight decay.

    :raises ConfigError: the model has no trainable parameter.
    """
    groups = parameter_groups(model, config.weight_decay)
    if not groups:
        msg = (
            f"{type(model).__name__} has no trainable parameters (every requires_grad is False); "
            f"unfreeze some before training"
        )
        raise ConfigError(msg)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.learning_rate, momentum=0.9)
    return torch.optim.AdamW(
        groups, lr=config.learning_rate, betas=config.adam_betas, eps=config.adam_epsilon
    )


def warmup_steps(total_steps: int, warmup_ratio: float) -> int:
    """Optimizer steps of linear warmup: ``ceil(total_steps * warmup_ratio)``."""
    return math.ceil(total_steps * warmup_ratio)


class WarmupThenDecay:
    """Learning-rate factor for step ``n``: linear warmup from 0 to 1 over ``warmup`` steps,
    then linear or cosine decay to 0 at ``total`` steps, or constant.

    A class, not a closure, so ``LambdaLR.state_dict()`` saves it as plain numbers.
    """

    def __init__(self, warmup: int, total: int, schedule: str) -> None:
        self.warmup = warmup
        self.total = total
        self.schedule = schedule

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        if self.schedule == "constant":
            return 1.0
        remaining = max(self.total - self.warmup, 1)
        progress = min((step - self.warmup) / remaining, 1.0)
        if self.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0 - progress


def build_scheduler(
    optimizer: torch.optim.Optimizer, schedule: str, total_steps: int, warmup: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-optimizer-step schedule: :class:`WarmupThenDecay` over ``total_steps``.

    :param schedule: ``linear``, ``cosine`` or ``constant`` (after warmup).
    """
    if schedule not in ("linear", "cosine", "constant"):
        msg = f"Unknown scheduler {schedule!r}; choose linear, cosine or constant"
        raise ConfigError(msg)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, WarmupThenDecay(warmup, max(total_steps, 1), schedule)
    )
