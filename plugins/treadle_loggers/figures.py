"""How the console logger and the progress display write a figure: short, and alike."""

from __future__ import annotations

import math

__all__ = ["format_value"]


def format_value(value: float) -> str:
    """``3``, ``0.4213``, ``1.000e-04``, ``nan``: whole numbers bare, four decimals in the
    common range, scientific notation outside it."""
    number = float(value)
    if number.is_integer() and abs(number) < 1e15:
        return str(int(number))
    if not math.isfinite(number) or 1e-3 <= abs(number) < 1e4:
        return f"{number:.4f}"
    return f"{number:.3e}"
