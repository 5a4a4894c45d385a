"""``treadle export MODEL_REF``: a registered model as an export bundle, formats recorded. The
model is named as ``treadle registry`` names it: ``42``, ``gpt:1.0.0``, ``:1.0.0``,
``@production`` or ``gpt`` (its newest version)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from treadle.model_loading import MODEL_REFERENCE_FORMS, load_checkpoint_model
from treadle_cli.references import find_model

if TYPE_CHECKING:
    from treadle.plugins import PluginManager

__all__ = ["ExportCommand"]


class ExportCommand:
    """``treadle export MODEL_REF [--formats ...] [--output-dir DIR] [--registry LOCATION]``."""

    help = "export a registered model as a bundle (ONNX, TorchScript, PyTorch, ...)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "model_ref",
            metavar="MODEL_REF",
            help=f"the model: {MODEL_REFERENCE_FORMS} or NAME (gpt: its newest version)",
        )
        parser.add_argument(
            "--formats",
            default="onnx,torchscript,pytorch",
            help="comma-separated export formats (default: %(default)s)",
        )
        parser.add_argument(
            "--output-dir", default="./exports", help="where bundles go (default: %(default)s)"
        )
        parser.add_argument(
            "--registry",
            default="treadle.db",
            help="model registry location: a path or sqlite:///path (default: %(default)s)",
        )

    def run(self, args: argparse.Namespace) -> int:
        from treadle.export import create_export_bundle, read_manifest
        from treadle.model_registry import ModelRegistry

        manager: PluginManager | None = getattr(args, "plugin_manager", None)
        registry = ModelRegistry(args.registry)
        entry = find_model(registry, args.model_ref)
        model, training_config, task_spec = load_checkpoint_model(entry.checkpoint_path, manager)
        bundle = create_export_bundle(
            model,
            config={"name": entry.name, "version": entry.version, "model_id": entry.model_id},
            task_spec=task_spec,
            training_config=training_config,
            output_dir=args.output_dir,
            formats=[part.strip() for part in args.formats.split(",") if part.strip()],
            plugin_manager=manager,
        )
        manifest = read_manifest(bundle)
        registry.add_export_formats(entry.model_id, list(manifest["artifacts"]))
        print(bundle)
        for name, error in manifest["errors"].items():
            print(f"treadle export: {name}: {error}", file=sys.stderr)
        return 0 if manifest["status"] == "complete" else 1
