"""create_export_bundle: every requested format, verified, in one atomically published folder."""

from __future__ import annotations

import copy
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from treadle.export import templates
from treadle.export.errors import ExportError
from treadle.export.files import ARTIFACTS_DIR, as_dict, write_bundle_files
from treadle.export.inputs import (
    OUTPUT_NAME,
    PositionalModel,
    derive_example_inputs,
    dynamic_axes_for,
    inputs_for_tracing,
    normalize_example_inputs,
)
from treadle.export.manifest import (
    DEFAULT_TOLERANCE,
    MANIFEST_FILE,
    MANIFEST_VERSION,
    jsonable,
    sha256_of,
    signature_of,
    versions,
)
from treadle.export.publish import publish, sync_tree

if TYPE_CHECKING:
    from treadle.plugins import PluginManager
    from treadle.protocols import Exporter
    from treadle.task import TaskSpec

__all__ = ["DEFAULT_FORMATS", "create_export_bundle"]

logger = logging.getLogger(__name__)

DEFAULT_FORMATS = ("onnx", "torchscript", "pytorch")
# A long cause (the ONNX exporter's are pages) is cut here in the manifest; the log keeps all.
_MAX_CAUSE_CHARS = 2000


def create_export_bundle(
    model: torch.nn.Module,
    config: Any,
    task_spec: TaskSpec,
    training_config: Any,
    output_dir: str | os.PathLike[str] = "./exports",
    formats: Sequence[str] = DEFAULT_FORMATS,
    example_inputs: Mapping[str, torch.Tensor] | torch.Tensor | None = None,
    plugin_manager: PluginManager | None = None,
) -> Path:
    """Export ``model`` in each of ``formats`` into a new folder ``output_dir/model_<UTC
    timestamp>/``, verify every artifact against the model, and return the folder.

    The folder holds ``artifacts/`` (one file per format), ``configs/`` (task_spec.json,
    training_config.json, model_config.json, torchserve_config.json), ``inference.py``,
    ``handler.py`` and ``config.properties`` for TorchServe, ``Dockerfile``, ``README.md``,
    ``requirements.txt``, ``sample_request.json`` and ``manifest.json`` (sha256 per artifact,
    input/output signature, a sample input with the model's outputs for it, versions, and
    ``status``: ``complete``, or ``partial`` with each failed format's cause under ``errors``).

    It is built in a hidden sibling folder and renamed into place, so a reader never sees half
    a bundle. An existing bundle is never overwritten: a name taken within the same second
    gets a suffix, ``model_<timestamp>_2``.

    :param model: the trained model; called as ``model(**inputs)`` returning logits (a
        tensor, a dict with ``logits``, an object with ``.logits`` or a tuple). Exported on
        CPU and in eval mode; its own mode is restored afterwards. A model with a
        ``for_export()`` method is exported as the module that method returns (a PEFT model
        returns a copy with its adapters merged).
    :param config: the model's config (any object); its JSON-ready fields are stored.
    :param task_spec: the task; gives modality, class names and example input shapes.
    :param training_config: a :class:`~treadle.config.TrainingConfig` (or any object with
        ``to_dict()`` or JSON-ready fields); ``vocab_size``, ``max_seq_len`` and
        ``model_type`` are read from it when present.
    :param output_dir: where bundles go; created if missing.
    :param formats: registered export format names (``treadle plugins`` lists them).
    :param example_inputs: one sample, ``{"input_ids": (1, L) long}`` or ``{"pixel_values":
        (1, C, H, W) float}``; derived from the task when None.
    :param plugin_manager: where exporters are looked up; the global one when None.
    :returns: the bundle's folder.
    :raises UnknownNameError: a format is not registered; the message lists those that are.
    :raises ExportError: no format could be written (each cause listed), or the inputs or
        outputs are unusable.
    """
    from treadle.plugins import get_registry

    registry = get_registry("exporters", plugin_manager)
    names = _check_formats(formats)
    exporters: dict[str, Exporter] = {name: registry.create(name) for name in names}
    _check_artifact_names(exporters)

    for_export = getattr(model, "for_export", None)
    if callable(for_export):  # the model names what to export: treadle_hf merges adapters
        model = for_export()
    export_model = _on_cpu(model)
    was_training = export_model.training
    export_model.eval()
    try:
        inputs = _example_inputs(export_model, task_spec, training_config, example_inputs)
        positional = PositionalModel(export_model, tuple(inputs)).eval()
        with torch.no_grad():
            logits = positional(*inputs.values()).detach().cpu()
        if not torch.isfinite(logits).all():
            msg = "the model's outputs for the example inputs are not finite (NaN or inf)"
            raise ExportError(msg)
        dynamic_axes = dynamic_axes_for(task_spec, inputs, logits)
        description = _describe(export_model, config, task_spec, training_config, inputs)
        root = Path(output_dir)
        root.mkdir(parents=True, exist_ok=True)
        # A hidden sibling, so the final rename stays on one file system; mkdir honours umask.
        staging = root / f".model_{secrets.token_hex(8)}.tmp"
        staging.mkdir()
        try:
            artifacts, errors = _export_all(
                exporters, positional, inputs, logits, dynamic_axes, description, staging
            )
            manifest = _manifest(description, inputs, logits, dynamic_axes, artifacts, errors)
            write_bundle_files(staging, manifest, exporters, task_spec, training_config, config)
            sync_tree(staging)
            stem = f"model_{datetime.now(UTC).strftime('%Y%m%d_%H%M%S')}"
            bundle = publish(staging, root, stem)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    finally:
        export_model.train(was_training)
    if errors:
        logger.warning("export bundle %s is partial: %s", bundle, "; ".join(errors.values()))
    else:
        logger.info("export bundle %s written: %s", bundle, ", ".join(artifacts))
    return bundle


