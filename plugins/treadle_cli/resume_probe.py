"""The probe ``treadle verify-resume`` loads into each training run it starts: it records every
batch loss and the final parameters' sha256, and can stop the run with a SIGTERM at a step.

It is an ordinary plugin, loaded only where asked for: ``verify-resume`` runs ``treadle train``
in child processes whose environment holds

- ``TREADLE_PLUGINS=treadle_cli.resume_probe:probe`` (see :data:`treadle.plugins.PLUGINS_ENV`),
- ``TREADLE_RESUME_PROBE_RECORD``: the JSON file written when training ends,
  ``{"losses": [[global_step, loss], ...], "parameters": "<sha256>"}``,
- ``TREADLE_RESUME_PROBE_STOP_AT_STEP`` (optional): the optimizer step at which the process
  sends itself SIGTERM, as a scheduler would; the trainer saves and stops.

Only rank 0 of a distributed run records and signals, as only rank 0 reports.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from treadle import hookimpl
from treadle.errors import ConfigError
from treadle.protocols import TrainerView

if TYPE_CHECKING:
    import torch

__all__ = [
    "PROBE_TARGET",
    "RECORD_ENV",
    "STOP_AT_ENV",
    "ResumeProbe",
    "parameter_digest",
    "probe",
]

#: the ``TREADLE_PLUGINS`` entry that loads :data:`probe`
PROBE_TARGET = "treadle_cli.resume_probe:probe"
RECORD_ENV = "TREADLE_RESUME_PROBE_RECORD"
STOP_AT_ENV = "TREADLE_RESUME_PROBE_STOP_AT_STEP"


def parameter_digest(model: torch.nn.Module) -> str:
    """sha256 over every parameter and buffer's bytes, in ``state_dict`` order."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        flat = tensor.detach().cpu().contiguous().view(-1)
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _is_main_process() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


class ResumeProbe:
    """Records ``[global_step, loss]`` per batch into ``record`` when training ends, with the
    final parameters' digest; sends this process SIGTERM once ``stop_at_step`` is reached.
    Without a ``record`` it does nothing."""

    def __init__(self, record: Path | None, stop_at_step: int | None = None) -> None:
        self.record = record
        self.stop_at_step = stop_at_step
        self.losses: list[list[float]] = []
        self._is_main: bool | None = None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> ResumeProbe:
        """The probe :data:`RECORD_ENV` and :data:`STOP_AT_ENV` describe.

        :raises ConfigError: the step is not a positive integer.
        """
        record = environ.get(RECORD_ENV)
        stop_at = environ.get(STOP_AT_ENV)
        if stop_at is not None and not (stop_at.isdigit() and int(stop_at) >= 1):
            msg = f"{STOP_AT_ENV} must be an optimizer step >= 1: {stop_at!r}"
            raise ConfigError(msg)
        return cls(Path(record) if record else None, int(stop_at) if stop_at is not None else None)

    def _active(self) -> bool:
        if self.record is None:
            return False
        if self._is_main is None:
            self._is_main = _is_main_process()
        return self._is_main

    @hookimpl
    def treadle_on_batch_end(self, trainer: TrainerView, loss: torch.Tensor) -> None:
        if not self._active():
            return
        step = trainer.global_step
        self.losses.append([step, float(loss.item())])
        if self.stop_at_step is not None and step >= self.stop_at_step:
            self.stop_at_step = None
            os.kill(os.getpid(), signal.SIGTERM)

    @hookimpl
    def treadle_on_training_end(self, trainer: TrainerView) -> None:
        if not self._active() or self.record is None:
            return
        record = {"losses": self.losses, "parameters": parameter_digest(trainer.model)}
        self.record.write_text(json.dumps(record), encoding="utf-8")


#: the instance ``TREADLE_PLUGINS`` loads, configured from this process's environment
probe = ResumeProbe.from_environment()
