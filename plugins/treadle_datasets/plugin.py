"""Hook implementations of the data sets plugin: registrations only."""

from __future__ import annotations

from treadle import hookimpl
from treadle.hookspecs import Register
from treadle_datasets.digits import Digits
from treadle_datasets.huggingface import HuggingFace
from treadle_datasets.pydoc_topics import PydocTopics


@hookimpl
def treadle_register_datasets(register: Register) -> None:
    register("digits", Digits)
    register("huggingface", HuggingFace)
    register("pydoc_topics", PydocTopics)
