"""Optional libraries: imported where a feature needs them, failing with the pip command.

A lean ``pip install treadle`` trains; formats, jobs and tables come with extras
(``treadle[onnx]``, ``treadle[jobs]``, ``treadle[pandas]``, ``treadle[all]``)::

    def list_runs(self) -> pandas.DataFrame:
        require("pandas", extra="pandas", feature="ExperimentDB.list_runs")
        import pandas  # typed as usual; the call above failed with the fix if it is missing
"""

from __future__ import annotations

import importlib
from types import ModuleType

from treadle.errors import MissingDependencyError

__all__ = ["require"]


def require(module: str, *, extra: str, feature: str) -> ModuleType:
    """Import ``module``, or fail naming ``feature`` and the extra that installs it.

    :param module: the module to import (``"pandas"``, ``"croniter"``).
    :param extra: treadle's extra that brings it (``"pandas"``: ``pip install "treadle[pandas]"``).
    :param feature: what needs it, for the message (``"ExperimentDB.list_runs"``).
    :raises MissingDependencyError: an ``ImportError`` whose message holds the pip command.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        top = module.partition(".")[0]
        msg = f'{feature} needs {top}, which is not installed: pip install "treadle[{extra}]"'
        raise MissingDependencyError(msg) from err
