"""Hook implementations of the onnx plugin: registrations only, a few lines each."""

from __future__ import annotations
