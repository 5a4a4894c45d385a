"""Non-finite losses and gradients (issue 14, point 4): seen at every optimizer step, kept out of
the weights, and a run that keeps producing them stopped with the reason in the results and the
log; on the CPU read at once, with a fused optimizer deferred to the loop's sync points."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from tests.trainer_fixtures import (
    Blobs,
    TinyClassifier,
    classification_task,
    engine_plugin_manager,
    loaders,
    needs_engine,
    small_config,
)
from treadle.engine.accumulation import GradientAccumulator
from treadle.engine.gradient_monitor import GradientExplosionError, GradientMonitor
from treadle.engine.loops import TrainingLoop
from treadle.engine.nonfinite import NonFiniteGuard
from treadle.engine.trainer import Trainer
from treadle.losses import get_loss_strategy

GUARD_LOGGER = "treadle.engine.nonfinite"


def _all_finite(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(parameter).all()) for parameter in model.parameters())


class _PoisonedBlobs(Dataset[dict[str, torch.Tensor]]):
    """Blobs whose samples in ``poisoned`` (indices) hold NaN features."""

    def __init__(self, size: int, poisoned: range | list[int]) -> None:
        self.blobs = Blobs(size, seed=0)
        self.poisoned = set(poisoned)

    def __len__(self) -> int:
        return len(self.blobs)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = self.blobs[index]
        if index in self.poisoned:
            sample = {**sample, "features": torch.full_like(sample["features"], math.nan)}
        return sample


# -- through the Trainer -----------------------------------------------------------------------


@needs_engine
@pytest.mark.parametrize("check_interval", [10, 1])
def test_a_huge_learning_rate_with_skip_stops_with_the_reason_and_keeps_the_weights_finite(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, check_interval: int
) -> None:
    """learning_rate=1e6 with critical_action='skip': with the default interval the unchecked
    steps used to put NaN into the weights and the run "completed" with NaN losses; with
    interval 1 every step was skipped and it "completed" with a val loss of 1e24."""
    torch.manual_seed(0)
    model = TinyClassifier()
    train, val = loaders(train_size=256, val_size=64)
    config = small_config(
        tmp_path,
        epochs=4,
        learning_rate=1e6,
        gradient_critical_action="skip",
        gradient_check_interval=check_interval,
    )
    trainer = Trainer(
        model, None, config, classification_task(), device="cpu",
        plugin_manager=engine_plugin_manager(),
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger=GUARD_LOGGER):
        results = trainer.train(train, val)
    reason = results["stop_reason"]
    assert reason is not None
    assert "optimizer steps in a row were skipped" in reason
    assert results["global_step"] < 4 * 32, "the run stopped early"
    assert _all_finite(model)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [reason]
    assert any("skipped" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert all(math.isfinite(row["train_loss"]) for row in results["history"])


@needs_engine
def test_one_nan_batch_is_skipped_and_the_run_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    torch.manual_seed(0)
    model = TinyClassifier()
    # batch 3 of 8 (samples 24-31) is NaN, and it is not a monitor check step (interval 10)
    train = DataLoader(_PoisonedBlobs(64, range(24, 32)), batch_size=8, shuffle=False)
    _, val = loaders()
    trainer = Trainer(
        model, None, small_config(tmp_path, epochs=1), classification_task(), device="cpu",
        plugin_manager=engine_plugin_manager(),
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger=GUARD_LOGGER):
        results = trainer.train(train, val)
    assert results["stop_reason"] is None
    assert _all_finite(model)
    assert math.isfinite(results["history"][0]["val_loss"])
    warnings = [r.getMessage() for r in caplog.records if r.name == GUARD_LOGGER]
    assert warnings == [
        "Optimizer step 3 skipped: non-finite loss or gradients; the weights are unchanged"
    ]
    # the skipped step did not move the schedule: 7 real steps of 8
    assert trainer.state.global_step == 8


@needs_engine
def test_critical_action_stop_raises_at_the_first_non_finite_step(tmp_path: Path) -> None:
    train = DataLoader(_PoisonedBlobs(64, range(24, 32)), batch_size=8, shuffle=False)
    trainer = Trainer(
        TinyClassifier(), None,
        small_config(tmp_path, epochs=1, gradient_critical_action="stop"),
        classification_task(), device="cpu", plugin_manager=engine_plugin_manager(),
    )  # fmt: skip
    with pytest.raises(GradientExplosionError, match="step 3 has a non-finite loss or gradient"):
        trainer.train(train, None)


# -- the loop on its own -----------------------------------------------------------------------


def _loop(**options: Any) -> TrainingLoop:
    strategy = get_loss_strategy("classification", plugin_manager=engine_plugin_manager())
    defaults: dict[str, Any] = {
        "gradient_accumulator": GradientAccumulator(),
        "gradient_monitor": GradientMonitor(check_interval=1000),
        "loss_strategy": strategy,
    }
    return TrainingLoop(**{**defaults, **options})


def _state_of(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    tensors = [parameter.detach().clone() for parameter in model.parameters()]
    for state in optimizer.state.values():
        tensors += [value.detach().clone() for value in state.values()]
    return tensors


def _same(before: list[torch.Tensor], after: list[torch.Tensor]) -> bool:
    return len(before) == len(after) and all(
        torch.equal(a, b) for a, b in zip(before, after, strict=True)
    )


@pytest.mark.parametrize("clip", [1.0, None])
def test_without_a_fused_optimizer_the_step_is_skipped_at_once(clip: float | None) -> None:
    """On the CPU the flag is read at once: the NaN batch changes no weight and no optimizer
    state, with and without clipping (then the loop measures the norm itself)."""
    torch.manual_seed(0)
    model = TinyClassifier()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    loop = _loop(gradient_clip_norm=clip)
    clean = list(DataLoader(Blobs(16), batch_size=8))
    poisoned = list(DataLoader(_PoisonedBlobs(8, range(8)), batch_size=8))
    loop.run_epoch(0, model, clean, optimizer, None, "cpu")
    before = _state_of(model, optimizer)
    result = loop.run_epoch(1, model, poisoned, optimizer, None, "cpu")
    assert _same(before, _state_of(model, optimizer))
    assert result.completed
    assert loop.non_finite_guard.num_non_finite == 1


def test_a_fused_optimizer_skips_on_the_device_and_the_flag_is_read_at_the_log_step() -> None:
    """With an optimizer that takes found_inf, the step is skipped by the optimizer itself
    (parameters and state untouched) and the flag is read only at the next sync point."""
    torch.manual_seed(0)
    model = TinyClassifier()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, fused=True)
    loop = _loop(log_every_n_steps=4)
    clean = list(DataLoader(Blobs(16), batch_size=8))
    poisoned = list(DataLoader(_PoisonedBlobs(8, range(8)), batch_size=8))
    loop.run_epoch(0, model, clean, optimizer, None, "cpu")
    reads: list[int] = []
    guard = loop.non_finite_guard
    original_flush = guard.flush

    def counting_flush() -> str | None:
        reads.append(loop.state.global_step)
        return original_flush()

    guard.flush = counting_flush  # type: ignore[method-assign]
    before = _state_of(model, optimizer)
    loop.run_epoch(1, model, poisoned + clean, optimizer, None, "cpu")
    assert guard.num_non_finite == 1, "the NaN step was seen"
    # steps 2, 3 and 4 (epoch 0 took 0 and 1): read after step 4 (a log step) and at the end
    assert reads == [4, 5], "read at the log step and at the epoch's end, not per step"
    # the poisoned step left everything alone; the two clean ones moved the weights
    after_poison = _state_of(model, optimizer)
    assert not _same(before, after_poison)
    assert _all_finite(model)


def test_a_fused_optimizer_with_every_step_non_finite_stops_at_a_sync_point() -> None:
    torch.manual_seed(0)
    model = TinyClassifier()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, fused=True)
    loop = _loop(log_every_n_steps=5, max_consecutive_skips=3)
    before = _state_of(model, optimizer)
    poisoned = list(DataLoader(_PoisonedBlobs(96, range(96)), batch_size=8))
    result = loop.run_epoch(0, model, poisoned, optimizer, None, "cpu")
    assert not result.completed
    assert result.global_step == 5, "stopped at the first sync point after 3 skips"
    assert loop.control.should_stop
    assert loop.control.stop_reason is not None
    assert loop.control.stop_reason.startswith("3 optimizer steps in a row were skipped (steps 0-2")
    parameters = before[: len(list(model.parameters()))]
    assert _same(parameters, [p.detach() for p in model.parameters()])


def test_the_loop_alone_stops_after_max_consecutive_skips() -> None:
    torch.manual_seed(0)
    model = TinyClassifier()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    loop = _loop(max_consecutive_skips=3)
    poisoned = list(DataLoader(_PoisonedBlobs(64, range(64)), batch_size=8))
    result = loop.run_epoch(0, model, poisoned, optimizer, None, "cpu")
    assert (result.completed, result.global_step) == (False, 3)
    assert loop.control.stop_reason is not None
    assert loop.control.stop_reason.startswith("3 optimizer steps in a row were skipped")
    assert "Lower the learning rate" in loop.control.stop_reason


# -- the guard ---------------------------------------------------------------------------------


def test_a_taken_step_resets_the_run_of_skips() -> None:
    guard = NonFiniteGuard(max_consecutive_skips=2)
    assert guard.record(0, "non-finite loss or gradients") is None
    assert guard.record(1, None) is None
    assert guard.record(2, "non-finite loss or gradients") is None
    reason = guard.record(3, "non-finite loss or gradients")
    assert reason is not None
    assert "steps 2-3" in reason
    assert (guard.num_skipped, guard.num_non_finite) == (3, 3)


def test_the_device_flag_is_one_for_nan_or_inf_in_the_norm_or_any_loss() -> None:
    finite, nan, inf = torch.tensor(1.5), torch.tensor(math.nan), torch.tensor(math.inf)
    flag = NonFiniteGuard.device_flag
    assert flag(finite, [finite]).item() == 0.0
    assert flag(finite, [finite, finite]).item() == 0.0
    assert flag(nan, [finite]).item() == 1.0
    assert flag(inf, []).item() == 1.0
    assert flag(finite, [finite, inf]).item() == 1.0
    assert flag(finite, [nan]).dtype == torch.float32
