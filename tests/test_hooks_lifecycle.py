"""Lifecycle hooks: exact call order, the spec's hooks= object, steering through the control
object, plugin state in checkpoints, exception notes, and the cost-free unheard hook."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

from tests.trainer_fixtures import (
    TinyClassifier,
    classification_task,
    engine_plugin_manager,
    loaders,
    needs_engine,
    small_config,
)
from treadle import hookimpl, hookspecs
from treadle.engine.dispatch import LIFECYCLE_HOOKS, LifecycleDispatch
from treadle.engine.trainer import Trainer
from treadle.testing import isolated_plugin_manager


class Recorder:
    """Records every lifecycle call as a short tuple."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    @hookimpl
    def treadle_on_training_start(self, trainer: Any, control: Any) -> None:
        self.calls.append(("training_start",))

    @hookimpl
    def treadle_on_epoch_start(self, epoch: int) -> None:
        self.calls.append(("epoch_start", epoch))

    @hookimpl
    def treadle_on_batch_start(self, batch_index: int) -> None:
        self.calls.append(("batch_start", batch_index))

    @hookimpl
    def treadle_on_before_backward(self, batch_index: int) -> None:
        self.calls.append(("before_backward", batch_index))

    @hookimpl
    def treadle_on_after_backward(self, batch_index: int) -> None:
        self.calls.append(("after_backward", batch_index))

    @hookimpl
    def treadle_on_before_optimizer_step(self, trainer: Any) -> None:
        self.calls.append(("before_optimizer_step", trainer.global_step))

    @hookimpl
    def treadle_on_batch_end(self, batch_index: int, loss: torch.Tensor) -> None:
        assert loss.ndim == 0
        assert not loss.requires_grad
        self.calls.append(("batch_end", batch_index))

    @hookimpl
    def treadle_on_validation_start(self, epoch: int) -> None:
        self.calls.append(("validation_start", epoch))

    @hookimpl
    def treadle_on_validation_end(self, epoch: int, metrics: Any) -> None:
        self.calls.append(("validation_end", epoch, "val_loss" in metrics))

    @hookimpl
    def treadle_on_epoch_end(self, epoch: int, metrics: Any) -> None:
        self.calls.append(("epoch_end", epoch))

    @hookimpl
    def treadle_on_save_checkpoint(self, plugin_state: dict[str, Any]) -> None:
        plugin_state["recorder"] = {"calls": len(self.calls)}
        self.calls.append(("save_checkpoint",))

    @hookimpl
    def treadle_on_training_end(self, results: Any) -> None:
        self.calls.append(("training_end", results["global_step"]))


def expected_calls(epochs: int, batches: int, accumulation: int) -> list[tuple[Any, ...]]:
    calls: list[tuple[Any, ...]] = [("training_start",)]
    step = 0
    for epoch in range(epochs):
        calls.append(("epoch_start", epoch))
        for index in range(batches):
            calls += [
                ("batch_start", index),
                ("before_backward", index),
                ("after_backward", index),
                ("batch_end", index),
            ]
            if (index + 1) % accumulation == 0 or index + 1 == batches:
                calls.append(("before_optimizer_step", step))
                step += 1
        calls += [
            ("validation_start", epoch),
            ("validation_end", epoch, True),
            ("epoch_end", epoch),
            ("save_checkpoint",),
        ]
    calls.append(("training_end", step))
    return calls


@pytest.mark.parametrize("accumulation", [1, 3])
@needs_engine
def test_lifecycle_hooks_fire_in_the_documented_order(tmp_path: Path, accumulation: int) -> None:
    recorder = Recorder()
    manager = engine_plugin_manager(("recorder", recorder))
    train, val = loaders(train_size=40, batch_size=8)  # 5 batches: a short last window
    config = small_config(tmp_path, gradient_accumulation_steps=accumulation, keep_best_k=0)
    Trainer(
        TinyClassifier(), None, config, classification_task(), device="cpu", plugin_manager=manager
    ).train(train, val)
    assert recorder.calls == expected_calls(2, 5, accumulation)


def documented_lifecycle_order() -> list[str]:
    """The hooks hookspecs' module docstring numbers, in its order."""
    numbered = re.findall(r"^(\d+)\. ``(treadle_on_\w+)``", hookspecs.__doc__ or "", re.M)
    assert [int(number) for number, _ in numbered] == list(range(1, len(numbered) + 1))
    return [name for _, name in numbered]


