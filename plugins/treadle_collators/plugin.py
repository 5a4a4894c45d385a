"""Hook implementations of the collators plugin: registrations only, a few lines each.

Each name is registered as a ``"module:attr"`` reference: the implementations import torch,
and discovery (``treadle --help``, ``treadle plugins``) must not.
"""

from __future__ import annotations

from treadle import hookimpl
from treadle.hookspecs import Register


@hookimpl
def treadle_register_collators(register: Register) -> None:
    register("classification", "treadle_collators.text:ClassificationCollator")
    register("language_modeling", "treadle_collators.text:LanguageModelingCollator")
    register("sequence_to_sequence", "treadle_collators.text:SequenceToSequenceCollator")
    register("vision", "treadle_collators.vision:VisionCollator")
