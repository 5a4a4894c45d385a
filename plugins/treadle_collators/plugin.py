"""Hook implementations of the collators plugin: registrations only, a few lines each."""

from __future__ import annotations

from treadle import hookimpl
from treadle.hookspecs import Register
from treadle_collators.text import (
    ClassificationCollator,
    LanguageModelingCollator,
    SequenceToSequenceCollator,
)
from treadle_collators.vision import VisionCollator


@hookimpl
def treadle_register_collators(register: Register) -> None:
    register("classification", ClassificationCollator)
    register("language_modeling", LanguageModelingCollator)
    register("sequence_to_sequence", SequenceToSequenceCollator)
    register("vision", VisionCollator)
