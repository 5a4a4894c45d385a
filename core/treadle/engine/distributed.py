"""Training in several processes with torch.distributed: the launch environment, the process
group, DDP or FSDP2 wrapping, cross-rank sums for losses and metrics, full checkpoints, and a
failing rank's error reaching every rank.

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`init_distributed` reads
them and starts the process group (gloo on the CPU, NCCL on CUDA) unless one is already
running, in which case the caller's group is used and left alone. The Trainer calls it at the
start of :meth:`~treadle.engine.Trainer.train`::

    torchrun --standalone --nproc_per_node=2 -m treadle train --preset distributed

Everything here that talks to other ranks is a collective: every rank must call it, in the
same order. The Trainer does so at fixed points (once per accumulation window, once per
optimizer step, once per epoch and per save), never from inside a rank-dependent branch.
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import logging
import os
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import torch
import torch.distributed as dist

from treadle.errors import TreadleError

if TYPE_CHECKING:
    from treadle.control import TrainerControl
    from treadle.engine.loops import EpochProgress

__all__ = [
    "TIMEOUT_VARIABLE",
    "DistributedContext",
    "DistributedError",
    "LaunchEnvironment",
    "call_on_main",
    "check_sampler",
    "distributed_session",
    "init_distributed",
    "launch_environment",
    "warn_about_launch",
]

logger = logging.getLogger(__name__)

#: Seconds a collective may wait before failing (the process group's timeout); unset, torch's
#: default (30 minutes for gloo, 10 for NCCL).
TIMEOUT_VARIABLE = "TREADLE_DISTRIBUTED_TIMEOUT"

_FAILURE_KEY = "treadle/failure/{run}"
#: how long a rank whose collective broke waits for the rank that caused it to say why
_PEER_REPORT_WAIT = datetime.timedelta(seconds=1)
#: numbers each Trainer.train call: every rank calls it equally often, so the keys agree
_run_numbers = itertools.count()

_T = TypeVar("_T")


class DistributedError(TreadleError, RuntimeError):
    """A distributed run cannot go on: another rank failed (the message gives its error), or
    the ranks disagree about their data."""


@attrs.frozen(kw_only=True)
class LaunchEnvironment:
    """What ``torchrun`` (or any launcher following its conventions) told this process.

    :ivar rank: this process among all, from 0.
    :ivar world_size: the number of processes.
    :ivar local_rank: this process among those on its machine: its GPU index.
    """

    rank: int
    world_size: int
    local_rank: int


def launch_environment(environ: Mapping[str, str] | None = None) -> LaunchEnvironment | None:
    """The launch from ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; ``None`` when
    ``WORLD_SIZE`` is unset (a plain ``python`` start).

    :raises DistributedError: the variables are not integers, or out of range.
    """
    environ = os.environ if environ is None else environ
    if "WORLD_SIZE" not in environ:
        return None
    try:
        world_size = int(environ["WORLD_SIZE"])
        rank = int(environ.get("RANK", "0"))
        local_rank = int(environ.get("LOCAL_RANK", str(rank)))
    except ValueError as err:
        msg = (
            f"WORLD_SIZE, RANK and LOCAL_RANK must be integers: {err}. Start the run with "
            f"torchrun, which sets them"
        )
        raise DistributedError(msg) from err
    if world_size < 1 or not 0 <= rank < world_size or local_rank < 0:
        msg = (
            f"inconsistent launch variables: RANK={rank}, WORLD_SIZE={world_size}, "
            f"LOCAL_RANK={local_rank}; RANK must lie in 0..WORLD_SIZE-1"
        )
        raise DistributedError(msg)
    return LaunchEnvironment(rank=rank, world_size=world_size, local_rank=local_rank)


def _timeout(environ: Mapping[str, str]) -> datetime.timedelta | None:
    raw = environ.get(TIMEOUT_VARIABLE)
    if not raw:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        msg = f"{TIMEOUT_VARIABLE} must be a number of seconds > 0: {raw!r}"
        raise DistributedError(msg)
    return datetime.timedelta(seconds=seconds)


def init_distributed(
    device: torch.device, *, environ: Mapping[str, str] | None = None
) -> DistributedContext | None:
    """The distributed context of this process, starting the process group when a launcher
    asked for one.

    An already initialized group (made by the caller, say with a ``file://`` init method) is
    used as it is and never destroyed here. Otherwise, under ``torchrun``, a group is started
    with gloo for the CPU or NCCL for CUDA (the CUDA device is then ``cuda:LOCAL_RANK``) and
    :meth:`DistributedContext.close` destroys it.

    :param device: the device the caller means to train on; its type picks the backend.
    :param environ: the environment to read (default ``os.environ``).
    :returns: ``None`` outside a distributed launch.
    :raises DistributedError: malformed launch variables or timeout.
    """
    if not dist.is_available():
        return None
    environ = os.environ if environ is None else environ
    if dist.is_initialized():
        return DistributedContext.current(device)
    launch = launch_environment(environ)
    if launch is None:
        return None
    if device.type == "cuda":
        device = torch.device("cuda", launch.local_rank)
        torch.cuda.set_device(device)
    from torch.distributed.rendezvous import rendezvous

    backend = "nccl" if device.type == "cuda" else "gloo"
    timeout = _timeout(environ)
    # rendezvous ourselves so the store stays at hand for failure reports
    store, rank, world_size = next(
        rendezvous(
            "env://",
            launch.rank,
            launch.world_size,
            **({"timeout": timeout} if timeout is not None else {}),
        )
    )
    dist.init_process_group(
        backend,
        store=store,
        rank=rank,
        world_size=world_size,
        timeout=timeout,
        device_id=device if device.type == "cuda" else None,
    )
    logger.log(
        logging.INFO if rank == 0 else logging.DEBUG,
        "process group started: rank %d of %d (local rank %d), backend %s, device %s",
        rank,
        world_size,
        launch.local_rank,
        backend,
        device,
    )
    return DistributedContext(
        rank=rank,
        world_size=world_size,
        local_rank=launch.local_rank,
        device=device,
        owns_group=True,
        store=store,
    )


@contextlib.contextmanager
def distributed_session(device: torch.device) -> Iterator[DistributedContext | None]:
    """:func:`init_distributed` for a whole program's run: on an exception, the error is
    reported to the other ranks (and replaced by a peer's, when a peer failed first), and the
    group this started is destroyed, also after a failure, so no other rank waits on it.

    :yields: the context, or ``None`` outside a distributed launch.
    """
    context = init_distributed(device)
    if context is None:
        yield None
        return
    try:
        yield context
    except BaseException as error:
        peer_error = context.handle_failure(error)
        if peer_error is not None:
            raise peer_error from error
        raise
    finally:
        context.close()


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
        self._store = store
        self._failure_key = _FAILURE_KEY.format(run=next(_run_numbers))
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
            from torch.distributed.fsdp import fully_shard

            self._broadcast_module(model)
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
            self.parallel = "fsdp"
            self._fsdp = model
            return model
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device] if self.device.type == "cuda" else None
        wrapped = DistributedDataParallel(model, device_ids=device_ids)
        self.parallel = "ddp"
        self._ddp = wrapped
        return wrapped

    def _broadcast_module(self, model: torch.nn.Module) -> None:
        with torch.no_grad():
            for tensor in itertools.chain(model.parameters(), model.buffers()):
                dist.broadcast(tensor.data, src=0)

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
        return _WholeGradientNorms(model)

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
        """Sum every streaming metric's state over the ranks, before ``compute()``.

        A streaming metric keeps running sums only (the protocol's rule), so its state is
        additive across shards: each tensor it holds, directly or in an object it holds one
        level down (such as a numerator-and-denominator pair), is summed in place. A state
        still ``None`` on a rank that saw no batch becomes zeros. One ``all_gather_object``
        agrees the layout, one ``all_reduce`` sums everything.

        :raises DistributedError: the ranks' metrics hold differently shaped state.
        """
        local = _metric_state_layout(metrics)
        layouts: list[Any] = [None] * self.world_size
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
                value = torch.zeros(shape, dtype=getattr(torch, type_name), device=self.device)
            tensors.append(value)
        flat = torch.cat(
            [tensor.detach().to(self.device, torch.float64).reshape(-1) for tensor in tensors]
        )
        dist.all_reduce(flat)
        offset = 0
        for key, tensor in zip(keys, tensors, strict=True):
            size = tensor.numel()
            summed = flat[offset : offset + size].reshape(tensor.shape)
            offset += size
            _set_state(metrics[key[0]], key[1], summed.to(tensor.device, tensor.dtype))

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
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model_state = get_model_state_dict(model, options=options)
        optimizer_state = get_optimizer_state_dict(model, optimizer, options=options)
        if not self.is_main:
            return None, None
        return _StateOf(model_state), _StateOf(_by_index(optimizer_state))

    def checkpoint_targets(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer
    ) -> tuple[Any, Any]:
        """What to load a checkpoint's full state into; for FSDP, objects whose
        ``load_state_dict`` shards a full state dict onto this rank."""
        if self.parallel != "fsdp":
            return model, optimizer
        return _ShardingModel(model), _ShardingOptimizer(model, optimizer)

    # -- failures and the end ----------------------------------------------------------------

    def _failure_store(self) -> Any:
        if self._store is None:
            # no public accessor for a group the caller started (file:// and the like)
            with contextlib.suppress(Exception):
                self._store = dist.distributed_c10d._get_default_store()
        return self._store

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
            peer_error = self._report(error)
            with contextlib.suppress(AttributeError, TypeError):
                error._treadle_reported = True  # type: ignore[attr-defined]
        self._reported = True
        if self.owns_group and not self._closed:
            self._closed = True
            self._abort()
        return peer_error

    def _report(self, error: BaseException) -> DistributedError | None:
        store = self._failure_store()
        if store is None:
            return None
        own = f"{self.rank}\n{type(error).__name__}: {error}\n" + "".join(
            traceback.format_exception(error)
        )
        try:
            if isinstance(error, RuntimeError) and not isinstance(error, TreadleError):
                # a broken collective: the rank that broke it reports in a moment
                with contextlib.suppress(Exception):
                    store.wait([self._failure_key], _PEER_REPORT_WAIT)
            first = store.compare_set(self._failure_key, "", own)
        except Exception as store_error:  # the store's host may be gone with its rank
            logger.debug("could not reach the store to report a failure: %s", store_error)
            return None
        text = first.decode("utf-8", "replace") if isinstance(first, bytes) else str(first)
        if text == own:
            logger.error("rank %d failed: %s: %s", self.rank, type(error).__name__, error)
            return None
        rank_text, _, rest = text.partition("\n")
        summary, _, remote_traceback = rest.partition("\n")
        msg = (
            f"rank {rank_text} failed: {summary} (this is rank {self.rank}; its own error was "
            f"{type(error).__name__}: {str(error)[:200]})"
        )
        peer_error = DistributedError(msg)
        peer_error.failed_rank = int(rank_text)  # type: ignore[attr-defined]
        peer_error.add_note(f"traceback of rank {rank_text}:\n{remote_traceback}")
        return peer_error

    def _abort(self) -> None:
        try:
            abort = getattr(dist.distributed_c10d, "_abort_process_group", None)
            if dist.get_backend() == "nccl" and abort is not None:
                # destroy would wait for the NCCL work a failed rank left behind
                abort()
            else:
                dist.destroy_process_group()
        except Exception as err:
            logger.debug("could not tear the process group down: %s", err)

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
            peer_error = self._report(error)
            self._abort()
            if peer_error is not None:
                raise peer_error from error
            raise
        dist.destroy_process_group()


_EXHAUSTED: Any = object()


def warn_about_launch(context: DistributedContext | None, strategy: str, devices: int) -> None:
    """Say when the config's ``strategy`` and ``devices`` do not match how the run started."""
    if context is None:
        if strategy in ("ddp", "fsdp"):
            warnings.warn(
                f"strategy {strategy!r} asks for {devices} processes, but this one was not "
                f"started by torchrun: training in this process alone. Launch with "
                f"torchrun --nproc_per_node={devices} -m treadle train ...",
                stacklevel=3,
            )
        return
    if devices > 1 and devices != context.world_size and context.is_main:
        logger.warning(
            "the config says devices=%d but torchrun started %d processes; training on %d",
            devices,
            context.world_size,
            context.world_size,
        )


def check_sampler(loader: object, context: DistributedContext, what: str) -> None:
    """Warn (on rank 0) when a user's DataLoader gives every rank the same samples."""
    from torch.utils.data import DataLoader, DistributedSampler

    from treadle.data.samplers import DistributedResumableSampler

    if not isinstance(loader, DataLoader) or not context.is_main:
        return
    samplers = [loader.sampler, getattr(loader.batch_sampler, "sampler", None)]
    if any(isinstance(s, DistributedSampler | DistributedResumableSampler) for s in samplers):
        return
    logger.warning(
        "%s is a DataLoader without a DistributedSampler: every rank trains on all of its "
        "batches. Pass the Dataset instead to have the Trainer shard it",
        what,
    )


# -- helpers ------------------------------------------------------------------------------------


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


class _NormHolder:
    __slots__ = ("grad",)

    def __init__(self, grad: torch.Tensor) -> None:
        self.grad = grad


class _WholeGradientNorms:
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


class _StateOf:
    """A ready state dict where the CheckpointManager expects a module or an optimizer."""

    def __init__(self, state: dict[str, Any]) -> None:
        self._state = state

    def state_dict(self) -> dict[str, Any]:
        return self._state


def _by_index(state: Mapping[str, Any]) -> dict[str, Any]:
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


def _by_name(
    state: Mapping[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """The inverse of :func:`_by_index` for this model and optimizer."""
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
            named = _by_name(state, self._model, self._optimizer)
        except (IndexError, KeyError) as err:
            msg = f"the optimizer state does not fit this model's parameters: {err!r}"
            raise ValueError(msg) from err
        set_optimizer_state_dict(
            self._model,
            self._optimizer,
            named,
            options=StateDictOptions(full_state_dict=True),
        )


def call_on_main(context: DistributedContext | None, make: Callable[[], _T]) -> _T:
    """``make()`` on rank 0 and its result on every rank (``make()`` alone outside a
    distributed run): for decisions that must be the same everywhere, such as a run folder."""
    if context is None:
        return make()
    value = make() if context.is_main else None
    return context.broadcast(value)  # type: ignore[return-value]
