"""create_export_bundle: every requested format, verified, in one atomically published folder."""

from __future__ import annotations

import copy
import logging
import os
import secrets
import shutil
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from treadle.export import templates
from treadle.export.artifacts import export_artifacts
from treadle.export.errors import ExportError
from treadle.export.files import as_dict, write_bundle_files
from treadle.export.inputs import (
    OUTPUT_NAME,
    PositionalModel,
    derive_example_inputs,
    dynamic_axes_for,
    normalize_example_inputs,
)
from treadle.export.library_output import EXPORT_LOG, ExportLog
from treadle.export.manifest import (
    DEFAULT_TOLERANCE,
    MANIFEST_FILE,
    MANIFEST_VERSION,
    jsonable,
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


def create_export_bundle(
    model: torch.nn.Module,
    config: Any,
    task_spec: TaskSpec,
    training_config: Any,
    output_dir: str | os.PathLike[str] = "./exports",
    formats: Sequence[str] = DEFAULT_FORMATS,
    example_inputs: Mapping[str, torch.Tensor] | torch.Tensor | None = None,
    plugin_manager: PluginManager | None = None,
    *,
    bundle_name: str | None = None,
    show_library_output: bool | None = None,
) -> Path:
    """Export ``model`` in each of ``formats`` into a new folder of ``output_dir``, verify
    every artifact against the model, and return the folder.

    The folder is named after the model and its version when ``config`` carries both as
    ``name`` and ``version`` (a registry entry: ``tiny-gpt-1.0.0``), else
    ``model_<UTC timestamp>``; characters other than letters, digits, ``.``, ``_`` and ``-``
    become ``-`` and long names are cut, so the folder is always a direct child of
    ``output_dir``. It holds ``artifacts/`` (one file per format), ``loaders/`` (the code that
    runs them), ``configs/`` (task_spec.json, training_config.json, model_config.json,
    torchserve_config.json), ``inference.py``, ``handler.py`` and ``config.properties`` for
    TorchServe, ``Dockerfile``, ``README.md``, ``requirements.txt``, ``sample_request.json``,
    ``export.log`` (what the export libraries printed) and ``manifest.json`` (sha256 per
    artifact, input/output signature, a sample input with the model's outputs for it,
    versions, and ``status``: ``complete``, or ``partial`` with each failed format's cause
    under ``errors``).

    It is built in a hidden sibling folder and renamed into place, so a reader never sees half
    a bundle. An existing bundle is never overwritten: a name already taken (the same version
    exported again) gets a suffix, ``tiny-gpt-1.0.0_2``, and a warning says so.

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
    :param bundle_name: the folder's name instead of the default (made safe the same way).
    :param show_library_output: also show on stderr what the export libraries print (onnx,
        onnxscript, torch.export, onnxruntime: Python and C++ output, warnings), which goes to
        the bundle's ``export.log`` either way; when None, shown if the ``treadle.export``
        logger is enabled for DEBUG (``treadle -v``).
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
    root = _check_output_dir(Path(output_dir))

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
        _make_output_dir(root)
        # A hidden sibling, so the final rename stays on one file system; mkdir honours umask.
        staging = root / f".model_{secrets.token_hex(8)}.tmp"
        staging.mkdir()
        try:
            if show_library_output is None:
                show_library_output = logger.isEnabledFor(logging.DEBUG)
            log = ExportLog(staging / EXPORT_LOG, echo=show_library_output)
            artifacts, errors = export_artifacts(
                exporters, positional, inputs, logits, dynamic_axes, description, staging, log
            )
            manifest = _manifest(description, inputs, logits, dynamic_axes, artifacts, errors)
            write_bundle_files(staging, manifest, exporters, task_spec, training_config, config)
            sync_tree(staging)
            bundle = publish(staging, root, bundle_name or _default_name(config))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    finally:
        export_model.train(was_training)
    library_output = f"{log.captured_lines} lines of library output in {bundle / EXPORT_LOG}"
    if errors:
        logger.warning(
            "export bundle %s is partial: %s (%s)",
            bundle,
            "; ".join(errors.values()),
            library_output,
        )
    else:
        logger.info(
            "export bundle %s written: %s (%s)", bundle, ", ".join(artifacts), library_output
        )
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
        "export_log": EXPORT_LOG,
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


def _default_name(config: Any) -> str:
    """``<name>-<version>`` when the config names both (a registry entry), else
    ``model_<UTC timestamp>``."""
    if isinstance(config, Mapping):
        name, version = config.get("name"), config.get("version")
    else:
        name, version = getattr(config, "name", None), getattr(config, "version", None)
    if name not in (None, "") and version not in (None, ""):
        return f"{name}-{version}"
    return f"model_{datetime.now(UTC).strftime('%Y%m%d_%H%M%S')}"


def _check_output_dir(root: Path) -> Path:
    """``root``, refused at once when it, or the nearest part of it that exists, is a file:
    before minutes of export, not after."""
    existing = next((path for path in (root, *root.parents) if path.exists()), None)
    if existing is not None and not existing.is_dir():
        what = "is a file" if existing == root else f"lies under a file, {existing}"
        msg = f"output_dir {str(root)!r} {what}: give a folder for bundles (made if missing)"
        raise ExportError(msg)
    return root


def _make_output_dir(root: Path) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a file raced into place, no permission, a read-only disk
        msg = f"cannot make the output folder {str(root)!r}: {err.strerror or err}"
        raise ExportError(msg) from err


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
