"""The Trainer: the spec's results, accumulation equivalence, early stopping, the device
fallback, optimizer groups and schedule, precision, and the loops used on their own."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.trainer_fixtures import (
    Blobs,
    TinyClassifier,
    classification_task,
    engine_plugin_manager,
    loaders,
    needs_engine,
    needs_main_job,
    small_config,
)
from treadle import hookimpl
from treadle.engine.optim import WarmupThenDecay, parameter_groups, warmup_steps
from treadle.engine.precision import resolve_precision
from treadle.engine.trainer import Trainer


def train(tmp_path: Path, model: torch.nn.Module | None = None, **overrides: Any) -> Any:
    config = small_config(tmp_path, **overrides)
    return Trainer(
        model or TinyClassifier(),
        None,
        config,
        classification_task(),
        device="cpu",
        plugin_manager=engine_plugin_manager(),
    ).train(*loaders())


@needs_engine
def test_results_have_the_spec_keys_and_one_history_row_per_epoch(tmp_path: Path) -> None:
    results = train(tmp_path, epochs=3)
    assert {"best_epoch", "best_val_loss", "total_time", "final_metrics", "history"} <= set(results)
    assert [row["epoch"] for row in results["history"]] == [0, 1, 2]
    assert results["final_metrics"] == results["history"][-1]
    assert {"train_loss", "val_loss", "val_accuracy", "learning_rate"} <= set(
        results["final_metrics"]
    )
    val_losses = [row["val_loss"] for row in results["history"]]
    assert results["best_val_loss"] == min(val_losses)
    assert results["best_epoch"] == val_losses.index(min(val_losses))
    assert results["stop_reason"] is None
    assert results["global_step"] == 3 * 8
    assert results["history"][-1]["val_accuracy"] > 0.8, "two blobs are easy to tell apart"


@needs_main_job
def test_a_dataloader_and_a_dataset_give_the_same_kind_of_results(tmp_path: Path) -> None:
    config = small_config(tmp_path, epochs=1)
    manager = engine_plugin_manager()
    manager.registry("collators").register("stack", torch.utils.data.default_collate)
    task = classification_task()
    import attrs

    task = attrs.evolve(task, collator="stack")
    results = Trainer(
        TinyClassifier(), None, config, task, device="cpu", plugin_manager=manager
    ).train(Blobs(64), Blobs(32, seed=1))
    assert results["global_step"] == 8
    assert "val_accuracy" in results["final_metrics"]


@needs_engine
def test_four_accumulated_batches_of_8_train_like_one_batch_of_32(tmp_path: Path) -> None:
    torch.manual_seed(0)
    initial = TinyClassifier()
    trained = []
    for batch_size, accumulation in ((32, 1), (8, 4)):
        model = TinyClassifier()
        model.load_state_dict(initial.state_dict())
        config = small_config(
            tmp_path / f"b{batch_size}",
            epochs=2,
            batch_size=batch_size,
            gradient_accumulation_steps=accumulation,
        )
        train_loader, val_loader = loaders(train_size=128, batch_size=batch_size, shuffle=False)
        results = Trainer(
            model,
            None,
            config,
            classification_task(),
            device="cpu",
            plugin_manager=engine_plugin_manager(),
        ).train(train_loader, val_loader)
        assert results["global_step"] == 2 * 4
        trained.append(model)
    for big, accumulated in zip(trained[0].parameters(), trained[1].parameters(), strict=True):
        # float32 sums in another order: equal to rounding
        torch.testing.assert_close(accumulated, big, rtol=1e-5, atol=1e-6)


@needs_engine
def test_an_epoch_that_is_not_a_multiple_of_the_window_steps_on_its_remainder(
    tmp_path: Path,
) -> None:
    # 64 samples / 8 = 8 batches; windows of 3: 3 + 3 + 2 -> 3 optimizer steps per epoch
    results = train(tmp_path, epochs=2, gradient_accumulation_steps=3)
    assert results["global_step"] == 6


class BatchLosses:
    """Keeps every batch's own loss, as ``treadle_on_batch_end`` reports it."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    @hookimpl
    def treadle_on_batch_end(self, loss: torch.Tensor) -> None:
        self.losses.append(float(loss))


