"""``treadle registry list|show|register|promote|compare|retire|lineage``: the model registry
from the command line. A model is named by a reference: ``42`` (its id), ``gpt:1.0.0``,
``:1.0.0``, ``@production`` (a tag) or ``gpt`` (its newest non-retired version).

``register CHECKPOINT --name N`` registers a treadle checkpoint trained elsewhere (the Trainer
API, another machine) after a verified, weights-only load into the model its config's factory
builds; ``treadle train`` registers its own runs."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from treadle.errors import UnknownNameError
from treadle_cli.arguments import (
    action_parser,
    add_location_argument,
    require_existing,
    split_names,
)
from treadle_cli.output import format_value, print_json
from treadle_cli.references import find_model
from treadle_cli.table import format_table

if TYPE_CHECKING:
    from treadle.model_registry import ModelRegistry
    from treadle.storage import ModelRegistryEntry

__all__ = ["RegistryCommand"]

_WHAT = "model registry"
_REFERENCE_HELP = "42, gpt:1.0.0, :1.0.0, @production or gpt (newest version)"


def _entry_row(entry: ModelRegistryEntry) -> list[str]:
    return [
        str(entry.model_id),
        entry.name,
        entry.version,
        entry.status,
        ",".join(entry.tags) or "-",
        entry.created_at[:19],
        format_value(entry.model_size_mb),
        format_value(entry.memory_req_gb),
        format_value(entry.training_run_id),
        format_value(entry.parent_model_id),
    ]


_ENTRY_HEADERS = (
    "id",
    "name",
    "version",
    "status",
    "tags",
    "created",
    "size_mb",
    "memory_gb",
    "run",
    "parent",
)


def _describe(entry: ModelRegistryEntry) -> str:
    return f"model {entry.model_id} ({entry.name} {entry.version})"


class RegistryCommand:
    """``treadle registry ...``."""

    help = "list, show, register, promote, compare, retire models and trace their lineage"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_location_argument(parser, top=True, what=_WHAT)
        actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
        listing = action_parser(actions, "list", "list model versions, newest first", _WHAT)
        listing.add_argument("--name", help="only versions of this model")
        listing.add_argument("--status", choices=("active", "retired", "experimental"))
        listing.add_argument("--limit", type=int, default=50, help="(default: %(default)s)")
        listing.add_argument("--metrics", help="comma-separated metrics to show as columns")
        listing.add_argument("--json", action="store_true", help="print JSON")
        show = action_parser(actions, "show", "one model version in full", _WHAT)
        show.add_argument("model", metavar="MODEL_REF", help=_REFERENCE_HELP)
        show.add_argument("--json", action="store_true", help="print JSON")
        register = action_parser(
            actions, "register", "register a treadle checkpoint as a model version", _WHAT
        )
        register.add_argument("checkpoint", type=Path, metavar="CHECKPOINT", help="a .pt file")
        register.add_argument("--name", required=True, help="the model's name")
        register.add_argument("--version", help="its version (default: the next free one)")
        register.add_argument(
            "--tag", action="append", default=[], help="a tag to give it (repeatable)"
        )
        register.add_argument(
            "--model-type",
            help="the model factory to load it into (default: the one its config names)",
        )
        register.add_argument("--json", action="store_true", help="print JSON")
        promote = action_parser(actions, "promote", "give a version a tag (moves it)", _WHAT)
        promote.add_argument("model", metavar="MODEL_REF", help=_REFERENCE_HELP)
        promote.add_argument("tag", help="production, staging, ...")
        compare = action_parser(actions, "compare", "versions side by side", _WHAT)
        compare.add_argument("models", metavar="MODEL_REF", nargs="+", help=_REFERENCE_HELP)
        compare.add_argument("--json", action="store_true", help="print JSON")
        retire = action_parser(actions, "retire", "mark a version retired", _WHAT)
        retire.add_argument("model", metavar="MODEL_REF", help=_REFERENCE_HELP)
        lineage = action_parser(actions, "lineage", "ancestors and descendants", _WHAT)
        lineage.add_argument("model", metavar="MODEL_REF", help=_REFERENCE_HELP)
        lineage.add_argument("--json", action="store_true", help="print JSON")

    def run(self, args: argparse.Namespace) -> int:
        from treadle.model_registry import ModelRegistry

        if args.action != "register":  # registering creates the registry if needed
            require_existing(args.location, "model registry")
        with ModelRegistry(args.location, plugin_manager=args.plugin_manager) as registry:
            action = getattr(self, f"_{args.action}")
            status: int = action(registry, args)
        return status

    def _list(self, registry: ModelRegistry, args: argparse.Namespace) -> int:
        entries = registry.store.find_models(name=args.name, status=args.status, limit=args.limit)
        metrics = split_names(args.metrics) or []
        if args.json:
            print_json([entry.to_dict() for entry in entries])
            return 0
        rows = [
            _entry_row(entry) + [format_value(entry.metrics.get(name)) for name in metrics]
            for entry in entries
        ]
        print(format_table([*_ENTRY_HEADERS, *metrics], rows))
        return 0

    def _show(self, registry: ModelRegistry, args: argparse.Namespace) -> int:
        entry = find_model(registry, args.model)
        profile = registry.get_data_profile(entry.model_id) if entry.has_data_profile else None
        if args.json:
            data = entry.to_dict()
            data["data_profile"] = None if profile is None else profile.to_dict()
            print_json(data)
            return 0
        fields: list[tuple[str, object]] = [
            ("model", _describe(entry)),
            ("status", entry.status),
            ("tags", ", ".join(entry.tags) or None),
            ("task_type", entry.task_type),
            ("created", entry.created_at),
            ("checkpoint", entry.checkpoint_path),
            ("size_mb", entry.model_size_mb),
            ("memory_gb", entry.memory_req_gb),
            ("config_hash", entry.config_hash or None),
            ("training_run", entry.training_run_id),
            ("parent", entry.parent_model_id),
            ("exports", ", ".join(entry.export_formats) or None),
            ("job", entry.job_key),
            (
                "data_profile",
                None
                if profile is None
                else f"{len(profile.features)} features, {profile.num_samples} samples",
            ),
        ]
        width = max(len(name) for name, _ in fields)
        for name, value in fields:
            print(f"{name.ljust(width)}  {format_value(value)}")
        if entry.metrics:
            print()
            rows = [(name, format_value(value)) for name, value in entry.metrics.items()]
            print(format_table(("metric", "value"), rows))
        return 0

    def _register(self, registry: ModelRegistry, args: argparse.Namespace) -> int:
        from treadle.model_loading import load_verified_checkpoint
        from treadle.run_registration import (
            experiment_run_id,
            register_checkpoint,
            registry_config_hash,
        )

        path = Path(args.checkpoint).resolve()
        verified = load_verified_checkpoint(path, args.plugin_manager, model_type=args.model_type)
        store = verified.training_config.experiment_location
        known_store = store is not None and ("://" in store or Path(store).exists())
        entry = register_checkpoint(
            registry,
            name=args.name,
            checkpoint=path,
            task_type=verified.task_spec.task_type,
            metrics=verified.metrics,
            config_hash=registry_config_hash(verified.training_config),
            version=args.version,
            tags=args.tag,
            training_run_id=experiment_run_id(store, path.parent, args.plugin_manager)
            if known_store
            else None,
        )
        if args.json:
            print_json(entry.to_dict())
            return 0
        tags = f", tags {', '.join(entry.tags)}" if entry.tags else ""
        factory = args.model_type or verified.training_config.model_type
        print(
            f"registered {_describe(entry)}{tags}: {path} (epoch {verified.epoch + 1}, "
            f"verified, loads into {factory!r})"
        )
        return 0

    def _promote(self, registry: ModelRegistry, args: argparse.Namespace) -> int:
        entry = find_model(registry, args.model)
        try:
            previous: ModelRegistryEntry | None = registry.get_model(tag=args.tag, name=entry.name)
        except UnknownNameError:
            previous = None
        registry.promote_model(entry.model_id, args.tag)
        moved = ""
        if previous is not None and previous.model_id != entry.model_id:
            moved = f" (moved from {_describe(previous)})"
        print(f"{_describe(entry)} holds {args.tag!r}{moved}")
        return 0

    def _compare(self, registry: ModelRegistry, args: argparse.Namespace) -> int:
        ids = [find_model(registry, text).model_id for text in args.models]
        frame = registry.compare_models(ids)
        if args.json:
            print_json(frame.to_dict(orient="records"))
            return 0
        shown = ["model_id", "name", "version", "status", "tags", "created_at"]
        metrics = [str(column) for column in frame.columns[len(_frame_columns()) :]]
        rows = [
            [format_value(value) for value in record]
            for record in frame[shown + metrics].itertuples(index=False, name=None)
        ]
        print(format_table(["id", "name", "version", "status", "tags", "created", *metrics], rows))
        return 0

    def _retire(self, registry: ModelRegistry, args: argparse.Namespace) -> int:
        entry = find_model(registry, args.model)
        registry.delete_model(entry.model_id)
        removed = f"; tags removed: {', '.join(entry.tags)}" if entry.tags else ""
        print(f"{_describe(entry)} retired{removed}")
        return 0

    def _lineage(self, registry: ModelRegistry, args: argparse.Namespace) -> int:
        entry = find_model(registry, args.model)
        lineage = registry.get_lineage(entry.model_id)
        if args.json:
            print_json(
                {
                    "model": lineage.model.to_dict(),
                    "ancestors": [item.to_dict() for item in lineage.ancestors],
                    "descendants": [item.to_dict() for item in lineage.descendants],
                }
            )
            return 0
        print(_describe(entry))
        for title, entries in (
            ("ancestors (nearest first)", lineage.ancestors),
            ("descendants", lineage.descendants),
        ):
            print(f"\n{title}:")
            print(_table(entries) if entries else "  none")
        return 0


def _table(entries: Sequence[ModelRegistryEntry]) -> str:
    return format_table(_ENTRY_HEADERS, [_entry_row(entry) for entry in entries])


def _frame_columns() -> tuple[str, ...]:
    from treadle.model_registry import ENTRY_COLUMNS

    return ENTRY_COLUMNS
