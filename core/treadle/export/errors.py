"""The export area's error: a bundle or one of its formats could not be written or verified."""

from __future__ import annotations

from treadle.errors import TreadleError

__all__ = ["ExportError"]


class ExportError(TreadleError):
    """An export bundle could not be built, or an artifact failed its verification.

    :ivar errors: per-format causes, ``{"onnx": "..."}``, when formats failed.
    """

    def __init__(self, message: str, errors: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.errors = dict(errors or {})