class EveryHook:
    """Records the name of every lifecycle hook called, asks once for a validation in the
    middle of the first epoch it trains, and raises in ``raise_in``."""

    def __init__(self, raise_in: str | None = None) -> None:
        self.names: list[str] = []
        self.raise_in = raise_in
        for hook_name in LIFECYCLE_HOOKS:
            setattr(self, hook_name, self._recorder(hook_name))

    def _recorder(self, hook_name: str) -> Callable[..., None]:
        names = self.names
        fails = hook_name == self.raise_in

        def record(control: Any) -> None:
            names.append(hook_name)
            if hook_name == "treadle_on_batch_end" and names.count(hook_name) == 2:
                control.should_validate = True
            if fails:
                raise RuntimeError("failing on purpose")

        def record_without_control() -> None:
            names.append(hook_name)

        takes_control = "control" in inspect.signature(getattr(hookspecs, hook_name)).parameters
        return hookimpl(record if takes_control else record_without_control)


@needs_engine
def test_the_numbered_order_in_hookspecs_is_the_order_a_run_calls_them(tmp_path: Path) -> None:
    documented = documented_lifecycle_order()
    assert documented == list(LIFECYCLE_HOOKS)
    assert sorted(documented) == sorted(
        name for name in vars(hookspecs) if name.startswith("treadle_on_")
    ), "every lifecycle hook is numbered once"

    def run(recorder: object, **overrides: Any) -> None:
        config = small_config(tmp_path, keep_best_k=0, **overrides)
        Trainer(
            TinyClassifier(),
            None,
            config,
            classification_task(),
            device="cpu",
            plugin_manager=engine_plugin_manager(("every-hook", recorder)),
        ).train(*loaders())

    run(EveryHook(), epochs=1)
    resumed = EveryHook()
    run(resumed, epochs=2, resume="auto")  # resumed, with one mid-epoch validation
    first_calls = list(dict.fromkeys(resumed.names))
    assert first_calls == [name for name in documented if name != "treadle_on_exception"]
    assert resumed.names.index("treadle_on_validation_start") < resumed.names.index(
        "treadle_on_epoch_end"
    ), "the requested validation ran inside the epoch"

    failing = EveryHook(raise_in="treadle_on_epoch_end")
    with pytest.raises(RuntimeError, match="on purpose"):
        run(failing, epochs=3, resume="auto")
    assert failing.names[-1] == documented[-1] == "treadle_on_exception"


@needs_engine
def test_before_backward_is_firstresult_so_a_tryfirst_replacement_wins(tmp_path: Path) -> None:
    calls: list[str] = []

    class ZeroFirst:
        @hookimpl(tryfirst=True)
        def treadle_on_before_backward(self, loss: torch.Tensor) -> torch.Tensor:
            calls.append("zero")
            return loss * 0.0

    class Amplify:
        @hookimpl
        def treadle_on_before_backward(self, loss: torch.Tensor) -> torch.Tensor:
            calls.append("amplify")
            return loss * 1e3

    model = TinyClassifier()
    before = [p.detach().clone() for p in model.parameters()]
    manager = engine_plugin_manager(("zero", ZeroFirst()), ("amplify", Amplify()))
    config = small_config(tmp_path, epochs=1, weight_decay=0.0)
    trainer = Trainer(
        model, None, config, classification_task(), device="cpu", plugin_manager=manager
    )
    trainer.train(*loaders())
    # zero gradients: AdamW without weight decay leaves every weight where it was
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert set(calls) == {"zero"}, "after the first answer no implementation is called"