def _manifest(
    description: Mapping[str, Any],
    inputs: Mapping[str, torch.Tensor],
    logits: torch.Tensor,
    dynamic_axes: Mapping[str, Mapping[int, str]],
    artifacts: dict[str, dict[str, Any]],
    errors: dict[str, str],
) -> dict[str, Any]:
    return {
        "manifest_version": MANIFEST_VERSION,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "status": "partial" if errors else "complete",
        **description,
        "signature": signature_of(inputs, logits, OUTPUT_NAME, dynamic_axes),
        "sample": {
            "inputs": {name: tensor.tolist() for name, tensor in inputs.items()},
            "outputs": {OUTPUT_NAME: logits.tolist()},
        },
        "tolerance": dict(DEFAULT_TOLERANCE),
        "artifacts": artifacts,
        "errors": errors,
        "versions": versions(),
    }


def _check_formats(formats: Sequence[str]) -> list[str]:
    if isinstance(formats, str):
        formats = [part.strip() for part in formats.split(",") if part.strip()]
    names = list(dict.fromkeys(formats))
    if not names:
        msg = f"no export formats given; the defaults are {', '.join(DEFAULT_FORMATS)}"
        raise ExportError(msg)
    return names


def _check_artifact_names(exporters: Mapping[str, Exporter]) -> None:
    seen: dict[str, str] = {}
    for name, exporter in exporters.items():
        file_name = exporter.artifact_name
        if not templates.SAFE_FILE_NAME.match(file_name) or file_name == MANIFEST_FILE:
            msg = (
                f"export format {name!r} names its artifact {file_name!r}: use letters, digits, "
                f"'.', '_' and '-' only"
            )
            raise ExportError(msg)
        if file_name in seen:
            msg = (
                f"export formats {seen[file_name]!r} and {name!r} both write {file_name!r}; "
                f"export them in separate bundles"
            )
            raise ExportError(msg)
        seen[file_name] = name


def _on_cpu(model: torch.nn.Module) -> torch.nn.Module:
    devices = {tensor.device.type for tensor in [*model.parameters(), *model.buffers()]}
    if devices <= {"cpu"}:
        return model
    # A copy, so the caller's model stays on its device.
    return copy.deepcopy(model).cpu()


