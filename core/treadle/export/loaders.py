"""Bundle loaders: the standalone code an exporter ships into each bundle so that the bundle's
``inference.py`` runs its artifact without treadle, whatever the format.

A loader is a module of the exporter's package, named by a :class:`BundleLoader`. Its source is
copied verbatim into the bundle's ``loaders/`` folder, so it may import only the standard
library, numpy and the modules its ``imports`` lists (checked here, on its syntax tree, before
anything is exported). Its function ``load(path)`` returns ``predict(arrays) -> array``: the
input arrays in signature order in, the output array out.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import attrs
import torch

from treadle.export.errors import ExportError

__all__ = ["LOADERS_DIR", "BundleLoader", "check_loader_source", "in_process_runner"]

LOADERS_DIR = "loaders"
#: What every loader may import besides its ``imports``.
_ALWAYS_ALLOWED = frozenset({"__future__", "numpy"})
_DOTTED_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_PUBLIC_IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def _check_dotted(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not _DOTTED_NAME.match(value):
        msg = f"{attribute.name} must be a dotted module name like 'acme.loader': {value!r}"
        raise ValueError(msg)


def _check_function(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not _PUBLIC_IDENTIFIER.match(value):
        msg = f"function must be a public function name like 'load': {value!r}"
        raise ValueError(msg)


def _as_tuple(names: Iterable[str]) -> tuple[str, ...]:
    return (names,) if isinstance(names, str) else tuple(names)


def _check_imports(
    instance: object, attribute: attrs.Attribute[tuple[str, ...]], value: Any
) -> None:
    for name in value:
        if not isinstance(name, str) or not _DOTTED_NAME.match(name):
            msg = f"imports must be module names like 'onnxruntime': {name!r}"
            raise ValueError(msg)


@attrs.frozen(kw_only=True)
class BundleLoader:
    """Where an exporter's standalone loader lives and what it needs to run.

    An exporter offers one as its ``loader`` attribute (see :class:`treadle.protocols.Exporter`)::

        loader = BundleLoader(module="acme_treadle.npz_loader", imports=("numpy",))

    :ivar module: the importable module whose source goes into the bundle.
    :ivar function: its function that takes the artifact's path and returns
        ``predict(arrays: list[numpy.ndarray]) -> numpy.ndarray``.
    :ivar imports: top-level modules the loader needs besides the standard library and numpy
        (``("onnxruntime",)``); ``inference.py`` runs the artifact only where all import, and
        the bundle's ``requirements.txt`` (the exporter's ``requirements``) installs them.
    :ivar priority: without ``--format``, ``inference.py`` runs the runnable artifact of the
        highest priority, the first requested on a tie (built-ins: onnx 30, torchscript 20,
        torch_export 10).
    """

    module: str = attrs.field(validator=_check_dotted)
    function: str = attrs.field(default="load", validator=_check_function)
    imports: tuple[str, ...] = attrs.field(
        default=(), converter=_as_tuple, validator=_check_imports
    )
    priority: int = 0

    @property
    def file_name(self) -> str:
        """The loader's file in the bundle's ``loaders/`` folder: ``<module>.py``. A dotted
        name cannot be imported by name, so the file never shadows a real package where the
        folder lands on ``sys.path`` (TorchServe flattens a model archive into one)."""
        return f"{self.module}.py"


def _source_of(loader: BundleLoader) -> str:
    try:
        spec = importlib.util.find_spec(loader.module)
    except (ImportError, ValueError) as err:
        msg = f"loader module {loader.module!r} cannot be found: {err}"
        raise ExportError(msg) from err
    get_source = getattr(spec.loader, "get_source", None) if spec is not None else None
    source = get_source(loader.module) if callable(get_source) else None
    if not isinstance(source, str):
        msg = f"loader module {loader.module!r} is not installed as Python source"
        raise ExportError(msg)
    return source


def check_loader_source(loader: BundleLoader) -> str:
    """The loader's source, checked to stand alone in a bundle.

    :raises ExportError: the module is missing or not Python source, does not parse, lacks a
        top-level ``def <function>``, or imports what a bundle does not have (treadle, its own
        package, a relative module, anything besides the standard library, numpy and
        ``loader.imports``); the message names the line.
    """
    source = _source_of(loader)
    try:
        tree = ast.parse(source, filename=loader.file_name)
    except SyntaxError as err:
        msg = f"loader module {loader.module!r} does not parse: {err}"
        raise ExportError(msg) from err
    functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    if loader.function not in functions:
        msg = f"loader module {loader.module!r} has no top-level function {loader.function!r}"
        raise ExportError(msg)
    allowed = _ALWAYS_ALLOWED | set(sys.stdlib_module_names) | set(loader.imports)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            imported = ["." * node.level + (node.module or "")]
        elif isinstance(node, ast.ImportFrom):
            imported = [node.module or ""]
        elif isinstance(node, ast.Import):
            imported = [alias.name for alias in node.names]
        else:
            continue
        for name in imported:
            if name.split(".")[0] not in allowed:
                msg = (
                    f"loader module {loader.module!r} imports {name!r} (line {node.lineno}); a "
                    f"bundle loader stands alone: the standard library, numpy and its "
                    f"imports ({', '.join(loader.imports) or 'none listed'}) only"
                )
                raise ExportError(msg)
    return source


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a dotted name whose parent package is missing
        return False


def in_process_runner(loader: BundleLoader, path: Path) -> Callable[..., torch.Tensor]:
    """The artifact at ``path`` run by ``loader`` in this process, as the bundle verifies it:
    a callable taking input tensors positionally and returning the output tensor.

    :raises NotImplementedError: a module in ``loader.imports`` is not installed here (the
        artifact is then recorded as not verified).
    """
    import numpy as np

    missing = [name for name in loader.imports if not _importable(name)]
    if missing:
        msg = f"{', '.join(missing)} not installed here"
        raise NotImplementedError(msg)
    module = importlib.import_module(loader.module)
    predict = getattr(module, loader.function)(path)

    def run(*tensors: torch.Tensor) -> torch.Tensor:
        arrays = [tensor.detach().cpu().numpy() for tensor in tensors]
        return torch.from_numpy(np.array(predict(arrays)))

    return run
