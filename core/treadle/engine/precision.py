"""Mixed precision: which autocast dtype a run uses, and whether it needs a gradient scaler."""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

import attrs
import torch

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

__all__ = ["Precision", "resolve_precision"]

logger = logging.getLogger(__name__)

_NO_AUTOCAST = contextlib.nullcontext()


@attrs.frozen
class Precision:
    """How a run computes: full precision, or autocast to ``dtype`` on ``device_type``.

    :ivar name: the Lightning-style name: ``32-true``, ``bf16-mixed`` or ``16-mixed``.
    :ivar device_type: ``cpu`` or ``cuda``.
    :ivar dtype: the autocast dtype, ``None`` for full precision.
    :ivar uses_scaler: fp16 needs a :class:`torch.amp.GradScaler` against underflow.
    """

    name: str
    device_type: str
    dtype: torch.dtype | None = None
    uses_scaler: bool = False

    def autocast(self) -> AbstractContextManager[object]:
        """A context for the forward pass and the loss (a shared no-op at full precision)."""
        if self.dtype is None:
            return _NO_AUTOCAST
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def make_scaler(self) -> torch.amp.GradScaler | None:
        """A gradient scaler for fp16, else ``None``."""
        return torch.amp.GradScaler(self.device_type) if self.uses_scaler else None


def resolve_precision(precision: str, use_amp: bool, device: torch.device) -> Precision:
    """Choose the precision for ``device`` from the config's ``precision`` and ``use_amp``.

    - ``32-true``: full precision.
    - ``bf16-mixed``: bf16 autocast (CPU, or a GPU that supports bf16).
    - ``16-mixed``: fp16 autocast with a gradient scaler on CUDA; on CPU, bf16 (fp16 has no
      fast CPU kernels and no scaler there), with a log line saying so.
    - ``auto``: full precision unless ``use_amp``; with it, bf16 where supported, else fp16
      with a scaler.
    """
    device_type = device.type
    if precision == "auto":
        if not use_amp:
            return Precision("32-true", device_type)
        precision = "bf16-mixed" if _bf16_supported(device) else "16-mixed"
    if precision == "32-true":
        return Precision("32-true", device_type)
    if precision == "16-mixed" and device_type == "cuda":
        return Precision("16-mixed", device_type, torch.float16, uses_scaler=True)
    if precision == "16-mixed":
        logger.info("precision 16-mixed on %s runs as bf16-mixed", device_type)
    if device_type == "cuda" and not _bf16_supported(device):
        logger.warning("this GPU lacks bf16; using 16-mixed with a gradient scaler")
        return Precision("16-mixed", device_type, torch.float16, uses_scaler=True)
    return Precision("bf16-mixed", device_type, torch.bfloat16)


def _bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return True
