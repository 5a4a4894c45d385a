"""treadle built-in plugin: the four batch collators.

Registered as ``classification``, ``language_modeling``, ``sequence_to_sequence`` and
``vision``; find them with ``treadle.collators.CollatorRegistry().get(name, task_spec)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from treadle.lazy import lazy_attributes

if TYPE_CHECKING:
    from treadle_collators.text import (
        ClassificationCollator,
        LanguageModelingCollator,
        SequenceToSequenceCollator,
    )
    from treadle_collators.vision import VisionCollator

__all__ = [
    "ClassificationCollator",
    "LanguageModelingCollator",
    "SequenceToSequenceCollator",
    "VisionCollator",
]

# lazy: discovery imports this package for its plugin.py, and these modules import torch
__getattr__, __dir__ = lazy_attributes(
    __name__,
    {
        "ClassificationCollator": "treadle_collators.text",
        "LanguageModelingCollator": "treadle_collators.text",
        "SequenceToSequenceCollator": "treadle_collators.text",
        "VisionCollator": "treadle_collators.vision",
    },
)
