"""Export bundles: a trained model in several formats, verified, with what serving it needs.

``create_export_bundle`` writes the bundle; each format is an exporter plugin registered
through ``treadle_register_exporters`` (:class:`treadle.protocols.Exporter`), which receives an
:class:`ExportRequest` and names the standalone :class:`BundleLoader` that runs its artifact.
"""

from __future__ import annotations

from treadle.export.bundle import DEFAULT_FORMATS, create_export_bundle
from treadle.export.errors import ExportError
from treadle.export.inputs import (
    OUTPUT_NAME,
    PositionalModel,
    derive_example_inputs,
    dynamic_axes_for,
    extract_logits,
    inputs_for_tracing,
)
from treadle.export.loaders import BundleLoader
from treadle.export.manifest import DEFAULT_TOLERANCE, read_manifest, sha256_of
from treadle.export.request import ExportRequest, torch_requirement

__all__ = [
    "DEFAULT_FORMATS",
    "DEFAULT_TOLERANCE",
    "OUTPUT_NAME",
    "BundleLoader",
    "ExportError",
    "ExportRequest",
    "PositionalModel",
    "create_export_bundle",
    "derive_example_inputs",
    "dynamic_axes_for",
    "extract_logits",
    "inputs_for_tracing",
    "read_manifest",
    "sha256_of",
    "torch_requirement",
]
