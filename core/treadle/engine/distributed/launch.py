"""Starting a distributed run: the launcher's variables, the process group (gloo on the CPU,
NCCL on CUDA), a session that reports a failing rank's error and tears the group down, and
warnings about launches that do not match the config."""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import TypeVar

import attrs
import torch
import torch.distributed as dist

from treadle.engine.distributed.context import DistributedContext
from treadle.engine.distributed.errors import DistributedError

__all__ = [
    "TIMEOUT_VARIABLE",
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

_T = TypeVar("_T")


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


def call_on_main(context: DistributedContext | None, make: Callable[[], _T]) -> _T:
    """``make()`` on rank 0 and its result on every rank (``make()`` alone outside a
    distributed run): for decisions that must be the same everywhere, such as a run folder."""
    if context is None:
        return make()
    value = make() if context.is_main else None
    return context.broadcast(value)  # type: ignore[return-value]
