"""Hook implementations of the losses plugin: registrations only, a few lines each.

Each name is registered as a ``"module:attr"`` reference: the implementations import torch,
and discovery (``treadle --help``, ``treadle plugins``) must not.
"""

from __future__ import annotations

from treadle import hookimpl
from treadle.hookspecs import Register


@hookimpl
def treadle_register_losses(register: Register) -> None:
    register("classification", "treadle_losses.classification:ClassificationLoss")
    register("language_modeling", "treadle_losses.language_modeling:LanguageModelingLoss")
    register("peft", "treadle_losses.peft:PEFTAwareLoss")
    register("quantization_safe", "treadle_losses.quantization:QuantizationSafeLoss")
    register("vision", "treadle_losses.vision:VisionLoss")
