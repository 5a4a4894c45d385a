"""Summing streaming metrics' state over the ranks before ``compute()``: a streaming metric
keeps running sums only (the protocol's rule), so its state is additive across shards."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist

from treadle.engine.distributed.errors import DistributedError

__all__ = ["add_metric_state", "sum_metric_states"]


def sum_metric_states(metrics: Sequence[object], world_size: int, device: torch.device) -> None:
    """Sum every tensor each metric holds, directly or in an object it holds one level down
    (such as a numerator-and-denominator pair), over the ranks, in place. A state still
    ``None`` on a rank that saw no batch becomes zeros. One ``all_gather_object`` agrees the
    layout, one ``all_reduce`` sums everything. A collective.

    :raises DistributedError: the ranks' metrics hold differently shaped state.
    """
    local = _metric_state_layout(metrics)
    layouts: list[Any] = [None] * world_size
    dist.all_gather_object(layouts, local)
    merged: dict[tuple[int, str], tuple[tuple[int, ...], str]] = {}
    for layout in layouts:
        for key, shape_and_type in layout.items():
            previous = merged.setdefault(key, shape_and_type)
            if previous != shape_and_type:
                msg = (
                    f"metric state {key[1]!r} of metric {key[0]} differs between ranks: "
                    f"{previous} and {shape_and_type}; a streaming metric must keep sums "
                    f"of a fixed shape"
                )
                raise DistributedError(msg)
    if not merged:
        return
    keys = sorted(merged)
    tensors = []
    for key in keys:
        shape, type_name = merged[key]
        value = _get_state(metrics[key[0]], key[1])
        if value is None:
            value = torch.zeros(shape, dtype=getattr(torch, type_name), device=device)
        tensors.append(value)
    flat = torch.cat([tensor.detach().to(device, torch.float64).reshape(-1) for tensor in tensors])
    dist.all_reduce(flat)
    offset = 0
    for key, tensor in zip(keys, tensors, strict=True):
        size = tensor.numel()
        summed = flat[offset : offset + size].reshape(tensor.shape)
        offset += size
        _set_state(metrics[key[0]], key[1], summed.to(tensor.device, tensor.dtype))


def _metric_state_layout(metrics: Sequence[object]) -> dict[tuple[int, str], tuple[Any, str]]:
    """``(metric index, attribute path) -> (shape, dtype name)`` of each tensor state."""
    layout: dict[tuple[int, str], tuple[Any, str]] = {}
    for index, metric in enumerate(metrics):
        for path, value in _state_slots(metric):
            if isinstance(value, torch.Tensor):
                layout[(index, path)] = (
                    tuple(value.shape),
                    str(value.dtype).removeprefix("torch."),
                )
    return layout


def _state_slots(metric: object) -> Iterator[tuple[str, torch.Tensor | None]]:
    attributes = getattr(metric, "__dict__", None)
    if attributes is None:
        return
    for name, value in attributes.items():
        if isinstance(value, torch.Tensor):
            yield name, value
        elif _is_state_holder(value):
            for inner, inner_value in vars(value).items():
                if inner_value is None or isinstance(inner_value, torch.Tensor):
                    yield f"{name}.{inner}", inner_value


def _is_state_holder(value: object) -> bool:
    return (
        hasattr(value, "__dict__")
        and not isinstance(value, type | torch.nn.Module)
        and not callable(value)
    )


def _get_state(metric: object, path: str) -> torch.Tensor | None:
    owner, _, name = path.rpartition(".")
    holder = getattr(metric, owner) if owner else metric
    value = getattr(holder, name, None)
    return value if isinstance(value, torch.Tensor) else None


def _set_state(metric: object, path: str, value: torch.Tensor) -> None:
    owner, _, name = path.rpartition(".")
    holder = getattr(metric, owner) if owner else metric
    setattr(holder, name, value)


def add_metric_state(target: object, source: object) -> None:
    """Add ``source``'s state into ``target``'s, in place, as :func:`sum_metric_states` sums
    two ranks' metrics: every tensor each holds, directly or one level down; a state still
    ``None`` in ``target`` takes ``source``'s. What the conformance kit uses to check that a
    metric's state adds up over shards (:mod:`treadle.testing.metrics`)."""
    current = dict(_state_slots(target))
    for path, value in _state_slots(source):
        if value is None:
            continue
        mine = current.get(path)
        _set_state(target, path, value.clone() if mine is None else mine + value)
