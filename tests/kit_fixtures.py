"""Plugins for the conformance kit's own tests: per kind, one that keeps the contract and, per
rule, one that breaks exactly that rule. ``BROKEN[(kind, rule)]`` runs the kit on the broken
one; it must raise ``ConformanceError`` for that rule."""

from __future__ import annotations

import json
import math
import random
import textwrap
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from treadle import hookimpl
from treadle.errors import ConfigError
from treadle.task import TaskSpec

IGNORE = -100
Case = Callable[[Path, pytest.MonkeyPatch], object]
BROKEN: dict[tuple[str, str], Case] = {}


def broken(kind: str, rule: str) -> Callable[[Case], Case]:
    def record(case: Case) -> Case:
        BROKEN[(kind, rule)] = case
        return case

    return record


# -- losses -----------------------------------------------------------------------------------


class GoodLoss:
    """Cross-entropy over the labels that count, a sum over num_items_in_batch."""

    def validate_inputs(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        if logits.ndim != 2 or labels.ndim != 1 or logits.shape[0] != labels.shape[0]:
            shapes = f"{tuple(logits.shape)}, {tuple(labels.shape)}"
            msg = f"expected logits (batch, classes) and labels (batch,): {shapes}"
            raise ValueError(msg)
        if not logits.dtype.is_floating_point:
            msg = f"logits must be float, not {logits.dtype}"
            raise ValueError(msg)
        if labels.dtype != torch.long:
            msg = f"labels must be torch.int64, not {labels.dtype}"
            raise ValueError(msg)

    def count_items(self, labels: torch.Tensor, inputs: Any = None) -> int:
        return int((labels != IGNORE).sum())

    def compute_loss(
        self, logits: torch.Tensor, labels: torch.Tensor, inputs: Any = None
    ) -> torch.Tensor:
        self.validate_inputs(logits, labels)
        total = F.cross_entropy(logits, labels, ignore_index=IGNORE, reduction="sum")
        count = (inputs or {}).get("num_items_in_batch") or self.count_items(labels)
        if not count:
            msg = "every label is ignored"
            raise ValueError(msg)
        return total / count


class DetachedLoss(GoodLoss):
    def compute_loss(
        self, logits: torch.Tensor, labels: torch.Tensor, inputs: Any = None
    ) -> torch.Tensor:
        return super().compute_loss(logits, labels, inputs).detach()


class UncheckedLoss(GoodLoss):
    def validate_inputs(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        pass


class NanWhenMaskedLoss(GoodLoss):
    def compute_loss(
        self, logits: torch.Tensor, labels: torch.Tensor, inputs: Any = None
    ) -> torch.Tensor:
        self.validate_inputs(logits, labels)
        total = F.cross_entropy(logits, labels, ignore_index=IGNORE, reduction="sum")
        count = (inputs or {}).get("num_items_in_batch") or self.count_items(labels)
        return total / torch.tensor(float(count)) * 0.0 + total / self.count_items(labels)


class OffByOneNumItems(GoodLoss):
    def compute_loss(
        self, logits: torch.Tensor, labels: torch.Tensor, inputs: Any = None
    ) -> torch.Tensor:
        num_items = (inputs or {}).get("num_items_in_batch")
        if num_items is None:
            return super().compute_loss(logits, labels, inputs)
        total = F.cross_entropy(logits, labels, ignore_index=IGNORE, reduction="sum")
        return total / (num_items + 1)


class MeanPerBatch:
    """No count_items and a mean per batch: micro-batches holding different numbers of
    ignored labels do not add up."""

    validate_inputs = GoodLoss.validate_inputs

    def compute_loss(
        self, logits: torch.Tensor, labels: torch.Tensor, inputs: Any = None
    ) -> torch.Tensor:
        self.validate_inputs(logits, labels)
        if bool((labels == IGNORE).all()):
            msg = "every label is ignored"
            raise ValueError(msg)
        return F.cross_entropy(logits, labels, ignore_index=IGNORE)


def _loss_case(strategy: type) -> Case:
    def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
        from treadle.testing.losses import check_loss_strategy

        return check_loss_strategy(strategy, "classification", all_masked="either")

    return run


broken("losses", "valid batch")(_loss_case(DetachedLoss))
broken("losses", "shape and dtype errors")(_loss_case(UncheckedLoss))
broken("losses", "all-masked batch")(_loss_case(NanWhenMaskedLoss))
broken("losses", "sum / num_items")(_loss_case(OffByOneNumItems))
broken("losses", "accumulation invariance")(_loss_case(MeanPerBatch))


# -- collators --------------------------------------------------------------------------------


def good_collator(samples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    """Token ids padded with 0 on the right, labels -100 there."""
    length = max(len(sample["input_ids"]) for sample in samples)
    ids = torch.zeros(len(samples), length, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, sample in enumerate(samples):
        ids[row, : len(sample["input_ids"])] = torch.tensor(sample["input_ids"])
        mask[row, : len(sample["input_ids"])] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, IGNORE)}


TOKEN_SAMPLES = [{"input_ids": [5, 6, 7]}, {"input_ids": [8]}, {"input_ids": [9, 10, 11, 12]}]


def _collator_case(collator: Callable[..., Any]) -> Case:
    def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
        from treadle.testing.collators import check_collator

        return check_collator(collator, [dict(sample) for sample in TOKEN_SAMPLES])

    return run


@broken("collators", "batch")
def _(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    def without_labels(samples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        batch = good_collator(samples)
        del batch["labels"]
        return batch

    return _collator_case(without_labels)(tmp_path, monkeypatch)


@broken("collators", "deterministic and pure")
def _(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    def consuming(samples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = good_collator(samples)
        for sample in samples:
            sample["input_ids"] = sample["input_ids"][1:] or [1]  # "uses up" the sample
        return batch

    return _collator_case(consuming)(tmp_path, monkeypatch)


@broken("collators", "order")
def _(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    def sorting(samples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        return good_collator(sorted(samples, key=lambda sample: len(sample["input_ids"])))

    return _collator_case(sorting)(tmp_path, monkeypatch)


@broken("collators", "masks")
def _(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    def counting_padding(samples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        batch = good_collator(samples)
        batch["labels"] = batch["input_ids"].clone()
        return batch

    return _collator_case(counting_padding)(tmp_path, monkeypatch)


# -- metrics ----------------------------------------------------------------------------------


class GoodAccuracy:
    def __init__(self) -> None:
        self.correct = torch.zeros((), dtype=torch.long)
        self.counted = torch.zeros((), dtype=torch.long)

    def update(self, logits: torch.Tensor, labels: torch.Tensor, inputs: Any) -> None:
        counts = labels != IGNORE
        self.correct = self.correct + ((logits.argmax(-1) == labels) & counts).sum()
        self.counted = self.counted + counts.sum()

    def compute(self) -> dict[str, float]:
        if int(self.counted) == 0:
            return {"accuracy": math.nan}
        return {"accuracy": float(self.correct) / float(self.counted)}


class NeedsThreshold(GoodAccuracy):
    def __init__(self, threshold: float) -> None:
        super().__init__()


class DividesByZero(GoodAccuracy):
    def compute(self) -> dict[str, float]:
        return {"accuracy": int(self.correct) / int(self.counted)}


class ReportsText(GoodAccuracy):
    def compute(self) -> dict[str, Any]:
        return {"accuracy": "high"}


class Prefixed(GoodAccuracy):
    def compute(self) -> dict[str, float]:
        return {"val_accuracy": super().compute()["accuracy"]}


class MeanOfBatchMeans(GoodAccuracy):
    def __init__(self) -> None:
        super().__init__()
        self.total = torch.zeros((), dtype=torch.float64)
        self.batches = torch.zeros((), dtype=torch.long)

    def update(self, logits: torch.Tensor, labels: torch.Tensor, inputs: Any) -> None:
        counts = labels != IGNORE
        hits = ((logits.argmax(-1) == labels) & counts).sum()
        self.total = self.total + hits / counts.sum()
        self.batches = self.batches + 1

    def compute(self) -> dict[str, float]:
        return {"accuracy": float(self.total / self.batches)}


class KeepsLogits(GoodAccuracy):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def update(self, logits: torch.Tensor, labels: torch.Tensor, inputs: Any) -> None:
        self.seen.append((logits.clone(), labels.clone()))

    def compute(self) -> dict[str, float]:
        if not self.seen:
            return {"accuracy": math.nan}
        logits = torch.cat([logits for logits, _ in self.seen])
        labels = torch.cat([labels for _, labels in self.seen])
        counts = labels != IGNORE
        return {"accuracy": float(((logits.argmax(-1) == labels) & counts).sum() / counts.sum())}


class FloatSums(GoodAccuracy):
    def __init__(self) -> None:
        self.correct_count = 0.0
        self.seen_count = 0.0

    def update(self, logits: torch.Tensor, labels: torch.Tensor, inputs: Any) -> None:
        counts = labels != IGNORE
        self.correct_count += float(((logits.argmax(-1) == labels) & counts).sum())
        self.seen_count += float(counts.sum())

    def compute(self) -> dict[str, float]:
        if not self.seen_count:
            return {"accuracy": math.nan}
        return {"accuracy": self.correct_count / self.seen_count}


class CountsPadding(GoodAccuracy):
    def update(self, logits: torch.Tensor, labels: torch.Tensor, inputs: Any) -> None:
        self.correct = self.correct + (logits.argmax(-1) == labels).sum()
        self.counted = self.counted + labels.numel()


def _metric_case(metric: type) -> Case:
    def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
        from treadle.testing.metrics import check_metric

        return check_metric(metric, "classification")

    return run


broken("metrics", "built per validation")(_metric_case(NeedsThreshold))
broken("metrics", "empty validation")(_metric_case(DividesByZero))
broken("metrics", "reports floats")(_metric_case(ReportsText))
broken("metrics", "no val_ prefix")(_metric_case(Prefixed))
broken("metrics", "streams")(_metric_case(MeanOfBatchMeans))
broken("metrics", "keeps sums only")(_metric_case(KeepsLogits))
broken("metrics", "shards add up")(_metric_case(FloatSums))
broken("metrics", "ignores masked labels")(_metric_case(CountsPadding))


# -- model factories --------------------------------------------------------------------------

TABULAR = TaskSpec.classification(
    "rows", num_classes=3, modality="tabular", preprocessing_config={"num_features": 4}
)


class RowModel(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Dropout(0.5), torch.nn.Linear(8, 3)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)  # type: ignore[no-any-return]


def good_model_factory(training_config: Any, task_spec: TaskSpec) -> torch.nn.Module:
    return RowModel()


class PositionalModel(RowModel):
    def forward(self, inputs: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(inputs)


class DetachedModel(RowModel):
    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return super().forward(features).detach()


class UnsavedScale(RowModel):
    """Multiplies by a random factor kept in a plain attribute: not in its state_dict."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.rand(())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return super().forward(features) * self.scale


class AlwaysDropout(RowModel):
    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.dropout(super().forward(features), 0.5, training=True)


def _model_case(factory: Callable[..., Any]) -> Case:
    def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
        import treadle_losses.plugin
        from treadle.config import TrainingConfigBuilder
        from treadle.testing import isolated_plugin_manager
        from treadle.testing.models import check_model_factory

        manager = isolated_plugin_manager(("losses", treadle_losses.plugin))
        config = TrainingConfigBuilder.quick_prototype().build()
        return check_model_factory(factory, config, TABULAR, plugin_manager=manager)

    return run


broken("models", "builds")(_model_case(lambda config, task: RowModel().forward))
broken("models", "forward takes the batch")(_model_case(lambda config, task: PositionalModel()))
broken("models", "trains one step")(_model_case(lambda config, task: DetachedModel()))
broken("models", "checkpoint round trip")(_model_case(lambda config, task: UnsavedScale()))
broken("models", "eval is deterministic")(_model_case(lambda config, task: AlwaysDropout()))


# -- loggers ----------------------------------------------------------------------------------


class GoodLogger:
    """One JSON line per call in run_dir/steps.jsonl; a resume drops the replayed steps."""

    def __init__(self, training_config: Any = None, run_dir: Path | None = None) -> None:
        assert run_dir is not None
        self.path = Path(run_dir) / "steps.jsonl"

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        values = {key: value if math.isfinite(value) else None for key, value in metrics.items()}
        with self.path.open("a") as handle:
            handle.write(json.dumps({"step": step, **values}) + "\n")

    def close(self) -> None:
        pass

    @hookimpl
    def treadle_on_load_checkpoint(self, trainer: Any) -> None:
        if self.path.is_file():
            kept = [
                line
                for line in self.path.read_text().splitlines()
                if json.loads(line)["step"] <= trainer.global_step
            ]
            self.path.write_text("".join(line + "\n" for line in kept))

    @hookimpl
    def treadle_on_save_checkpoint(self, trainer: Any, plugin_state: dict[str, Any]) -> None:
        plugin_state["good"] = {"step": trainer.global_step}


def read_logged_steps(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "steps.jsonl").read_text().splitlines()]


class PathLogger(GoodLogger):
    def __init__(self, path: Path) -> None:
        self.path = path


class UnmarkedHook(GoodLogger):
    def treadle_on_training_start(self, trainer: Any) -> None:
        pass


class StrictJsonLogger(GoodLogger):
    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps({"step": step, **metrics}, allow_nan=False) + "\n")


class FailsOnError(GoodLogger):
    @hookimpl
    def treadle_on_exception(self, exception: BaseException) -> None:
        msg = f"cannot report {exception}"
        raise RuntimeError(msg)


class PathState(GoodLogger):
    @hookimpl
    def treadle_on_save_checkpoint(self, trainer: Any, plugin_state: dict[str, Any]) -> None:
        plugin_state["good"] = {"file": self.path}


class Appending(GoodLogger):
    @hookimpl
    def treadle_on_load_checkpoint(self, trainer: Any) -> None:
        pass


def _logger_case(logger: type) -> Case:
    def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
        from treadle.testing.loggers import check_logger

        return check_logger(logger, tmp_path / "run", read_steps=read_logged_steps, name="good")

    return run


broken("loggers", "built the trainer's way")(_logger_case(PathLogger))
broken("loggers", "binds to one run")(_logger_case(UnmarkedHook))
broken("loggers", "takes metrics")(_logger_case(StrictJsonLogger))
broken("loggers", "closes after an error")(_logger_case(FailsOnError))
broken("loggers", "plain plugin state")(_logger_case(PathState))
broken("loggers", "resumes without duplicate steps")(_logger_case(Appending))


# -- export formats ---------------------------------------------------------------------------


def example_exporter(monkeypatch: pytest.MonkeyPatch) -> type:
    """The example plugin's numpy_mlp exporter class, imported from its source."""
    import importlib

    source = Path(__file__).resolve().parents[1] / "examples" / "treadle-example-plugin" / "src"
    monkeypatch.syspath_prepend(str(source))
    exporter: type = importlib.import_module("treadle_example.numpy_mlp").NumpyMLPExporter
    return exporter


def write_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, source: str) -> None:
    """``tmp_path/<name>.py``, importable here and in child interpreters."""
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))


def _export(exporter: object, tmp_path: Path, loader: bool = False) -> object:
    from treadle.testing.cases import TabularMLP
    from treadle.testing.exporters import check_bundle_loader, check_exporter

    torch.manual_seed(0)
    model = TabularMLP().eval()
    example = {"features": torch.randn(1, 4)}
    variants = [{"features": torch.randn(3, 4)}]
    check = check_bundle_loader if loader else check_exporter
    return check(exporter, model, example, tmp_path / "out", task_spec=TABULAR, variants=variants)  # type: ignore[operator]


@broken("exporters", "members")
def _(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    class Escaping(example_exporter(monkeypatch)):  # type: ignore[misc]
        artifact_name = "../model.npz"

    return _export(Escaping(), tmp_path)


@broken("exporters", "writes the artifact")
def _(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    class Idle(example_exporter(monkeypatch)):  # type: ignore[misc]
        def export(self, request: Any) -> None:
            pass

    return _export(Idle(), tmp_path)


@broken("exporters", "runs in process")
def _(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    class Unreadable(example_exporter(monkeypatch)):  # type: ignore[misc]
        loader = None

        def load(self, path: Path) -> Callable[..., torch.Tensor]:
            msg = f"{path.name} is in a format of a later version"
            raise RuntimeError(msg)

    return _export(Unreadable(), tmp_path)


@broken("exporters", "outputs match")
def _(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    class Shifted(example_exporter(monkeypatch)):  # type: ignore[misc]
        def export(self, request: Any) -> None:
            bias = request.user_model.layers[2].bias
            with torch.no_grad():
                bias.add_(1.0)
            try:
                super().export(request)
            finally:
                with torch.no_grad():
                    bias.sub_(1.0)

    return _export(Shifted(), tmp_path)


def _with_loader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str) -> object:
    from treadle.export import BundleLoader

    write_module(tmp_path, monkeypatch, "kit_loader", source)

    class Loaded(example_exporter(monkeypatch)):  # type: ignore[misc]
        loader = BundleLoader(module="kit_loader")

    return _export(Loaded(), tmp_path, loader=True)


@broken("exporters", "loader stands alone")
def _(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    return _with_loader(
        tmp_path,
        monkeypatch,
        """
        import treadle


        def load(path):
            return lambda arrays: arrays[0]
        """,
    )


@broken("exporters", "loader runs without treadle")
def _(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    return _with_loader(
        tmp_path,
        monkeypatch,
        """
        def load(path):
            raise RuntimeError("this loader reads another layout")
        """,
    )


@broken("exporters", "loader outputs match")
def _(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    return _with_loader(
        tmp_path,
        monkeypatch,
        """
        import numpy as np


        def load(path):
            return lambda arrays: np.zeros((arrays[0].shape[0], 3), dtype=np.float32)
        """,
    )


# -- job types --------------------------------------------------------------------------------


class GoodJob:
    preload = ("json",)

    def validate_config(self, config: Mapping[str, Any]) -> None:
        days = config.get("days")
        if not isinstance(days, int) or days < 1:
            msg = f"config 'days' must be an integer >= 1: {days!r}"
            raise ConfigError(msg)

    def run(self, context: Any) -> Mapping[str, Any]:
        return {"days": context.config["days"], "folder": str(context.output_dir)}


class NeedsArguments(GoodJob):
    def __init__(self, location: str) -> None:
        self.location = location


class Unvalidated:
    preload = ("json",)

    def run(self, context: Any) -> Mapping[str, Any]:
        return {}


class RefusesEverything(GoodJob):
    def validate_config(self, config: Mapping[str, Any]) -> None:
        msg = "no config is good enough"
        raise ConfigError(msg)


class NanResult(GoodJob):
    def run(self, context: Any) -> Mapping[str, Any]:
        return {"score": math.nan}


class MissingPreload(GoodJob):
    preload = ("acme_module_that_does_not_exist",)


def _job_case(job_type: type) -> Case:
    def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
        from treadle.testing.jobs import check_job_type

        return check_job_type(
            job_type, tmp_path, name="report", config={"days": 7}, bad_config={"days": 0}
        )

    return run


broken("job_types", "built")(_job_case(NeedsArguments))
broken("job_types", "refuses bad config at submit")(_job_case(Unvalidated))
broken("job_types", "accepts its config")(_job_case(RefusesEverything))
broken("job_types", "result is JSON")(_job_case(NanResult))
broken("job_types", "preload importable")(_job_case(MissingPreload))


# -- commands ---------------------------------------------------------------------------------


class GoodCommand:
    help = "print a greeting"

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--name", default="world")

    def run(self, args: Any) -> int:
        return 0


class Silent(GoodCommand):
    help = ""


class Clashing(GoodCommand):
    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--name")
        parser.add_argument("--name")


class Failing(GoodCommand):
    def run(self, args: Any) -> int:
        return 3


def _command_case(command: object) -> Case:
    def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
        from treadle.testing.commands import check_command

        return check_command(command, name="greet", argv=["--name", "kit"])

    return run


broken("commands", "describes itself")(_command_case(Silent()))
broken("commands", "adds arguments")(_command_case(Clashing()))
broken("commands", "runs")(_command_case(Failing()))


@broken("commands", "imports light")
def _(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    import importlib

    from treadle.testing.commands import check_command

    write_module(
        tmp_path,
        monkeypatch,
        "kit_heavy_command",
        """
        import pandas


        class HeavyCommand:
            help = "print a table"

            def add_arguments(self, parser):
                pass

            def run(self, args):
                return 0
        """,
    )
    command = importlib.import_module("kit_heavy_command").HeavyCommand()
    return check_command(command, name="table")


# -- data sets --------------------------------------------------------------------------------


class GoodRows:
    description = "50 random rows of 4 features, 3 classes"
    task_types = ("classification",)
    modalities = ("tabular",)
    source = "torch.randn with seed 0"
    licence = "CC0-1.0"
    requirements = ()

    def default_task(self, training_config: Any) -> TaskSpec:
        return TABULAR

    def rows(self) -> list[dict[str, Any]]:
        generator = torch.Generator().manual_seed(0)
        return [
            {"features": torch.randn(4, generator=generator), "label": index % 3}
            for index in range(50)
        ]

    def load(
        self, task_spec: TaskSpec, *, tokenizer: Any, validation_split: float, seed: int
    ) -> tuple[Any, Any]:
        from treadle.data import SampleList, split_indices

        rows = self.rows()
        train, val = split_indices(len(rows), validation_split, seed)
        return (
            SampleList([rows[i] for i in train]),
            SampleList([rows[i] for i in val]) if val else None,
        )


class Unlicensed(GoodRows):
    licence = ""


class OtherTask(GoodRows):
    def default_task(self, training_config: Any) -> TaskSpec:
        return TaskSpec.language_modeling("text")


class NoValidation(GoodRows):
    def load(
        self, task_spec: TaskSpec, *, tokenizer: Any, validation_split: float, seed: int
    ) -> tuple[Any, Any]:
        train, _ = super().load(
            task_spec, tokenizer=tokenizer, validation_split=validation_split, seed=seed
        )
        return train, []


class Unseeded(GoodRows):
    """Splits by a seed of its own that changes with every load."""

    def load(
        self, task_spec: TaskSpec, *, tokenizer: Any, validation_split: float, seed: int
    ) -> tuple[Any, Any]:
        self.loads = getattr(self, "loads", 0) + 1
        return super().load(
            task_spec, tokenizer=tokenizer, validation_split=validation_split, seed=self.loads
        )


class Unlabelled(GoodRows):
    def rows(self) -> list[dict[str, Any]]:
        return [{"features": row["features"]} for row in super().rows()]


def _dataset_case(dataset: type) -> Case:
    def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
        from treadle.testing.datasets import check_dataset

        return check_dataset(dataset, name="rows")

    return run


broken("datasets", "describes itself")(_dataset_case(Unlicensed))
broken("datasets", "default task")(_dataset_case(OtherTask))
broken("datasets", "loads")(_dataset_case(NoValidation))
broken("datasets", "seeded split")(_dataset_case(Unseeded))
broken("datasets", "collates")(_dataset_case(Unlabelled))


# -- storage ----------------------------------------------------------------------------------


class Sabotaged:
    """A SQLite store with some methods replaced: ``replace[name](inner, *args, **kwargs)``."""

    def __init__(self, inner: Any, replace: Mapping[str, Callable[..., Any]]) -> None:
        self._inner = inner
        self._replace = replace

    def __getattr__(self, name: str) -> Any:
        if name in self._replace:
            replacement = self._replace[name]
            return lambda *args, **kwargs: replacement(self._inner, *args, **kwargs)
        return getattr(self._inner, name)


def sabotaged_manager(kind: str, replace: Mapping[str, Callable[..., Any]]) -> Any:
    """An isolated manager whose ``sqlite`` scheme opens stores of ``kind`` sabotaged."""
    from treadle.testing import isolated_plugin_manager
    from treadle_sqlite.backend import SQLiteBackend

    class Backend:
        def open(self, url: str, store_kind: str) -> Any:
            store = SQLiteBackend().open(url, store_kind)
            return Sabotaged(store, replace) if store_kind == kind else store

    class Plugin:
        @hookimpl
        def treadle_register_storage(self, register: Any) -> None:
            register("sqlite", Backend())

    return isolated_plugin_manager(("sabotaged", Plugin()))


def _store_case(rule: str, kind: str, **replace: Callable[..., Any]) -> None:
    def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
        from treadle.testing.stores import STORE_CHECKS, check_storage_backend, rule_of

        (check,) = [check for check in STORE_CHECKS if rule_of(check).name == rule]
        manager = sabotaged_manager(kind, replace)
        return check_storage_backend(str(tmp_path / "store.db"), manager, checks=[check])

    broken("storage", rule)(run)


def _evolved(entry: Any, **changes: Any) -> Any:
    import attrs

    return attrs.evolve(entry, **changes)


_store_case(
    "model round trip",
    "models",
    get_model=lambda inner, model_id: _evolved(
        inner.get_model(model_id),
        metrics={k: v for k, v in inner.get_model(model_id).metrics.items() if v == v},
    ),
)
_store_case(
    "duplicate version is refused",
    "models",
    add_model=lambda inner, model: inner.add_model(
        _evolved(model, version=f"{model.version}+{random.randrange(1 << 30)}")
    ),
)
_store_case(
    "job key registers once",
    "models",
    add_model=lambda inner, model: inner.add_model(_evolved(model, job_key=None)),
)
_store_case("tags move atomically", "models", set_tag=lambda inner, model_id, tag: None)
_store_case("retire", "models", set_status=lambda inner, model_id, status: [])
_store_case("lineage", "models", ancestors=lambda inner, model_id: [])


def _lookup_error(inner: Any, model_id: int) -> Any:
    from treadle.errors import UnknownNameError

    try:
        return inner.get_model(model_id)
    except UnknownNameError as err:
        raise LookupError(str(err)) from None


_store_case("unknown references", "models", get_model=_lookup_error)
_store_case(
    "text kept verbatim",
    "models",
    add_model=lambda inner, model: inner.add_model(
        _evolved(model, name=model.name.replace("'", ""))
    ),
)
_store_case(
    "model frames",
    "models",
    find_models=lambda inner, **query: list(reversed(inner.find_models(**query))),
)
_store_case("export formats", "models", add_export_formats=lambda inner, model_id, formats: None)
_store_case("data profile", "models", get_data_profile=lambda inner, model_id: None)
_store_case(
    "run round trip",
    "experiments",
    get_run=lambda inner, run_id: _evolved(inner.get_run(run_id), notes=""),
)
_store_case(
    "metrics round trip",
    "experiments",
    add_metrics=lambda inner, run_id, attempt, rows: inner.add_metrics(
        run_id, attempt, [row for row in rows if row[1] is not None]
    ),
)


def _row_by_row(inner: Any, run_id: int, attempt: int | None, rows: Any) -> int:
    return sum(inner.add_metrics(run_id, attempt, [row]) for row in rows)


_store_case("metrics batch is atomic", "experiments", add_metrics=_row_by_row)
_store_case(
    "resume supersedes",
    "experiments",
    start_attempt=lambda inner, run_id, resume_step: inner.start_attempt(run_id, None),
)
_store_case("best run", "experiments", best_values=lambda inner, *args, **kwargs: [])
_store_case(
    "run frames",
    "experiments",
    find_runs=lambda inner, **query: list(reversed(inner.find_runs(**query))),
)
_store_case(
    "runs that died",
    "experiments",
    heartbeat=lambda inner, run_id, attempt, lease_seconds: False,
)


@broken("storage", "stores share a location")
def _(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    """A backend that opens one store per location: the second kind is refused."""
    from treadle.errors import StorageError
    from treadle.testing import isolated_plugin_manager
    from treadle.testing.stores import check_storage_backend, check_stores_share_a_location
    from treadle_sqlite.backend import SQLiteBackend

    opened: dict[str, str] = {}

    class Exclusive:
        def open(self, url: str, kind: str) -> Any:
            if opened.setdefault(url, kind) != kind:
                msg = f"{url} already holds the {opened[url]} store"
                raise StorageError(msg)
            return SQLiteBackend().open(url, kind)

    class Plugin:
        @hookimpl
        def treadle_register_storage(self, register: Any) -> None:
            register("sqlite", Exclusive())

    manager = isolated_plugin_manager(("exclusive", Plugin()))
    return check_storage_backend(
        str(tmp_path / "store.db"), manager, checks=[check_stores_share_a_location]
    )