def _example_inputs(
    model: torch.nn.Module,
    task_spec: TaskSpec,
    training_config: Any,
    example_inputs: Mapping[str, torch.Tensor] | torch.Tensor | None,
) -> dict[str, torch.Tensor]:
    if example_inputs is None:
        return derive_example_inputs(
            model,
            task_spec,
            vocab_size=int(getattr(training_config, "vocab_size", 2)),
            max_seq_len=int(getattr(training_config, "max_seq_len", 16)),
        )
    inputs = normalize_example_inputs(example_inputs, task_spec)
    return {name: tensor.detach().cpu() for name, tensor in inputs.items()}


def _describe(
    model: torch.nn.Module,
    config: Any,
    task_spec: TaskSpec,
    training_config: Any,
    inputs: Mapping[str, torch.Tensor],
) -> dict[str, Any]:
    """The manifest's model and task sections; exporters receive them as ``metadata``."""
    model_config, dropped = jsonable(config)
    training, training_dropped = as_dict(training_config)
    config_name = config.get("name") if isinstance(config, Mapping) else None
    name = (
        config_name
        or getattr(config, "name", None)
        or getattr(training_config, "model_name", None)
        or type(model).__name__
    )
    return {
        "model": {
            "name": str(name),
            "class": f"{type(model).__module__}.{type(model).__qualname__}",
            "model_type": getattr(training_config, "model_type", None),
            "num_parameters": sum(parameter.numel() for parameter in model.parameters()),
            "config": model_config,
            "config_fields_not_stored": dropped
            + [f"training_config{p[1:]}" for p in training_dropped],
        },
        "task": {
            "name": task_spec.name,
            "modality": task_spec.modality,
            "task_type": task_spec.task_type,
            "num_classes": task_spec.num_classes,
            "class_names": list(task_spec.class_names) if task_spec.class_names else None,
        },
        "input_names": list(inputs),
        "training_config": training,
        "task_spec": as_dict(task_spec)[0],
    }


def _export_all(
    exporters: Mapping[str, Exporter],
    positional: PositionalModel,
    inputs: Mapping[str, torch.Tensor],
    logits: torch.Tensor,
    dynamic_axes: Mapping[str, Mapping[int, str]],
    description: Mapping[str, Any],
    staging: Path,
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Export and verify each format; a failure is recorded, and the others still run."""
    directory = staging / ARTIFACTS_DIR
    directory.mkdir()
    trace_inputs = inputs_for_tracing(inputs, dynamic_axes)
    artifacts: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    for name, exporter in exporters.items():
        path = directory / exporter.artifact_name
        started = time.perf_counter()
        try:
            exporter.export(
                positional,
                trace_inputs,
                path,
                input_names=list(inputs),
                output_names=[OUTPUT_NAME],
                dynamic_axes=dynamic_axes,
                metadata=description,
            )
            if not path.is_file():
                msg = f"the exporter returned without writing {path.name}"
                raise ExportError(msg)
            export_seconds = time.perf_counter() - started
            verification = _verify(exporter.load, path, inputs, logits)
        except Exception as err:  # any failure is this format's, recorded; the others go on
            cause = f"{type(err).__name__}: {err}".strip()
            errors[name] = (
                f"export format {name!r} failed for {type(positional.model).__name__}: "
                f"{cause[:_MAX_CAUSE_CHARS]}"
            )
            logger.warning("%s", errors[name], exc_info=logger.isEnabledFor(logging.DEBUG))
            _remove_artifact(directory, exporter.artifact_name)
            continue
        artifacts[name] = {
            "file": f"{ARTIFACTS_DIR}/{exporter.artifact_name}",
            "sha256": sha256_of(path),
            "bytes": path.stat().st_size,
            "runtime": exporter.runtime,
            "requirements": list(exporter.requirements),
            "export_seconds": round(export_seconds, 3),
            **verification,
        }
    if not artifacts:
        msg = "no export format succeeded:\n  " + "\n  ".join(errors.values())
        raise ExportError(msg, errors)
    return artifacts, errors


def _verify(
    load: Callable[[Path], Callable[..., torch.Tensor]],
    path: Path,
    inputs: Mapping[str, torch.Tensor],
    logits: torch.Tensor,
) -> dict[str, Any]:
    """Run the sample through the artifact's own loader; raise ExportError on a mismatch."""
    try:
        run = load(path)
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
