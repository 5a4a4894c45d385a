"""treadle built-in plugin: the five loss strategies.

Registered as ``classification``, ``language_modeling``, ``peft``, ``quantization_safe`` and
``vision``; find them with ``treadle.losses.get_loss_strategy(name, **options)``.
"""

from __future__ import annotations

from treadle_losses.classification import ClassificationLoss
from treadle_losses.language_modeling import LanguageModelingLoss
from treadle_losses.peft import PEFTAwareLoss
from treadle_losses.quantization import QuantizationSafeLoss
from treadle_losses.vision import VisionLoss

__all__ = [
    "ClassificationLoss",
    "LanguageModelingLoss",
    "PEFTAwareLoss",
    "QuantizationSafeLoss",
    "VisionLoss",
]
