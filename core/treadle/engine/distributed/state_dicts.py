"""Full checkpoints of a sharded (FSDP2) model: its whole state gathered to rank 0 in the
layout a single process saves, and a full state sharded back onto each rank when loading."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["by_index", "by_name", "full_state_sources", "sharding_targets"]


def full_state_sources(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, *, is_main: bool
) -> tuple[Any, Any]:
    """Objects whose ``state_dict()`` is the full (unsharded) model and optimizer state,
    gathered to rank 0's CPU memory, the optimizer's keyed by parameter index as a plain
    ``optimizer.state_dict()`` is, so the file is the same as a single process writes;
    ``(None, None)`` on the other ranks. A collective.
    """
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_state = get_model_state_dict(model, options=options)
    optimizer_state = get_optimizer_state_dict(model, optimizer, options=options)
    if not is_main:
        return None, None
    return _StateOf(model_state), _StateOf(by_index(optimizer_state))


def sharding_targets(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[Any, Any]:
    """Objects whose ``load_state_dict`` shards a full state dict onto this rank."""
    return _ShardingModel(model), _ShardingOptimizer(model, optimizer)


class _StateOf:
    """A ready state dict where the CheckpointManager expects a module or an optimizer."""

    def __init__(self, state: dict[str, Any]) -> None:
        self._state = state

    def state_dict(self) -> dict[str, Any]:
        return self._state


def by_index(state: Mapping[str, Any]) -> dict[str, Any]:
    """An optimizer state dict keyed by parameter name (torch.distributed.checkpoint's form)
    re-keyed by position across the parameter groups, as ``optimizer.state_dict()`` is."""
    index_of: dict[str, int] = {}
    groups = []
    for group in state["param_groups"]:
        indices = []
        for name in group["params"]:
            index_of.setdefault(name, len(index_of))
            indices.append(index_of[name])
        groups.append({**group, "params": indices})
    per_parameter = {index_of[name]: value for name, value in state["state"].items()}
    return {"state": per_parameter, "param_groups": groups}


def by_name(
    state: Mapping[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """The inverse of :func:`by_index` for this model and optimizer."""
    name_of = {id(parameter): name for name, parameter in model.named_parameters()}
    names = [name_of[id(p)] for group in optimizer.param_groups for p in group["params"]]
    groups = []
    for group in state["param_groups"]:
        groups.append({**group, "params": [names[int(index)] for index in group["params"]]})
    per_parameter = {names[int(index)]: value for index, value in state["state"].items()}
    return {"state": per_parameter, "param_groups": groups}


class _ShardingModel:
    def __init__(self, model: torch.nn.Module) -> None:
        self._model = model

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(self._model, state, options=StateDictOptions(full_state_dict=True))


class _ShardingOptimizer:
    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self._model = model
        self._optimizer = optimizer

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_optimizer_state_dict,
        )

        try:
            named = by_name(state, self._model, self._optimizer)
        except (IndexError, KeyError) as err:
            msg = f"the optimizer state does not fit this model's parameters: {err!r}"
            raise ValueError(msg) from err
        set_optimizer_state_dict(
            self._model,
            self._optimizer,
            named,
            options=StateDictOptions(full_state_dict=True),
        )
