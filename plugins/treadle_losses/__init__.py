"""treadle built-in plugin: the five loss strategies.

Registered as ``classification``, ``language_modeling``, ``peft``, ``quantization_safe`` and
``vision``; find them with ``treadle.losses.get_loss_strategy(name, **options)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from treadle.lazy import lazy_attributes

if TYPE_CHECKING:
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

# lazy: discovery imports this package for its plugin.py, and these modules import torch
__getattr__, __dir__ = lazy_attributes(
    __name__,
    {
        "ClassificationLoss": "treadle_losses.classification",
        "LanguageModelingLoss": "treadle_losses.language_modeling",
        "PEFTAwareLoss": "treadle_losses.peft",
        "QuantizationSafeLoss": "treadle_losses.quantization",
        "VisionLoss": "treadle_losses.vision",
    },
)
