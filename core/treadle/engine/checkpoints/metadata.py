""":class:`CheckpointMetadata`: one checkpoint as a save wrote it or a load read it."""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["CheckpointMetadata"]


@attrs.frozen(kw_only=True)
class CheckpointMetadata:
    """One checkpoint, as :meth:`CheckpointManager.save_checkpoint` wrote it or
    :meth:`CheckpointManager.load_checkpoint` read it.

    :ivar path: the checkpoint file.
    :ivar epoch: the epoch it was written in (the Trainer counts from 0).
    :ivar metrics: the metrics it was saved with (validation metrics at an epoch's end,
        empty for a mid-epoch save).
    :ivar is_best: best by the monitored metric among the checkpoints kept (at save time for
        a save, per the manifest for a load).
    :ivar timestamp: when it was saved, ISO 8601 in UTC.
    :ivar model_size_mb: size of the model's weights and buffers, MiB.
    :ivar optimizer_state_size_mb: size of the optimizer state's tensors, MiB.
    :ivar global_step: optimizer steps taken when it was saved.
    :ivar trainer_state: the Trainer's exact-resume state, ``None`` when saved without one.
    :ivar metadata: free-form values the caller saved with it.
    :ivar rng_state: every RNG at save time (:func:`treadle.seed.restore_rng_state` takes it).
    :ivar run_id: the run it belongs to (``None`` for one saved without a run).
    """

    path: str
    epoch: int
    metrics: dict[str, float]
    is_best: bool
    timestamp: str
    model_size_mb: float
    optimizer_state_size_mb: float
    global_step: int = 0
    trainer_state: dict[str, Any] | None = attrs.field(default=None, repr=False)
    metadata: dict[str, Any] = attrs.field(factory=dict)
    rng_state: dict[str, Any] | None = attrs.field(default=None, repr=False)
    run_id: str | None = None
