"""Hook implementations of the losses plugin: registrations only, a few lines each."""

from __future__ import annotations

from treadle import hookimpl
from treadle.hookspecs import Register
from treadle_losses.classification import ClassificationLoss
from treadle_losses.language_modeling import LanguageModelingLoss
from treadle_losses.peft import PEFTAwareLoss
from treadle_losses.quantization import QuantizationSafeLoss
from treadle_losses.vision import VisionLoss


@hookimpl
def treadle_register_losses(register: Register) -> None:
    register("classification", ClassificationLoss)
    register("language_modeling", LanguageModelingLoss)
    register("peft", PEFTAwareLoss)
    register("quantization_safe", QuantizationSafeLoss)
    register("vision", VisionLoss)
