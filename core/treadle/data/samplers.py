"""Resumable samplers: the order of an epoch is a function of ``(seed, epoch)`` alone, and a
pass can start after the samples a stopped run already consumed.

::

    sampler = ResumableSampler(dataset, shuffle=True, seed=42)
    sampler.set_epoch(3)
    sampler.set_start(96)     # the next pass skips epoch 3's first 96 samples
    loader = DataLoader(dataset, batch_size=32, sampler=sampler)

With ``torch.distributed``, :class:`DistributedResumableSampler` gives each rank its own
shard of the same permutation (as ``torch.utils.data.DistributedSampler`` does) and counts
``set_start`` in the rank's own samples.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sized
from typing import Any

import torch
from torch.utils.data import Sampler

__all__ = ["DistributedResumableSampler", "ResumableSampler", "epoch_permutation"]

_MASK_63 = (1 << 63) - 1


def epoch_permutation(size: int, seed: int, epoch: int) -> list[int]:
    """A random permutation of ``range(size)`` that depends only on ``(size, seed, epoch)``."""
    # mix seed and epoch so that (seed, epoch + 1) and (seed + 1, epoch) differ
    mixed = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + 1) & _MASK_63
    generator = torch.Generator().manual_seed(mixed)
    order: list[int] = torch.randperm(size, generator=generator).tolist()
    return order


class _Resumable(Sampler[int]):
    """Epoch and start bookkeeping shared by both samplers."""

    def __init__(self, data_source: Sized | int, *, shuffle: bool, seed: int) -> None:
        self.num_items = data_source if isinstance(data_source, int) else len(data_source)
        if self.num_items < 0:
            msg = f"a sampler needs a data set size >= 0: {self.num_items}"
            raise ValueError(msg)
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        """Use epoch ``epoch``'s order for the following passes."""
        if epoch < 0:
            msg = f"epoch must be >= 0: {epoch}"
            raise ValueError(msg)
        self.epoch = epoch

    def set_start(self, samples_consumed: int) -> None:
        """Make the next pass skip the epoch's first ``samples_consumed`` samples (of this
        rank, for the distributed sampler); passes after it start at 0 again.

        :raises ValueError: more samples than the epoch holds, or a negative number.
        """
        total = self._epoch_length()
        if not 0 <= samples_consumed <= total:
            msg = f"set_start({samples_consumed}): the epoch holds {total} samples"
            raise ValueError(msg)
        self.start = samples_consumed

    def state_dict(self) -> dict[str, int]:
        """The epoch and the pending start, to restore with :meth:`load_state_dict`."""
        return {"epoch": self.epoch, "start": self.start, "seed": self.seed}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (the seed must be the same)."""
        if int(state.get("seed", self.seed)) != self.seed:
            msg = f"sampler state has seed {state['seed']}, this sampler {self.seed}"
            raise ValueError(msg)
        self.set_epoch(int(state["epoch"]))
        self.set_start(int(state["start"]))

    def epoch_indices(self) -> list[int]:
        """Every index of the current epoch in order, ignoring the start."""
        raise NotImplementedError

    def _epoch_length(self) -> int:
        raise NotImplementedError

    def __iter__(self) -> Iterator[int]:
        start, self.start = self.start, 0
        return iter(self.epoch_indices()[start:])

    def __len__(self) -> int:
        """Samples the next pass yields."""
        return self._epoch_length() - self.start


class ResumableSampler(_Resumable):
    """Every index once per epoch: shuffled by ``(seed, epoch)``, or in order.

    :param data_source: the dataset (anything with ``len()``) or its size.
    :param shuffle: a new permutation each epoch; ``False`` gives ``0, 1, 2, ...``.
    :param seed: the permutation's seed; the same seed and epoch give the same order in
        every process and run.
    """

    def __init__(self, data_source: Sized | int, *, shuffle: bool = True, seed: int = 42) -> None:
        super().__init__(data_source, shuffle=shuffle, seed=seed)

    def epoch_indices(self) -> list[int]:
        if self.shuffle:
            return epoch_permutation(self.num_items, self.seed, self.epoch)
        return list(range(self.num_items))

    def _epoch_length(self) -> int:
        return self.num_items

    def __repr__(self) -> str:
        return (
            f"ResumableSampler({self.num_items} samples, shuffle={self.shuffle}, "
            f"seed={self.seed}, epoch={self.epoch}, start={self.start})"
        )


class DistributedResumableSampler(_Resumable):
    """One rank's shard of each epoch's order: ranks take every ``num_replicas``-th index of
    one permutation, from their rank on, as ``torch.utils.data.DistributedSampler`` does.

    :param data_source: the dataset (anything with ``len()``) or its size.
    :param num_replicas: number of ranks; default the process group's world size.
    :param rank: this rank; default the process group's rank.
    :param shuffle: shuffle by ``(seed, epoch)``; otherwise the dataset's order.
    :param seed: the permutation's seed, the same on every rank.
    :param drop_last: drop the tail so every rank gets ``len // num_replicas`` samples;
        otherwise the order is padded with its own first indices to a multiple of
        ``num_replicas`` (every rank gets the same count; a few samples are seen twice).
    :param even_shards: ``False`` neither pads nor drops (for evaluation: every sample exactly
        once, ranks may differ by one sample).
    :raises ValueError: ``rank`` outside ``0..num_replicas-1``, or no process group to ask.
    """

    def __init__(
        self,
        data_source: Sized | int,
        *,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        seed: int = 42,
        drop_last: bool = False,
        even_shards: bool = True,
    ) -> None:
        super().__init__(data_source, shuffle=shuffle, seed=seed)
        if num_replicas is None or rank is None:
            import torch.distributed as dist

            if not (dist.is_available() and dist.is_initialized()):
                msg = (
                    "DistributedResumableSampler needs num_replicas and rank, or an "
                    "initialized torch.distributed process group"
                )
                raise ValueError(msg)
            num_replicas = dist.get_world_size() if num_replicas is None else num_replicas
            rank = dist.get_rank() if rank is None else rank
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            msg = f"rank must lie in 0..num_replicas-1: rank {rank}, num_replicas {num_replicas}"
            raise ValueError(msg)
        self.num_replicas = num_replicas
        self.rank = rank
        self.drop_last = drop_last
        self.even_shards = even_shards

    def _epoch_length(self) -> int:
        if not self.even_shards:
            return len(range(self.rank, self.num_items, self.num_replicas))
        if self.drop_last:
            return self.num_items // self.num_replicas
        return math.ceil(self.num_items / self.num_replicas)

    def epoch_indices(self) -> list[int]:
        if self.shuffle:
            order = epoch_permutation(self.num_items, self.seed, self.epoch)
        else:
            order = list(range(self.num_items))
        if not self.even_shards:
            return order[self.rank :: self.num_replicas]
        total = self._epoch_length() * self.num_replicas
        if total > len(order) and order:
            repeats = math.ceil((total - len(order)) / len(order))
            order = order + (order * repeats)[: total - len(order)]
        return order[:total][self.rank :: self.num_replicas]

    def __repr__(self) -> str:
        return (
            f"DistributedResumableSampler({self.num_items} samples, rank {self.rank} of "
            f"{self.num_replicas}, shuffle={self.shuffle}, seed={self.seed}, "
            f"epoch={self.epoch}, start={self.start})"
        )