@needs_engine
def test_the_trainers_accumulator_statistics_are_live_after_a_run(tmp_path: Path) -> None:
    # 64 samples / 8 = 8 batches; windows of 3: 3 + 3 + 2 -> 3 optimizer steps per epoch
    batch_losses = BatchLosses()
    config = small_config(tmp_path, epochs=2, gradient_accumulation_steps=3, max_grad_norm=0.5)
    model = TinyClassifier()
    trainer = Trainer(
        model,
        None,
        config,
        classification_task(),
        device="cpu",
        plugin_manager=engine_plugin_manager(("losses-seen", batch_losses)),
    )
    results = trainer.train(*loaders())

    assert trainer.gradient_accumulator is not None
    assert trainer.gradient_monitor is not None
    stats = trainer.gradient_accumulator.get_stats()
    assert stats.global_step == 16, "backward passes"
    assert stats.effective_step == results["global_step"] == 6
    assert stats.num_parameters == sum(p.numel() for p in model.parameters())
    assert stats.norm_before_clip == pytest.approx(results["history"][-1]["gradient_norm"])
    assert stats.norm_after_clip == pytest.approx(min(stats.norm_before_clip, 0.5), rel=1e-5)
    # the last window: two batches of 8 equal samples, so its loss is their mean
    assert stats.accumulated_loss == pytest.approx(sum(batch_losses.losses[-2:]) / 2, rel=1e-6)


@needs_engine
def test_a_resumed_run_continues_the_accumulator_counters(tmp_path: Path) -> None:
    train(tmp_path, epochs=1, gradient_accumulation_steps=3)
    trainer = Trainer(
        TinyClassifier(),
        None,
        small_config(tmp_path, epochs=2, gradient_accumulation_steps=3, resume="auto"),
        classification_task(),
        device="cpu",
        plugin_manager=engine_plugin_manager(),
    )
    results = trainer.train(*loaders())
    assert trainer.gradient_accumulator is not None
    stats = trainer.gradient_accumulator.get_stats()
    assert (stats.global_step, stats.effective_step) == (16, results["global_step"]) == (16, 6)


@needs_engine
def test_early_stopping_stops_after_patience_epochs_without_improvement(tmp_path: Path) -> None:
    # the model learns, so val_loss falls: watching for a *rise* never improves after epoch 0
    results = train(tmp_path, epochs=5, early_stopping_patience=2, monitor_mode="max")
    assert len(results["history"]) == 3
    assert results["best_epoch"] == 0
    assert results["stop_reason"].startswith("early stopping: val_loss did not improve for 2")


@needs_engine
def test_cuda_without_a_gpu_falls_back_to_the_cpu_with_one_warning(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = Trainer(
            TinyClassifier(),
            None,
            small_config(tmp_path, epochs=1),
            classification_task(),
            device="cuda",
            plugin_manager=engine_plugin_manager(),
        )
        trainer.train(*loaders())
    cuda_warnings = [w for w in caught if "CUDA is not available" in str(w.message)]
    assert len(cuda_warnings) == 1
    assert trainer.device == torch.device("cpu")


def test_weight_decay_spares_biases_and_norm_weights() -> None:
    model = TinyClassifier()
    decay, no_decay = parameter_groups(model, 0.01)
    assert decay["weight_decay"] == 0.01
    assert no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model.hidden.weight), id(model.out.weight)}
    assert {id(p) for p in no_decay["params"]} == {
        id(model.hidden.bias),
        id(model.norm.weight),
        id(model.norm.bias),
        id(model.out.bias),
    }


def test_frozen_parameters_are_left_out_of_the_optimizer() -> None:
    model = TinyClassifier()
    model.hidden.requires_grad_(False)
    listed = {id(p) for group in parameter_groups(model, 0.01) for p in group["params"]}
    assert id(model.hidden.weight) not in listed
    assert id(model.out.weight) in listed


def test_the_schedule_warms_up_then_decays_to_zero_per_optimizer_step() -> None:
    assert warmup_steps(100, 0.1) == 10
    linear = WarmupThenDecay(10, 100, "linear")
    assert linear(0) == pytest.approx(1 / 11)
    assert linear(9) == pytest.approx(10 / 11)
    assert linear(10) == 1.0
    assert linear(55) == pytest.approx(0.5)
    assert linear(100) == 0.0
    cosine = WarmupThenDecay(10, 100, "cosine")
    assert cosine(55) == pytest.approx(0.5)
    assert cosine(100) == pytest.approx(0.0, abs=1e-12)
    assert WarmupThenDecay(10, 100, "constant")(80) == 1.0


@needs_engine
def test_the_learning_rate_reaches_zero_on_the_last_step(tmp_path: Path) -> None:
    results = train(tmp_path, epochs=2, gradient_accumulation_steps=2)
    assert results["history"][0]["learning_rate"] > 0
    assert results["history"][-1]["learning_rate"] == 0.0


