"""Each requested format written, verified and described for the manifest; a format that fails
is recorded with its cause while the others go on."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from treadle.export.errors import ExportError
from treadle.export.files import ARTIFACTS_DIR
from treadle.export.inputs import OUTPUT_NAME, PositionalModel, inputs_for_tracing
from treadle.export.library_output import ExportLog
from treadle.export.loaders import LOADERS_DIR, BundleLoader, check_loader_source, in_process_runner
from treadle.export.manifest import DEFAULT_TOLERANCE, sha256_of
from treadle.export.request import ExportRequest

if TYPE_CHECKING:
    from treadle.protocols import Exporter

__all__ = ["export_artifacts", "loader_of", "runner_for"]

logger = logging.getLogger(__name__)

# A long cause (the ONNX exporter's are pages) is cut here in the manifest; the log keeps all.
_MAX_CAUSE_CHARS = 2000


def loader_of(exporter: Exporter) -> BundleLoader | None:
    """The exporter's :class:`BundleLoader`, or None when it offers none.

    :raises ExportError: its ``loader`` is something else.
    """
    loader = getattr(exporter, "loader", None)
    if loader is None or isinstance(loader, BundleLoader):
        return loader
    msg = f"{type(exporter).__name__}.loader must be a treadle.export.BundleLoader or None"
    raise ExportError(msg)


def runner_for(exporter: Exporter, path: Path) -> Callable[..., torch.Tensor]:
    """The artifact at ``path``, runnable in this process: through the exporter's bundle
    loader (the code the bundle ships), else its ``load``.

    :raises NotImplementedError: neither can run it here; the message says why.
    """
    loader = loader_of(exporter)
    if loader is not None:
        return in_process_runner(loader, path)
    load = getattr(exporter, "load", None)
    if callable(load):
        run: Callable[..., torch.Tensor] = load(path)
        return run
    msg = "the format has no loader"
    raise NotImplementedError(msg)


def export_artifacts(
    exporters: Mapping[str, Exporter],
    model: PositionalModel,
    inputs: Mapping[str, torch.Tensor],
    logits: torch.Tensor,
    dynamic_axes: Mapping[str, Mapping[int, str]],
    metadata: Mapping[str, Any],
    staging: Path,
    log: ExportLog,
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Write and verify each format into ``staging/artifacts``, and each loader into
    ``staging/loaders``; return the manifest's ``artifacts`` and ``errors`` sections. What the
    libraries print meanwhile goes to ``log``."""
    directory = staging / ARTIFACTS_DIR
    directory.mkdir()
    trace_inputs = inputs_for_tracing(inputs, dynamic_axes)
    artifacts: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    for name, exporter in exporters.items():
        path = directory / exporter.artifact_name
        request = ExportRequest(
            model=model,
            example_inputs=trace_inputs,
            path=path,
            input_names=tuple(inputs),
            output_names=(OUTPUT_NAME,),
            dynamic_axes=dynamic_axes,
            metadata=metadata,
        )
        started = time.perf_counter()
        try:
            loader = loader_of(exporter)
            loader_source = check_loader_source(loader) if loader is not None else None
            with log.capture(f"{name}: export and verification"):
                exporter.export(request)
                if not path.is_file():
                    msg = f"the exporter returned without writing {path.name}"
                    raise ExportError(msg)
                export_seconds = time.perf_counter() - started
                verification = _verify(exporter, path, inputs, logits)
        except Exception as err:  # any failure is this format's, recorded; the others go on
            cause = f"{type(err).__name__}: {err}".strip()
            errors[name] = (
                f"export format {name!r} failed for {type(model.model).__name__}: "
                f"{cause[:_MAX_CAUSE_CHARS]}"
            )
            log.note_exception(err)
            logger.warning("%s", errors[name], exc_info=logger.isEnabledFor(logging.DEBUG))
            _remove_artifact(directory, exporter.artifact_name)
            continue
        logger.info(
            "%s: %s written in %.1f s, %s",
            name,
            exporter.artifact_name,
            export_seconds,
            f"verified (max abs error {verification['max_abs_error']:.2g})"
            if verification["verified"]
            else f"not verified: {verification['verification']}",
        )
        artifacts[name] = {
            "file": f"{ARTIFACTS_DIR}/{exporter.artifact_name}",
            "sha256": sha256_of(path),
            "bytes": path.stat().st_size,
            "runtime": exporter.runtime,
            "requirements": list(exporter.requirements),
            "loader": _write_loader(staging, loader, loader_source),
            "export_seconds": round(export_seconds, 3),
            **verification,
        }
    if not artifacts:
        msg = "no export format succeeded:\n  " + "\n  ".join(errors.values())
        raise ExportError(msg, errors)
    return artifacts, errors


def _write_loader(
    staging: Path, loader: BundleLoader | None, source: str | None
) -> dict[str, Any] | None:
    """Copy the loader's source into the bundle (once per module) and describe it."""
    if loader is None or source is None:
        return None
    folder = staging / LOADERS_DIR
    folder.mkdir(exist_ok=True)
    target = folder / loader.file_name
    target.write_text(source, encoding="utf-8")
    return {
        "file": f"{LOADERS_DIR}/{loader.file_name}",
        "function": loader.function,
        "sha256": sha256_of(target),
        "imports": list(loader.imports),
        "priority": loader.priority,
    }


def _verify(
    exporter: Exporter,
    path: Path,
    inputs: Mapping[str, torch.Tensor],
    logits: torch.Tensor,
) -> dict[str, Any]:
    """Run the sample through the artifact as the bundle will; raise ExportError on a
    mismatch."""
    try:
        run = runner_for(exporter, path)
    except NotImplementedError as err:
        return {"verified": False, "verification": f"not loadable here: {err}"}
    with torch.no_grad():
        actual = run(*inputs.values()).detach().cpu()
    if actual.shape != logits.shape:
        msg = f"the artifact's output shape {tuple(actual.shape)} is not {tuple(logits.shape)}"
        raise ExportError(msg)
    error = float((actual.double() - logits.double()).abs().max()) if logits.numel() else 0.0
    rtol, atol = DEFAULT_TOLERANCE["rtol"], DEFAULT_TOLERANCE["atol"]
    if not torch.allclose(actual.double(), logits.double(), rtol=rtol, atol=atol):
        msg = (
            f"the artifact's outputs differ from the model's by up to {error:.3g} "
            f"(tolerance rtol={rtol}, atol={atol})"
        )
        raise ExportError(msg)
    return {"verified": True, "max_abs_error": error}


def _remove_artifact(directory: Path, file_name: str) -> None:
    # An exporter may leave side files (file.data); remove everything carrying its name.
    for leftover in directory.glob(f"{file_name}*"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
