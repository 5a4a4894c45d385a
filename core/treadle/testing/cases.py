"""How the conformance runner checks one registered name of each kind: the inputs it tries
when a package declares none, and the settings a package may declare to choose them.

Settings come from the package's ``pyproject.toml``, one table per registered name::

    [tool.treadle.conformance.losses.focal]
    layout = "classification"
    options = { gamma = 2.0 }

    [tool.treadle.conformance.loggers.csv]
    read_steps = "acme_treadle.csv_logger:read_steps"   # a "module:attr" reference

Every key is optional; what each kind reads is listed in :data:`SETTINGS`. Values that must be
Python objects (a function, a model) are given as ``"module:attr"`` references.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from treadle.testing.report import ConformanceError, ConformanceReport

if TYPE_CHECKING:
    from treadle.plugins import PluginManager
    from treadle.task import TaskSpec

__all__ = ["CHECKERS", "SETTINGS", "NotConfigured", "resolve_reference"]

#: The settings each kind reads from ``[tool.treadle.conformance.<kind>.<name>]``.
SETTINGS: dict[str, dict[str, str]] = {
    "losses": {
        "layout": "classification, language_modeling, multilabel or segmentation (default: "
        "the first the strategy's validate_inputs accepts)",
        "options": "keyword options the registered class is built with",
        "ignore_index": "the label value it skips (default: its ignore_index, else -100; "
        "false for none)",
        "all_masked": "error or finite, to insist on one behaviour (default: either)",
    },
    "collators": {
        "samples": "a list of samples, or a reference to a function returning them (default: "
        "the first of tabular rows, labelled token ids, token ids and images it takes)",
        "task": "a TaskSpec table a registered class is built with",
    },
    "models": {
        "task": "a TaskSpec table (default: the first of a tabular, text, language-modeling "
        "and image task the factory builds for)",
        "config": "TrainingConfig fields over the quick_prototype preset",
    },
    "metrics": {
        "layout": "as for losses (default: the first layout it computes finite values on)",
        "ignore_index": "as for losses",
    },
    "loggers": {
        "read_steps": "a reference to read_steps(run_dir) -> steps the sink kept; without it "
        "the resume rule is skipped",
    },
    "exporters": {
        "case": "a reference to a function returning {'model', 'example_inputs', and optionally "
        "'variants', 'task_spec', 'metadata'} (default: the first of a tabular MLP, a token "
        "model and a small CNN the format exports)",
    },
    "storage": {
        "location": "a location of the scheme, '{tmp}' standing for a temporary folder; "
        "without it the store checks are not run",
    },
    "job_types": {
        "config": "a config the job type runs (default {})",
        "bad_config": "a config its validate_config must refuse",
        "run": "false to check submission only",
    },
    "commands": {
        "argv": "arguments after 'treadle NAME' that it runs with, exit status 0",
    },
    "datasets": {
        "options": "keyword options for load",
        "config": "TrainingConfig fields given to default_task",
        "task": "a TaskSpec table to load with instead of the default task",
    },
}


class NotConfigured(Exception):  # a reason to skip, not an error
    """A check that cannot run without a setting the package did not declare."""


def resolve_reference(value: Any, what: str) -> Any:
    """The object a ``"module:attr"`` string names; any other value as it is."""
    if not isinstance(value, str) or ":" not in value:
        return value
    module_name, _, attribute = value.partition(":")
    try:
        found: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as err:
        msg = f"{what} = {value!r} cannot be imported: {type(err).__name__}: {err}"
        raise ValueError(msg) from err
    return found


Checker = Callable[[str, Any, Mapping[str, Any], Path, "PluginManager"], ConformanceReport]


# -- losses and metrics ---------------------------------------------------------------------


def _ignore_index(settings: Mapping[str, Any], obj: Any) -> int | None:
    value = settings.get("ignore_index", getattr(obj, "ignore_index", -100))
    return None if value is False or value is None else int(value)


def _check_loss(
    name: str, registered: Any, settings: Mapping[str, Any], workdir: Path, manager: PluginManager
) -> ConformanceReport:
    from treadle.testing.losses import LOSS_LAYOUTS, check_loss_strategy, make_loss_batch

    registry = manager.registry("losses")
    options = dict(settings.get("options", {}))

    def factory() -> Any:
        return registry.create(name, **options)

    ignore_index = _ignore_index(settings, factory())
    layout = settings.get("layout")
    if layout is None:
        for candidate in LOSS_LAYOUTS:
            batch = make_loss_batch(candidate, ignore_index=ignore_index)  # type: ignore[arg-type]
            try:
                factory().validate_inputs(batch.logits, batch.labels)
            except Exception:  # a layout it refuses is not its layout
                continue
            layout = candidate
            break
        else:
            msg = (
                f"its validate_inputs refuses every layout ({', '.join(LOSS_LAYOUTS)}); declare "
                f"one: [tool.treadle.conformance.losses.{name}] layout = ..."
            )
            raise NotConfigured(msg)
    return check_loss_strategy(
        factory,
        layout,  # type: ignore[arg-type]  # one of LOSS_LAYOUTS: checked there
        ignore_index=ignore_index,
        all_masked=settings.get("all_masked", "either"),
    )


def _check_metric(
    name: str, registered: Any, settings: Mapping[str, Any], workdir: Path, manager: PluginManager
) -> ConformanceReport:
    from treadle.testing.losses import make_loss_batch
    from treadle.testing.metrics import METRIC_LAYOUTS, check_metric, metric_inputs

    ignore_index = _ignore_index(settings, registered)
    layout = settings.get("layout")
    if layout is None:
        for candidate in METRIC_LAYOUTS:
            batch = make_loss_batch(candidate, ignore_index=ignore_index)  # type: ignore[arg-type]
            try:
                metric = registered()
                with torch.inference_mode():
                    metric.update(batch.logits, batch.labels, metric_inputs(batch))
                values = [float(value) for value in metric.compute().values()]
            except Exception:  # a layout it refuses is not its layout
                continue
            if values and all(value == value for value in values):  # no NaN
                layout = candidate
                break
        else:
            msg = (
                f"it computes on none of the layouts ({', '.join(METRIC_LAYOUTS)}); declare "
                f"one: [tool.treadle.conformance.metrics.{name}] layout = ..."
            )
            raise NotConfigured(msg)
    return check_metric(registered, layout, ignore_index=ignore_index)


# -- collators and models ---------------------------------------------------------------------


def _candidate_tasks() -> list[tuple[str, TaskSpec]]:
    from treadle.task import TaskSpec

    return [
        (
            "tabular",
            TaskSpec.classification(
                "conformance_tabular",
                num_classes=3,
                modality="tabular",
                preprocessing_config={"num_features": 4},
            ),
        ),
        ("text", TaskSpec.classification("conformance_text", num_classes=3, max_seq_len=16)),
        ("tokens", TaskSpec.language_modeling("conformance_tokens", max_seq_len=16)),
        ("images", TaskSpec.vision_tiny("conformance_images")),
    ]


def _candidate_samples(kind: str) -> list[Any]:
    generator = torch.Generator().manual_seed(0)
    lengths = (5, 3, 8, 1, 6)
    if kind == "tabular":
        return [
            {"features": torch.randn(4, generator=generator).tolist(), "label": index % 3}
            for index in range(5)
        ]
    if kind in ("text", "tokens"):
        samples: list[dict[str, Any]] = []
        for index, length in enumerate(lengths):
            ids = torch.randint(3, 200, (length,), generator=generator).tolist()
            samples.append(
                {"input_ids": ids, "label": index % 3} if kind == "text" else {"input_ids": ids}
            )
        return samples
    return [
        {"pixel_values": torch.rand(1, 8, 8, generator=generator), "label": index % 10}
        for index in range(5)
    ]


def _check_collator(
    name: str, registered: Any, settings: Mapping[str, Any], workdir: Path, manager: PluginManager
) -> ConformanceReport:
    from treadle.collators import CollatorRegistry
    from treadle.task import TaskSpec
    from treadle.testing.collators import check_collator

    registry = CollatorRegistry(manager)
    if "samples" in settings:
        samples = resolve_reference(settings["samples"], "samples")
        samples = list(samples() if callable(samples) else samples)
        task = TaskSpec.from_dict(settings["task"]) if "task" in settings else None
        return check_collator(registry.get(name, task_spec=task), samples)
    for kind, task in _candidate_tasks():
        if "task" in settings:
            task = TaskSpec.from_dict(settings["task"])
        samples = _candidate_samples(kind)
        try:
            collator = registry.get(name, task_spec=task)
            batch = collator(samples)
        except Exception:  # samples it refuses are not its samples
            continue
        if isinstance(batch, Mapping) and "labels" in batch:
            return check_collator(collator, samples)
    msg = (
        f"it takes none of the kit's samples (tabular rows, labelled token ids, token ids, "
        f"images); declare some: [tool.treadle.conformance.collators.{name}] samples = [...]"
    )
    raise NotConfigured(msg)


def _training_config(name: str, settings: Mapping[str, Any]) -> Any:
    import attrs

    from treadle.config import TrainingConfig, TrainingConfigBuilder

    base = attrs.evolve(TrainingConfigBuilder.quick_prototype().build(), model_type=name)
    overrides = dict(settings.get("config", {}))
    if not overrides:
        return base
    return TrainingConfig.from_dict({**base.to_dict(), **overrides}, source="conformance config")


def _check_model(
    name: str, registered: Any, settings: Mapping[str, Any], workdir: Path, manager: PluginManager
) -> ConformanceReport:
    from treadle.task import TaskSpec
    from treadle.testing.models import check_model_factory

    config = _training_config(name, settings)
    if "task" in settings:
        task = TaskSpec.from_dict(settings["task"])
        return check_model_factory(registered, config, task, plugin_manager=manager, name=name)
    for _kind, task in _candidate_tasks():
        try:
            registered(config, task)
        except Exception:  # a task it refuses is not its task
            continue
        return check_model_factory(registered, config, task, plugin_manager=manager, name=name)
    msg = (
        f"it builds for none of the kit's tasks (tabular, text and image classification, "
        f"language modeling); declare one: [tool.treadle.conformance.models.{name}] task = {{...}}"
    )
    raise NotConfigured(msg)


# -- exporters --------------------------------------------------------------------------------


class TabularMLP(torch.nn.Module):
    """``features (batch, 4)`` to 3 logits: Linear, Tanh, Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)  # type: ignore[no-any-return]