@pytest.mark.parametrize(
    ("precision", "use_amp", "expected"),
    [
        ("auto", False, ("32-true", None, False)),
        ("auto", True, ("bf16-mixed", torch.bfloat16, False)),
        ("32-true", True, ("32-true", None, False)),
        ("bf16-mixed", False, ("bf16-mixed", torch.bfloat16, False)),
        ("16-mixed", False, ("bf16-mixed", torch.bfloat16, False)),  # no fp16 scaler on CPU
    ],
)
def test_precision_on_the_cpu(precision: str, use_amp: bool, expected: tuple[Any, ...]) -> None:
    chosen = resolve_precision(precision, use_amp, torch.device("cpu"))
    assert (chosen.name, chosen.dtype, chosen.uses_scaler) == expected


def test_fp16_on_cuda_uses_a_gradient_scaler() -> None:
    chosen = resolve_precision("16-mixed", False, torch.device("cuda"))
    assert (chosen.dtype, chosen.uses_scaler) == (torch.float16, True)


@needs_engine
def test_bf16_autocast_training_on_the_cpu_learns(tmp_path: Path) -> None:
    results = train(tmp_path, epochs=2, use_amp=True)
    assert all(math.isfinite(row["train_loss"]) for row in results["history"])
    assert results["history"][-1]["val_accuracy"] > 0.8


@needs_engine
def test_the_loops_work_on_their_own_as_the_spec_shows() -> None:
    from treadle.engine.accumulation import GradientAccumulator
    from treadle.engine.gradient_monitor import GradientMonitor
    from treadle.engine.loops import TrainingLoop, ValidationLoop
    from treadle.losses import get_loss_strategy

    manager = engine_plugin_manager()
    strategy = get_loss_strategy("classification", plugin_manager=manager)
    model = TinyClassifier()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    train_loop = TrainingLoop(
        gradient_accumulator=GradientAccumulator(accumulation_steps=2),
        gradient_monitor=GradientMonitor(check_interval=1),
        loss_strategy=strategy,
        gradient_clip_norm=1.0,
    )
    seen: list[tuple[float, int]] = []
    train_loader, val_loader = loaders()
    result = train_loop.run_epoch(
        epoch=0,
        model=model,
        train_loader=train_loader,
        optimizer=optimizer,
        scheduler=None,
        device=torch.device("cpu"),
        metrics_callback=lambda loss, step: seen.append((loss, step)),
    )
    assert (result.num_batches, result.num_samples, result.global_step) == (8, 64, 4)
    stats = train_loop.gradient_accumulator.get_stats()
    assert (stats.global_step, stats.effective_step) == (8, 4), "the loop's accumulator counts"
    assert [step for _, step in seen] == [1, 2, 3, 4]
    assert result.epoch_duration_seconds > 0
    accuracy = manager.registry("metrics").get("accuracy")
    val = ValidationLoop(loss_strategy=strategy, metrics=[accuracy]).run_epoch(
        epoch=0, model=model, val_loader=val_loader, device="cpu"
    )
    assert val.num_samples == 32
    assert 0.0 <= val.metrics["accuracy"] <= 1.0
    assert math.isfinite(val.loss)


@needs_engine
def test_a_batch_that_is_not_a_mapping_gets_a_clear_error(tmp_path: Path) -> None:
    pairs = [(torch.randn(8, 8), torch.zeros(8, dtype=torch.long))]
    trainer = Trainer(
        TinyClassifier(),
        None,
        small_config(tmp_path),
        classification_task(),
        device="cpu",
        plugin_manager=engine_plugin_manager(),
    )
    with pytest.raises(TypeError, match="mapping of tensors holding 'labels'"):
        trainer.train(pairs, None)


def test_sample_limits_are_validated() -> None:
    from treadle.config import TrainingConfig
    from treadle.errors import ConfigError

    assert TrainingConfig(max_train_samples=10, max_val_samples=5).max_train_samples == 10
    with pytest.raises(ConfigError, match="'max_train_samples' must be >= 1: 0"):
        TrainingConfig(max_train_samples=0)


@needs_engine
def test_evaluate_reports_loss_and_task_metrics_without_training(tmp_path: Path) -> None:
    model = TinyClassifier()
    trainer = Trainer(
        model,
        None,
        small_config(tmp_path),
        classification_task(),
        device="cpu",
        plugin_manager=engine_plugin_manager(),
    )
    before = {name: value.clone() for name, value in model.state_dict().items()}
    _, val_loader = loaders()
    metrics = trainer.evaluate(val_loader)
    assert {"eval_loss", "eval_accuracy", "eval_samples", "eval_batches"} <= set(metrics)
    assert metrics["eval_samples"] == 32
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())
    trainer.train(*loaders())
    after = trainer.evaluate(val_loader, metric_prefix="test_")
    assert after["test_loss"] < metrics["eval_loss"]
    with pytest.raises(ValueError, match="no batch"):
        trainer.evaluate([])
