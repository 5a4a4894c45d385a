"""The ``export`` job: a registered model as an export bundle in the attempt's folder."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from treadle.errors import ConfigError
from treadle.jobs.context import JobContext
from treadle_jobs.evaluation import model_reference

__all__ = ["ExportJob"]

_DEFAULT_FORMATS = ("onnx", "torchscript", "pytorch")


def _formats(config: Mapping[str, Any]) -> list[str]:
    formats = config.get("formats", list(_DEFAULT_FORMATS))
    if (
        not isinstance(formats, list)
        or not formats
        or not all(isinstance(name, str) for name in formats)
    ):
        msg = f"an export job's 'formats' must be a non-empty list of format names: {formats!r}"
        raise ConfigError(msg)
    return formats


class ExportJob:
    """``export``: config ``{"model": REF, "registry_location": ..., "formats": [...]}``;
    writes the bundle into the attempt's folder and records the exported formats on the
    model (recording them twice changes nothing, so a retry is harmless)."""

    preload = ("torch", "treadle.export", "treadle.model_loading", "treadle.model_registry")

    def validate_config(self, config: Mapping[str, Any]) -> None:
        model_reference(config, "export")
        _formats(config)

    def run(self, context: JobContext) -> Mapping[str, Any]:
        from treadle.export import create_export_bundle, read_manifest
        from treadle.model_loading import load_checkpoint_model
        from treadle.model_registry import ModelRegistry

        location, reference = model_reference(context.config, "export")
        with ModelRegistry(location, plugin_manager=context.plugin_manager) as registry:
            entry = registry.get_model(**reference)
            model, training_config, task_spec = load_checkpoint_model(
                entry.checkpoint_path, context.plugin_manager
            )
            bundle = create_export_bundle(
                model,
                config={"name": entry.name, "version": entry.version, "model_id": entry.model_id},
                task_spec=task_spec,
                training_config=training_config,
                output_dir=str(context.output_dir / "exports"),
                formats=_formats(context.config),
                plugin_manager=context.plugin_manager,
            )
            manifest = read_manifest(bundle)
            registry.add_export_formats(entry.model_id, list(manifest["artifacts"]))
        return {
            "model_id": entry.model_id,
            "bundle_path": str(bundle),
            "status": manifest["status"],
            "errors": dict(manifest["errors"]),
        }