class TokenModel(torch.nn.Module):
    """``input_ids (batch, seq_len)`` to ``(batch, seq_len, 32)`` logits."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = torch.nn.Embedding(32, 16)
        self.head = torch.nn.Linear(16, 32)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.embedding(input_ids)))  # type: ignore[no-any-return]


class ImageModel(torch.nn.Module):
    """``pixel_values (batch, 1, 8, 8)`` to 10 logits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.head = torch.nn.Linear(4, 10)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(pixel_values)).mean(dim=(2, 3)))  # type: ignore[no-any-return]


def export_cases() -> list[dict[str, Any]]:
    """The models the runner tries an export format on, in order, with their inputs."""
    from treadle.task import TaskSpec

    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    return [
        {
            "model": TabularMLP().eval(),
            "example_inputs": {"features": torch.randn(1, 4, generator=generator)},
            "variants": [{"features": torch.randn(5, 4, generator=generator)}],
            "task_spec": TaskSpec.classification(
                "tabular",
                num_classes=3,
                modality="tabular",
                preprocessing_config={"num_features": 4},
            ),
        },
        {
            "model": TokenModel().eval(),
            "example_inputs": {"input_ids": torch.randint(0, 32, (1, 12), generator=generator)},
            "variants": [
                {"input_ids": torch.randint(0, 32, (3, 12), generator=generator)},
                {"input_ids": torch.randint(0, 32, (2, 7), generator=generator)},
            ],
            "task_spec": TaskSpec.language_modeling("tokens", max_seq_len=16),
        },
        {
            "model": ImageModel().eval(),
            "example_inputs": {"pixel_values": torch.randn(1, 1, 8, 8, generator=generator)},
            "variants": [{"pixel_values": torch.randn(4, 1, 8, 8, generator=generator)}],
            "task_spec": TaskSpec.vision_tiny(),
        },
    ]


