"""The control object lifecycle hooks use to steer a run (as Hugging Face's TrainerControl)."""

from __future__ import annotations

import attrs

__all__ = ["TrainerControl"]


@attrs.define(kw_only=True)
class TrainerControl:
    """Requests a hook makes of the trainer; the trainer reads and clears them.

    :ivar should_stop: end the run at the next safe point (after the current optimizer step).
    :ivar should_save: write a checkpoint at the next safe point.
    :ivar should_validate: run validation at the next optimizer-step boundary.
    :ivar should_skip_step: skip the optimizer step about to happen (gradients are cleared).
    :ivar stop_reason: why the run was stopped, reported in the results.
    """

    should_stop: bool = False
    should_save: bool = False
    should_validate: bool = False
    should_skip_step: bool = False
    stop_reason: str | None = None

    def request_stop(self, reason: str) -> None:
        """Ask the trainer to stop, recording why."""
        self.should_stop = True
        self.stop_reason = reason