class SpecHooks:
    """The API reference's duck-typed hooks object."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def on_training_start(self) -> None:
        self.calls.append(("training_start",))

    def on_epoch_start(self, epoch: int) -> None:
        self.calls.append(("epoch_start", epoch))

    def on_batch_end(self, batch_idx: int, loss: float) -> None:
        assert isinstance(loss, float)
        self.calls.append(("batch_end", batch_idx))

    def on_validation_end(self, metrics: dict[str, float]) -> None:
        self.calls.append(("validation_end", sorted(metrics)))

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        self.calls.append(("epoch_end", epoch, "train_loss" in metrics and "val_loss" in metrics))

    def on_training_end(self) -> None:
        self.calls.append(("training_end",))


@needs_engine
def test_spec_hooks_object_is_called_for_its_trainer_only(tmp_path: Path) -> None:
    hooks = SpecHooks()
    manager = engine_plugin_manager()
    train, val = loaders(train_size=16, batch_size=8)
    config = small_config(tmp_path, epochs=1)
    Trainer(
        TinyClassifier(),
        None,
        config,
        classification_task(),
        hooks=hooks,
        device="cpu",
        plugin_manager=manager,
    ).train(train, val)
    assert hooks.calls == [
        ("training_start",),
        ("epoch_start", 0),
        ("batch_end", 0),
        ("batch_end", 1),
        ("validation_end", ["val_accuracy", "val_loss"]),
        ("epoch_end", 0, True),
        ("training_end",),
    ]
    # nothing was registered anywhere: a second trainer on the same manager calls nobody
    assert LifecycleDispatch(manager).on_batch_end is None


def test_unheard_hooks_are_bound_to_none_so_the_hot_path_skips_them() -> None:
    dispatch = LifecycleDispatch(isolated_plugin_manager())
    for hook in LIFECYCLE_HOOKS:
        assert getattr(dispatch, hook.removeprefix("treadle_")) is None


class StopAfterSteps:
    def __init__(self, steps: int, save: bool) -> None:
        self.steps = steps
        self.save = save

    @hookimpl
    def treadle_on_batch_end(self, trainer: Any, control: Any) -> None:
        if trainer.global_step >= self.steps:
            control.request_stop("enough")
            control.should_save = self.save


@needs_engine
def test_a_hook_can_stop_the_run_and_ask_for_a_checkpoint(tmp_path: Path) -> None:
    manager = engine_plugin_manager(("stopper", StopAfterSteps(3, save=True)))
    train, val = loaders(train_size=64, batch_size=8)
    config = small_config(tmp_path, epochs=3)
    results = Trainer(
        TinyClassifier(), None, config, classification_task(), device="cpu", plugin_manager=manager
    ).train(train, val)
    assert results["stop_reason"] == "enough"
    assert results["global_step"] == 4  # asked after step 3's batch; stops at the next boundary
    assert results["history"] == []  # the first epoch never finished
    assert list(tmp_path.glob("*.pt")), "the requested checkpoint was written"


@needs_engine
def test_a_stop_without_save_writes_no_checkpoint(tmp_path: Path) -> None:
    manager = engine_plugin_manager(("stopper", StopAfterSteps(1, save=False)))
    train, val = loaders()
    config = small_config(tmp_path)
    results = Trainer(
        TinyClassifier(), None, config, classification_task(), device="cpu", plugin_manager=manager
    ).train(train, val)
    assert results["stop_reason"] == "enough"
    assert not list(tmp_path.glob("*.pt"))


class SkipEveryStep:
    @hookimpl
    def treadle_on_before_optimizer_step(self, control: Any) -> None:
        control.should_skip_step = True


@needs_engine
def test_skipping_every_step_leaves_the_weights_untouched(tmp_path: Path) -> None:
    model = TinyClassifier()
    before = [p.detach().clone() for p in model.parameters()]
    manager = engine_plugin_manager(("skipper", SkipEveryStep()))
    train, val = loaders()
    Trainer(
        model,
        None,
        small_config(tmp_path, epochs=1),
        classification_task(),
        device="cpu",
        plugin_manager=manager,
    ).train(train, val)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


@needs_engine
def test_before_backward_may_replace_the_loss(tmp_path: Path) -> None:
    class ZeroLoss:
        @hookimpl
        def treadle_on_before_backward(self, loss: torch.Tensor) -> torch.Tensor:
            return loss * 0.0

    model = TinyClassifier()
    before = [p.detach().clone() for p in model.parameters()]
    config = small_config(tmp_path, epochs=1, weight_decay=0.0)
    Trainer(
        model,
        None,
        config,
        classification_task(),
        device="cpu",
        plugin_manager=engine_plugin_manager(("zero", ZeroLoss())),
    ).train(*loaders())
    # zero gradients: AdamW without weight decay leaves every weight where it was
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


@needs_engine
def test_plugin_state_is_saved_in_checkpoints_and_handed_back_on_resume(tmp_path: Path) -> None:
    class Stateful:
        def __init__(self) -> None:
            self.loaded: dict[str, Any] | None = None

        @hookimpl
        def treadle_on_save_checkpoint(self, trainer: Any, plugin_state: dict[str, Any]) -> None:
            plugin_state["stateful"] = {"step": trainer.global_step}

        @hookimpl
        def treadle_on_load_checkpoint(self, plugin_state: Any) -> None:
            self.loaded = dict(plugin_state)

    first = Stateful()
    config = small_config(tmp_path, epochs=1)
    Trainer(
        TinyClassifier(),
        None,
        config,
        classification_task(),
        device="cpu",
        plugin_manager=engine_plugin_manager(("stateful", first)),
    ).train(*loaders())
    second = Stateful()
    resumed = small_config(tmp_path, epochs=2, resume="auto")
    Trainer(
        TinyClassifier(),
        None,
        resumed,
        classification_task(),
        device="cpu",
        plugin_manager=engine_plugin_manager(("stateful", second)),
    ).train(*loaders())
    assert second.loaded == {"stateful": {"step": 8}}


def failing_plugin_source() -> str:
    return """
