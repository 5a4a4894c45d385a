"""Names a package exports from heavy modules, imported on first access (PEP 562).

A plugin package whose ``plugin.py`` registers ``"module:attr"`` references keeps discovery
light only if its ``__init__`` imports nothing heavy either, since importing ``pkg.plugin``
runs ``pkg/__init__.py`` first::

    # acme_treadle/__init__.py
    from typing import TYPE_CHECKING
    from treadle.lazy import lazy_attributes

    if TYPE_CHECKING:  # type checkers see the names as usual
        from acme_treadle.focal import FocalLoss

    __all__ = ["FocalLoss"]
    __getattr__, __dir__ = lazy_attributes(__name__, {"FocalLoss": "acme_treadle.focal"})
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping

__all__ = ["lazy_attributes"]


def lazy_attributes(
    module_name: str, sources: Mapping[str, str]
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """A module ``__getattr__`` and ``__dir__`` for names imported on first access.

    :param module_name: the exporting module's ``__name__``.
    :param sources: each exported name and the module that defines it.
    :returns: ``(__getattr__, __dir__)`` to assign at the exporting module's top level. A name
        is imported once, then stored on the module, so later reads are plain attributes.
    """
    names = dict(sources)

    def __getattr__(name: str) -> object:
        source = names.get(name)
        if source is None:
            msg = f"module {module_name!r} has no attribute {name!r}"
            raise AttributeError(msg)
        value = getattr(importlib.import_module(source), name)
        setattr(sys.modules[module_name], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[module_name])) | set(names))

    return __getattr__, __dir__
