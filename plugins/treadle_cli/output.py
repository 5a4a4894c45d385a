"""Values as a person or a script reads them: table cells and strict JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["format_epoch", "format_value", "json_ready", "print_json"]


def format_value(value: object) -> str:
    """A table cell: ``-`` for None and empty text, 6 significant digits for floats."""
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def format_epoch(epoch: object, epochs: object = None) -> str:
    """An epoch as a person reads it, counted from 1: ``3 of 10`` for the API's (and the
    stores' and ``--json``'s) epoch 2 of a 10-epoch run; ``-`` for none."""
    if isinstance(epoch, float) and epoch.is_integer():
        epoch = int(epoch)
    if not isinstance(epoch, int) or isinstance(epoch, bool):
        return format_value(epoch)
    of = f" of {epochs}" if isinstance(epochs, int) and not isinstance(epochs, bool) else ""
    return f"{epoch + 1}{of}"


def json_ready(value: Any) -> Any:
    """``value`` with NaN and infinities as ``None`` (strict JSON has neither) and numpy or
    pandas scalars as plain numbers."""
    if isinstance(value, Mapping):
        return {str(key): json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(item) for item in value]
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    item = getattr(value, "item", None)
    if callable(item):  # numpy and pandas scalars
        return json_ready(item())
    return str(value)


def print_json(data: Any) -> None:
    """``data`` as indented strict JSON on stdout."""
    print(json.dumps(json_ready(data), indent=2, allow_nan=False))