from treadle import hookimpl, hookspecs

@hookimpl
def treadle_on_batch_end(batch_index):
    if batch_index == 1:
        raise ValueError("acme is broken")
"""


@needs_engine
def test_an_exception_from_a_hook_keeps_its_type_and_names_plugin_and_distribution(
    tmp_path: Path, fake_plugin_dist: Callable[..., Path]
) -> None:
    from treadle.plugins import make_plugin_manager

    fake_plugin_dist(
        "acme-treadle", "1.2.0", {"acme": "acme_hooks"}, {"acme_hooks": failing_plugin_source()}
    )
    manager = make_plugin_manager(disabled=["jobs", "onnx", "sqlite", "torchscript", "tracking"])
    seen: list[BaseException] = []

    class Watcher:
        @hookimpl
        def treadle_on_exception(self, exception: BaseException) -> None:
            seen.append(exception)

    manager.register(Watcher(), name="watcher")
    config = small_config(tmp_path, epochs=1)
    trainer = Trainer(
        TinyClassifier(), None, config, classification_task(), device="cpu", plugin_manager=manager
    )
    with pytest.raises(ValueError, match="acme is broken") as caught:
        trainer.train(*loaders())
    assert "in treadle_on_batch_end of plugin 'acme' (acme-treadle 1.2.0)" in (
        caught.value.__notes__
    )
    assert seen == [caught.value], "treadle_on_exception saw the failure before it propagated"


@needs_engine
def test_an_exception_from_the_hooks_object_names_its_method(tmp_path: Path) -> None:
    class Broken:
        def on_epoch_start(self, epoch: int) -> None:
            raise KeyError("nope")

    trainer = Trainer(
        TinyClassifier(),
        None,
        small_config(tmp_path),
        classification_task(),
        hooks=Broken(),
        device="cpu",
        plugin_manager=engine_plugin_manager(),
    )
    with pytest.raises(KeyError) as caught:
        trainer.train(*loaders())
    assert caught.value.__notes__ == [
        "in treadle_on_epoch_start of hooks object "
        "test_an_exception_from_the_hooks_object_names_its_method.<locals>.Broken.on_epoch_start"
    ]


@needs_engine
def test_profile_hooks_times_every_implementation(tmp_path: Path) -> None:
    recorder = Recorder()
    config = small_config(tmp_path, epochs=1)
    results = Trainer(
        TinyClassifier(),
        None,
        config,
        classification_task(),
        device="cpu",
        plugin_manager=engine_plugin_manager(("recorder", recorder)),
        profile_hooks=True,
    ).train(*loaders())
    by_hook = {timing.hook: timing for timing in results["hook_profile"]}
    assert by_hook["treadle_on_batch_end"].calls == 8
    assert by_hook["treadle_on_batch_end"].implementation == "plugin 'recorder'"
    assert by_hook["treadle_on_training_start"].calls == 1
    assert recorder.calls[0] == ("training_start",), "profiled hooks still run"


# -- objects bound to one run ---------------------------------------------------------------


class HookedLogger:
    """A logger that also follows its run's lifecycle, as a TensorBoard or MLflow logger
    needing resume state would: built per run, bound to that run's hooks only."""

    built: ClassVar[list[HookedLogger]] = []

    def __init__(self, training_config: Any, run_dir: Path | None) -> None:
        self.events: list[tuple[str, Any]] = []
        self.closed = False
        HookedLogger.built.append(self)

    def log_metrics(self, metrics: Any, step: int) -> None:
        self.events.append(("metrics", step))

    def close(self) -> None:
        self.closed = True

    @hookimpl
    def treadle_on_training_start(self, trainer: Any) -> None:
        self.events.append(("training_start", trainer.run_dir))

    @hookimpl
    def treadle_on_save_checkpoint(self, plugin_state: dict[str, Any]) -> None:
        plugin_state["hooked"] = {"events": len(self.events)}

    @hookimpl
    def treadle_on_training_end(self, results: Any) -> None:
        self.events.append(("training_end", results["global_step"]))


