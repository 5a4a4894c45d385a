"""Public names that load on first use (PEP 562), for the packages whose imports must stay light."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping

__all__ = ["lazy_names"]


def lazy_names(
    module_name: str, sources: Mapping[str, str]
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The module ``__getattr__`` and ``__dir__`` of a package whose public names load on use.

    :param module_name: the package's ``__name__``.
    :param sources: each lazy name and the module that defines it under that name.

    The first access imports the defining module and stores the value in the package, so
    later accesses are plain attribute lookups::

        _LAZY = {"Trainer": "treadle.engine.trainer"}
        __getattr__, __dir__ = lazy_names(__name__, _LAZY)
    """
    module = sys.modules[module_name]

    def __getattr__(name: str) -> object:
        try:
            source = sources[name]
        except KeyError:
            msg = f"module {module_name!r} has no attribute {name!r}"
            raise AttributeError(msg) from None
        value = getattr(importlib.import_module(source), name)
        setattr(module, name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(module)) | set(sources))

    return __getattr__, __dir__
