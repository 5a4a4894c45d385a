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

The modules: :mod:`~.launch` (the launch and the process group), :mod:`~.context` (the
collectives), :mod:`~.failures` (a failing rank's error on every rank), :mod:`~.metric_sync`
(streaming metrics summed over ranks), :mod:`~.sharding` (FSDP2), :mod:`~.state_dicts` (full
checkpoints of a sharded model).
"""

from __future__ import annotations

from treadle.engine.distributed.context import DistributedContext
from treadle.engine.distributed.errors import DistributedError
from treadle.engine.distributed.launch import (
    TIMEOUT_VARIABLE,
    LaunchEnvironment,
    call_on_main,
    check_sampler,
    distributed_session,
    init_distributed,
    launch_environment,
    warn_about_launch,
)

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