@needs_engine
def test_a_loggers_hook_methods_hear_its_own_run_only(tmp_path: Path) -> None:
    HookedLogger.built.clear()
    manager = engine_plugin_manager()
    manager.registry("loggers").register("hooked", HookedLogger)
    for name in ("a", "b"):
        config = small_config(tmp_path / name, epochs=1, loggers=("hooked",))
        Trainer(
            TinyClassifier(),
            None,
            config,
            classification_task(),
            device="cpu",
            plugin_manager=manager,
        ).train(*loaders())
    first, second = HookedLogger.built
    for sink, name in ((first, "a"), (second, "b")):
        assert [event for event in sink.events if event[0] != "metrics"] == [
            ("training_start", tmp_path / name),
            ("training_end", 8),
        ], "each logger heard its own run, once"
        assert sink.closed
    assert LifecycleDispatch(manager).on_training_start is None, "the manager itself hears none"


@needs_engine
def test_a_plugin_binds_a_stateful_object_for_the_runs_its_config_asks_for(
    tmp_path: Path,
) -> None:
    class EveryStepCounter:
        def __init__(self) -> None:
            self.steps = 0

        @hookimpl
        def treadle_on_before_optimizer_step(self) -> None:
            self.steps += 1

    counters: list[EveryStepCounter] = []

    class AcmePlugin:
        @hookimpl
        def treadle_configure_run(self, training_config: Any, bind: Any) -> None:
            if training_config.plugins.options.get("acme", {}).get("count"):
                counter = EveryStepCounter()
                counters.append(counter)
                bind(counter)

    from treadle.config import PluginsConfig

    manager = engine_plugin_manager(("acme", AcmePlugin()))
    options = {"acme": {"count": True}}
    for name, plugins in (("on", PluginsConfig(options=options)), ("off", PluginsConfig())):
        trainer = Trainer(
            TinyClassifier(),
            None,
            small_config(tmp_path / name, epochs=1, plugins=plugins, progress_bar=False),
            classification_task(),
            device="cpu",
            plugin_manager=manager,
        )
        trainer.train(*loaders())
        assert trainer.dispatch is not None
        bound = trainer.dispatch.on_before_optimizer_step
        assert (bound is not None) == (name == "on"), "off, the object costs nothing"
    (counter,) = counters
    assert counter.steps == 8
    assert trainer.dispatch.on_batch_end is None, "the loggers listen to no hook"


def test_an_object_bound_to_a_run_takes_only_lifecycle_hooks() -> None:
    from treadle.engine.binding import RunPlugin
    from treadle.errors import PluginLoadError

    class Registers:
        @hookimpl
        def treadle_register_losses(self, register: Any) -> None:
            """Registries are filled once per manager, never per run."""

    with pytest.raises(PluginLoadError, match=r"logger 'odd' \(Registers\) implements "):
        LifecycleDispatch(
            isolated_plugin_manager(),
            run_plugins=[RunPlugin("logger:odd", Registers(), "logger 'odd' (Registers)")],
        )


@needs_engine
def test_an_exception_from_a_bound_logger_names_it(tmp_path: Path) -> None:
    class BrokenLogger(HookedLogger):
        @hookimpl
        def treadle_on_training_start(self, trainer: Any) -> None:
            raise OSError("disk gone")

    manager = engine_plugin_manager()
    manager.registry("loggers").register("broken", BrokenLogger)
    trainer = Trainer(
        TinyClassifier(),
        None,
        small_config(tmp_path, loggers=("broken",)),
        classification_task(),
        device="cpu",
        plugin_manager=manager,
    )
    with pytest.raises(OSError, match="disk gone") as caught:
        trainer.train(*loaders())
    assert caught.value.__notes__ == [
        "in treadle_on_training_start of logger 'broken' "
        "(test_an_exception_from_a_bound_logger_names_it.<locals>.BrokenLogger)"
    ]