def _check_exporter(
    name: str, registered: Any, settings: Mapping[str, Any], workdir: Path, manager: PluginManager
) -> ConformanceReport:
    from treadle.testing.exporters import check_bundle_loader, check_exporter

    exporter = manager.registry("exporters").create(name)
    if "case" in settings:
        make_case = resolve_reference(settings["case"], "case")
        cases = [dict(make_case() if callable(make_case) else make_case)]
    else:
        cases = export_cases()
    first_error: ConformanceError | None = None
    for index, case in enumerate(cases):
        arguments = {
            "task_spec": case.get("task_spec"),
            "variants": case.get("variants", ()),
            "metadata": case.get("metadata"),
        }
        folder = workdir / f"case-{index}"
        try:
            report = check_exporter(
                exporter, case["model"], case["example_inputs"], folder / "export", **arguments
            )
        except ConformanceError as err:
            if err.rule != "writes the artifact" or "case" in settings:
                raise
            first_error = first_error or err
            continue
        loader = check_bundle_loader(
            exporter, case["model"], case["example_inputs"], folder / "loader", **arguments
        )
        return _merged(report, loader)
    assert first_error is not None
    message = (
        f"{first_error} (tried a tabular MLP, a token model and a small CNN; declare a model it "
        f'exports: [tool.treadle.conformance.exporters.{name}] case = "module:function")'
    )
    raise ConformanceError(
        message, kind="exporters", subject=first_error.subject, rule=first_error.rule
    ) from first_error


