"""Hook implementations of the hf plugin: the ``hf`` model factory, registered by reference so
that discovery (``treadle --help``) imports neither torch nor transformers."""

from __future__ import annotations

from treadle import hookimpl
from treadle.hookspecs import Register


@hookimpl
def treadle_register_models(register: Register) -> None:
    register("hf", "treadle_hf.models:build_hf_model")
