"""One process's place in a distributed run and the collectives the Trainer needs: wrapping
the model (DDP or FSDP2), gradient synchronization per accumulation window, cross-rank sums of
losses, items and metrics, lockstep iteration, agreeing on control flags, and the end of the
run. Everything here that talks to other ranks is a collective."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import torch
import torch.distributed as dist

from treadle.engine.distributed.errors import DistributedError
from treadle.engine.distributed.failures import FailureReporter, abort_group
from treadle.engine.distributed.metric_sync import sum_metric_states
from treadle.engine.distributed.sharding import WholeGradientNorms, shard_model
from treadle.engine.distributed.state_dicts import full_state_sources, sharding_targets

if TYPE_CHECKING:
    from treadle.control import TrainerControl
    from treadle.engine.loops import EpochProgress

__all__ = ["DistributedContext"]

_T = TypeVar("_T")
_EXHAUSTED: Any = object()


class DistributedContext:
    """One process's place in a distributed run and the collectives the Trainer needs.

    :param rank: this process among all, from 0.
    :param world_size: the number of processes.
    :param local_rank: this process among those on its machine.
    :param device: the device this rank trains on (collective buffers live there).
    :param owns_group: whether :meth:`close` destroys the process group.
    :param store: the group's key-value store, for failure reports; ``None`` to look it up.
    """

    def __init__(
        self,
        *,
        rank: int,
        world_size: int,
        local_rank: int,
        device: torch.device,
        owns_group: bool,
        store: Any = None,
    ) -> None:
        self.rank = rank
        self.world_size = world_size
        self.local_rank = local_rank
        self.device = device
        self.owns_group = owns_group
        self._reporter = FailureReporter(rank, store)
        self._closed = False
        self._reported = False
        #: ``"ddp"``, ``"fsdp"`` or ``None``, once :meth:`wrap_model` ran
        self.parallel: str | None = None
        self._ddp: Any = None
        self._fsdp: Any = None
        self._gradient_sync = True

    @classmethod
    def current(cls, device: torch.device) -> DistributedContext | None:
        """A context over an already initialized process group (not owned), or ``None``."""
        if not (dist.is_available() and dist.is_initialized()):
            return None
        rank = dist.get_rank()
        local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        return cls(
            rank=rank,
            world_size=dist.get_world_size(),
            local_rank=local_rank,
            device=device,
            owns_group=False,
        )

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, which alone writes checkpoints, logs and output."""
        return self.rank == 0

    def __repr__(self) -> str:
        return (
            f"DistributedContext(rank={self.rank}, world_size={self.world_size}, "
            f"device={self.device}, parallel={self.parallel})"
        )

    # -- the model ---------------------------------------------------------------------------

    def wrap_model(self, model: torch.nn.Module, strategy: str) -> torch.nn.Module:
        """Make ``model`` data-parallel; returns the module to call forward on.

        ``ddp`` (and ``auto`` with more than one process) wraps it in
        ``DistributedDataParallel``; ``model`` itself stays the plain module (its state dict
        has no ``module.`` prefix). ``fsdp`` shards it in place with FSDP2's ``fully_shard``:
        every block of each ``nn.ModuleList`` (a transformer's layers), then the root, after
        broadcasting rank 0's weights so that every rank shards the same model. Build the
        optimizer after this call: FSDP replaces the parameters.

        :param strategy: ``auto``, ``ddp`` or ``fsdp``.
        :raises ValueError: an unknown strategy.
        """
        if strategy not in ("auto", "ddp", "fsdp"):
            msg = f"unknown distributed strategy {strategy!r}: use 'auto', 'ddp' or 'fsdp'"
            raise ValueError(msg)
        if strategy == "auto" and self.world_size == 1:
            return model
        if strategy == "fsdp":
            shard_model(model)
            self.parallel = "fsdp"
            self._fsdp = model
            return model
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device] if self.device.type == "cuda" else None
        wrapped = DistributedDataParallel(model, device_ids=device_ids)
        self.parallel = "ddp"
        self._ddp = wrapped
        return wrapped

    def micro_batch(self, is_final: bool) -> contextlib.AbstractContextManager[Any]:
        """Surround one micro-batch's forward and backward: gradients are synchronized only
        on the window's final micro-batch (DDP's ``no_sync``, FSDP's
        ``set_requires_gradient_sync``)."""
        if self._ddp is not None and not is_final:
            context: contextlib.AbstractContextManager[Any] = self._ddp.no_sync()
            return context
        if self._fsdp is not None and self._gradient_sync != is_final:
            self._fsdp.set_requires_gradient_sync(is_final)
            self._gradient_sync = is_final
        return contextlib.nullcontext()

    def watched_gradients(self, model: torch.nn.Module) -> torch.nn.Module | Iterable[Any]:
        """What the gradient monitor should look at: the model itself, or under FSDP, whose
        gradients are shards, stand-ins holding each parameter's whole-gradient norm as their
        ``grad`` (computed only when the monitor iterates them, on its check steps, with one
        all-reduce; every rank checks on the same steps)."""
        if self.parallel != "fsdp":
            return model
        return WholeGradientNorms(model)

    # -- sums across ranks -------------------------------------------------------------------

    def _sum(self, values: Sequence[float]) -> list[float]:
        tensor = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        result: list[float] = tensor.tolist()
        return result

    def sum_items(self, items: _T) -> _T:
        """The items of one accumulation window summed over the ranks (an int stays an int)."""
        (total,) = self._sum([float(items)])  # type: ignore[arg-type]
        if isinstance(items, int):
            return round(total)  # type: ignore[return-value]
        return total  # type: ignore[return-value]

    def any_true(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any rank."""
        (total,) = self._sum([1.0 if flag else 0.0])
        return total > 0

    def mean(self, value: float) -> float:
        """``value`` averaged over the ranks."""
        (total,) = self._sum([value])
        return total / self.world_size

    def sum_epoch(
        self, loss_sum: torch.Tensor, batches: int, samples: int
    ) -> tuple[float, int, int]:
        """A training epoch's loss sum, batches and samples, summed over the ranks."""
        totals = torch.stack(
            [
                loss_sum.detach().to(self.device, torch.float64).reshape(()),
                torch.tensor(float(batches), dtype=torch.float64, device=self.device),
                torch.tensor(float(samples), dtype=torch.float64, device=self.device),
            ]
        )
        dist.all_reduce(totals)
        loss_total, batches_total, samples_total = totals.tolist()
        return loss_total, round(batches_total), round(samples_total)

    def sum_validation(
        self, loss_total: torch.Tensor, items: Any, samples: int, batches: int
    ) -> tuple[torch.Tensor, Any, int, int]:
        """A validation's item-weighted loss sum, items, samples and batches over the ranks."""
        totals = torch.stack(
            [
                loss_total.detach().to(self.device, torch.float64).reshape(()),
                torch.tensor(float(items), dtype=torch.float64, device=self.device),
                torch.tensor(float(samples), dtype=torch.float64, device=self.device),
                torch.tensor(float(batches), dtype=torch.float64, device=self.device),
            ]
        )
        dist.all_reduce(totals)
        items_total: Any = float(totals[1])
        if isinstance(items, int):
            items_total = round(items_total)
        return totals[0], items_total, round(float(totals[2])), round(float(totals[3]))

    def sync_metrics(self, metrics: Sequence[object]) -> None:
        """Sum every streaming metric's state over the ranks, before ``compute()``
        (:func:`~treadle.engine.distributed.metric_sync.sum_metric_states`).

        :raises DistributedError: the ranks' metrics hold differently shaped state.
        """
        sum_metric_states(metrics, self.world_size, self.device)

    def lockstep(self, batches: Iterable[_T]) -> Iterator[tuple[_T, bool]]:
        """``(batch, counts)`` until every rank's batches are used up: a rank that runs out
        first repeats its last batch with ``counts`` false, so that a sharded model's forward
        (FSDP gathers weights from every rank in it) never waits for a missing rank.

        :raises DistributedError: this rank has no batch at all while another has.
        """
        iterator = iter(batches)
        last: list[_T] = []
        while True:
            batch = next(iterator, _EXHAUSTED)
            if not self.any_true(batch is not _EXHAUSTED):
                return
            if batch is not _EXHAUSTED:
                last[:] = [batch]
                yield batch, True
            elif last:
                yield last[0], False
            else:
                msg = (
                    f"rank {self.rank} has no validation batch while other ranks have; "
                    f"with FSDP every rank needs at least one: use at least "
                    f"{self.world_size} validation samples"
                )
                raise DistributedError(msg)

    def check_same_length(self, batches: int, what: str) -> None:
        """Every rank must take the same number of optimizer steps, or a collective hangs.

        :raises DistributedError: the ranks' loaders yield different numbers of batches.
        """
        most, negated_least = self._sum_max([float(batches), -float(batches)])
        least = -negated_least
        if most != least:
            msg = (
                f"{what} gives between {least:.0f} and {most:.0f} batches per epoch on the "
                f"{self.world_size} ranks (this rank: {batches}); every rank must yield the same "
                f"number. Pass a Dataset (the Trainer shards it evenly), or give your "
                f"DataLoader a DistributedSampler"
            )
            raise DistributedError(msg)

    def _sum_max(self, values: Sequence[float]) -> list[float]:
        tensor = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        result: list[float] = tensor.tolist()
        return result

    def agree(self, control: TrainerControl, *flags: bool) -> tuple[bool, ...]:
        """Make every rank see a stop, save or validation request any rank's hooks (or a
        SIGTERM) made, so that all act on it at the same step; one collective.

        :param flags: further decisions to take together: each comes back true when it is
            true on any rank.
        """
        stop, save, validate, *others = self._sum_max(
            [
                float(control.should_stop),
                float(control.should_save),
                float(control.should_validate),
                *(float(flag) for flag in flags),
            ]
        )
        if stop and not control.should_stop:
            control.request_stop(control.stop_reason or "stop requested on another rank")
        control.should_save = bool(save)
        control.should_validate = bool(validate)
        return tuple(bool(value) for value in others)

    def broadcast(self, value: _T) -> _T:
        """Rank 0's ``value`` on every rank (any picklable object)."""
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        """Wait until every rank got here."""
        if self.device.type == "cuda":
            dist.barrier(device_ids=[self.device.index or 0])
        else:
            dist.barrier()

    # -- checkpoints -------------------------------------------------------------------------

    def shared_progress(self, progress: EpochProgress) -> EpochProgress:
        """A copy of a mid-epoch progress to save: the loss sum becomes the ranks' total
        divided by the world size, so every rank resuming from it sums to the right total."""
        total = progress.loss_sum.detach().to(self.device, torch.float64).clone()
        dist.all_reduce(total)
        return attrs.evolve(progress, loss_sum=total / self.world_size)

    def checkpoint_sources(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer
    ) -> tuple[Any, Any]:
        """What to take the checkpoint's model and optimizer state from. A collective for
        FSDP: the full (unsharded) state is gathered to rank 0's CPU memory, the optimizer's
        keyed by parameter index as a plain ``optimizer.state_dict()`` is, so the file is the
        same as a single process writes."""
        if self.parallel != "fsdp":
            return model, optimizer
        return full_state_sources(model, optimizer, is_main=self.is_main)

    def checkpoint_targets(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer
    ) -> tuple[Any, Any]:
        """What to load a checkpoint's full state into; for FSDP, objects whose
        ``load_state_dict`` shards a full state dict onto this rank."""
        if self.parallel != "fsdp":
            return model, optimizer
        return sharding_targets(model, optimizer)

    # -- failures and the end ----------------------------------------------------------------

    def handle_failure(self, error: BaseException) -> DistributedError | None:
        """Report ``error`` to the other ranks, or find the report of a rank that failed
        first. Destroys a group this context started, so that no rank waits on this one.

        :returns: an error naming the rank that failed first, when that was another rank
            (``error`` is then only the consequence: a broken collective); else ``None``.
        """
        peer_error: DistributedError | None = None
        # reported already: by an inner context (the Trainer's inside the command's), or by
        # the rank that failed first when the error names it
        known = hasattr(error, "failed_rank") or hasattr(error, "_treadle_reported")
        if not self._reported and not known:
            peer_error = self._reporter.report(error)
            with contextlib.suppress(AttributeError, TypeError):
                error._treadle_reported = True  # type: ignore[attr-defined]
        self._reported = True
        if self.owns_group and not self._closed:
            self._closed = True
            abort_group()
        return peer_error

    def close(self) -> None:
        """The end of the run: destroys the process group if this context started it (after
        a barrier, so no rank leaves while another still talks to it).

        :raises DistributedError: another rank failed before reaching the end.
        """
        if self._closed:
            return
        self._closed = True
        if not self.owns_group:
            return
        try:
            self.barrier()
        except Exception as error:
            # a rank failed after this one finished: say which, as a failure during the run would
            peer_error = self._reporter.report(error)
            abort_group()
            if peer_error is not None:
                raise peer_error from error
            raise
        dist.destroy_process_group()