def _merged(first: ConformanceReport, second: ConformanceReport) -> ConformanceReport:
    passed = first.passed + tuple(rule for rule in second.passed if rule not in first.passed)
    return ConformanceReport(
        kind=first.kind,
        subject=first.subject,
        passed=passed,
        skipped=first.skipped + second.skipped,
        details={**first.details, "loader_max_abs_error": second.details.get("max_abs_error")},
    )


# -- storage, job types, commands, data sets ------------------------------------------------


def _check_storage(
    name: str, registered: Any, settings: Mapping[str, Any], workdir: Path, manager: PluginManager
) -> ConformanceReport:
    from treadle.testing.stores import check_storage_backend

    location = settings.get("location")
    if location is None:
        msg = (
            f"declare where a store of scheme {name!r} can be opened: "
            f'[tool.treadle.conformance.storage.{name}] location = "{name}://..." '
            f"('{{tmp}}' stands for a temporary folder)"
        )
        raise NotConfigured(msg)
    return check_storage_backend(str(location).replace("{tmp}", str(workdir)), manager)


def _check_job_type(
    name: str, registered: Any, settings: Mapping[str, Any], workdir: Path, manager: PluginManager
) -> ConformanceReport:
    from treadle.testing.jobs import check_job_type

    try:
        return check_job_type(
            registered,
            workdir,
            name=name,
            config=settings.get("config", {}),
            bad_config=settings.get("bad_config"),
            run=bool(settings.get("run", True)),
            plugin_manager=manager,
        )
    except ConformanceError as err:
        if err.rule != "accepts its config" or "config" in settings:
            raise
        msg = (
            f"it refuses the empty config {{}}; declare one it runs: "
            f"[tool.treadle.conformance.job_types.{name}] config = {{...}} ({err})"
        )
        raise NotConfigured(msg) from err


def _check_command(
    name: str, registered: Any, settings: Mapping[str, Any], workdir: Path, manager: PluginManager
) -> ConformanceReport:
    from treadle.testing.commands import check_command

    argv = settings.get("argv")
    if argv is not None:
        argv = [str(argument).replace("{tmp}", str(workdir)) for argument in argv]
    command = manager.registry("commands").create(name)
    return check_command(command, name=name, argv=argv, plugin_manager=manager)


def _check_dataset(
    name: str, registered: Any, settings: Mapping[str, Any], workdir: Path, manager: PluginManager
) -> ConformanceReport:
    from treadle.config import TrainingConfig
    from treadle.testing.datasets import check_dataset

    config = (
        TrainingConfig.from_dict(settings["config"], source="conformance config")
        if "config" in settings
        else None
    )
    from treadle.task import TaskSpec

    return check_dataset(
        registered,
        name=name,
        training_config=config,
        task_spec=TaskSpec.from_dict(settings["task"]) if "task" in settings else None,
        options=settings.get("options"),
        plugin_manager=manager,
    )


def _check_logger(
    name: str, registered: Any, settings: Mapping[str, Any], workdir: Path, manager: PluginManager
) -> ConformanceReport:
    from treadle.testing.loggers import check_logger

    read_steps = settings.get("read_steps")
    if read_steps is not None:
        read_steps = resolve_reference(read_steps, "read_steps")
    return check_logger(registered, workdir / "run", read_steps=read_steps, name=name)


#: The check of each kind, taking (name, registered object, settings, work folder, manager).
CHECKERS: dict[str, Checker] = {
    "losses": _check_loss,
    "collators": _check_collator,
    "models": _check_model,
    "metrics": _check_metric,
    "loggers": _check_logger,
    "exporters": _check_exporter,
    "storage": _check_storage,
    "job_types": _check_job_type,
    "commands": _check_command,
    "datasets": _check_dataset,
}
