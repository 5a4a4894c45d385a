"""treadle built-in plugin: the four batch collators.

Registered as ``classification``, ``language_modeling``, ``sequence_to_sequence`` and
``vision``; find them with ``treadle.collators.CollatorRegistry().get(name, task_spec)``.
"""

from __future__ import annotations

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
