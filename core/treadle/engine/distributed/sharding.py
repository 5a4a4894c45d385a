"""FSDP2 specifics: sharding a model block by block, and the whole-gradient norms the gradient
monitor checks when each rank holds only shards of the gradients."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import torch
import torch.distributed as dist

__all__ = ["WholeGradientNorms", "shard_model"]


def shard_model(model: torch.nn.Module) -> None:
    """Shard ``model`` in place with ``fully_shard``: every block of each ``nn.ModuleList``
    (a transformer's layers), then the root, after broadcasting rank 0's weights so that
    every rank shards the same model. A collective."""
    from torch.distributed.fsdp import fully_shard

    with torch.no_grad():
        for tensor in itertools.chain(model.parameters(), model.buffers()):
            dist.broadcast(tensor.data, src=0)
    # innermost first: a block is sharded before any block holding it
    blocks = [
        block
        for module in reversed(list(model.modules()))
        if isinstance(module, torch.nn.ModuleList)
        for block in module
    ]
    for block in blocks:
        fully_shard(block)
    fully_shard(model)


class _NormHolder:
    __slots__ = ("grad",)

    def __init__(self, grad: torch.Tensor) -> None:
        self.grad = grad


class WholeGradientNorms:
    """Iterates stand-ins whose ``grad`` is a 1-element tensor: the norm of a sharded
    parameter's whole gradient (the norm of that tensor is the norm itself)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self._model = model

    def __iter__(self) -> Iterator[_NormHolder]:
        gradients = [p.grad for p in self._model.parameters() if p.grad is not None]
        if not gradients:
            return iter(())
        norms = torch.stack(list(torch._foreach_norm(gradients)))
        if hasattr(norms, "full_tensor"):
            norms = norms.full_tensor()  # partial per-rank norms, combined
        return iter([_NormHolder(norm.reshape(1)) for norm in norms])
