"""The named registry filled from registration hooks: provenance, clashes, overrides, lookups."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FakeDist
from treadle import hookimpl
from treadle.errors import (
    PluginConflictError,
    PluginLoadError,
    RegistrationError,
    UnknownNameError,
)
from treadle.plugins import PluginManager, make_plugin_manager
from treadle.testing import isolated_plugin_manager


class MeanLoss:
    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale

    def compute_loss(self, logits: Any, labels: Any, inputs: Any = None) -> Any:
        return (logits - labels).abs().mean() * self.scale

    def validate_inputs(self, logits: Any, labels: Any) -> None:
        return None


class SumLoss(MeanLoss):
    pass


def losses_plugin(**names: Any) -> object:
    class Plugin:
        @hookimpl
        def treadle_register_losses(self, register: Any) -> None:
            for name, obj in names.items():
                register(name, obj)

    return Plugin()


def overriding_plugin(name: str, obj: Any) -> object:
    class Plugin:
        @hookimpl
        def treadle_register_losses(self, register: Any) -> None:
            register(name, obj, override=True)

    return Plugin()


def test_names_carry_the_plugin_that_registered_them(plugin_manager: PluginManager) -> None:
    plugin_manager.register_plugin(
        losses_plugin(mean=MeanLoss), "acme", distribution="acme-treadle", version="1.2.0"
    )
    entry = plugin_manager.registry("losses").entry("mean")
    assert entry.obj is MeanLoss
    assert str(entry.provenance) == "acme: acme-treadle 1.2.0"


def test_unknown_name_lists_registered_names_with_their_plugins_and_a_suggestion() -> None:
    manager = isolated_plugin_manager(("acme", losses_plugin(mean=MeanLoss, sum=SumLoss)))
    with pytest.raises(UnknownNameError) as caught:
        manager.registry("losses").get("meen")
    message = str(caught.value)
    assert "Unknown loss strategy 'meen'" in message
    assert "mean, sum (acme)" in message
    assert "Did you mean 'mean'?" in message
    assert isinstance(caught.value, KeyError)


def test_unknown_name_mentions_disabled_plugins() -> None:
    manager = PluginManager(disabled=["focal"])
    with pytest.raises(UnknownNameError, match=r"Disabled plugins, which may provide it: focal"):
        manager.registry("losses").get("focal")


def test_two_plugins_registering_one_name_is_an_error_naming_both() -> None:
    manager = isolated_plugin_manager(
        ("first", losses_plugin(mean=MeanLoss)), ("second", losses_plugin(mean=SumLoss))
    )
    with pytest.raises(PluginConflictError) as caught:
        manager.registry("losses").get("mean")
    message = str(caught.value)
    assert "'mean' is registered 2 times: first and second" in message
    assert "override=True" in message
    assert "TREADLE_DISABLE_PLUGINS" in message


@pytest.mark.parametrize("override_first", [True, False])
def test_an_override_wins_wherever_it_stands(override_first: bool) -> None:
    plain = ("plain", losses_plugin(mean=MeanLoss))
    override = ("override", overriding_plugin("mean", SumLoss))
    pairs = (override, plain) if override_first else (plain, override)
    manager = isolated_plugin_manager(*pairs)
    entry = manager.registry("losses").entry("mean")
    assert entry.obj is SumLoss
    assert entry.provenance.plugin == "override"


def test_two_overrides_of_one_name_are_a_conflict() -> None:
    manager = isolated_plugin_manager(
        ("a", overriding_plugin("mean", MeanLoss)), ("b", overriding_plugin("mean", SumLoss))
    )
    with pytest.raises(PluginConflictError, match="a and b"):
        manager.registry("losses").names()


def test_runtime_registration_is_found_and_marked_runtime(plugin_manager: PluginManager) -> None:
    registry = plugin_manager.registry("losses")
    instance = MeanLoss(scale=2.0)
    registry.register("custom", instance)
    assert registry.create("custom") is instance
    assert registry.entry("custom").provenance.plugin == "runtime"


def test_runtime_registration_of_a_taken_name_needs_override() -> None:
    manager = isolated_plugin_manager(("acme", losses_plugin(mean=MeanLoss)))
    registry = manager.registry("losses")
    with pytest.raises(PluginConflictError, match="acme and runtime"):
        registry.register("mean", SumLoss())
    assert registry.get("mean") is MeanLoss
    replacement = SumLoss()
    registry.register("mean", replacement, override=True)
    assert registry.get("mean") is replacement


def test_create_instantiates_classes_with_options_and_refuses_options_for_instances(
    plugin_manager: PluginManager,
) -> None:
    registry = plugin_manager.registry("losses")
    registry.register("cls", MeanLoss)
    registry.register("instance", MeanLoss())
    created = registry.create("cls", scale=3.0)
    assert isinstance(created, MeanLoss)
    assert created.scale == 3.0
    with pytest.raises(TypeError, match="takes no options"):
        registry.create("instance", scale=3.0)


@pytest.mark.parametrize("name", ["Focal", "focal loss", "../etc", "", "1st", "a/b", "x\x00"])
def test_bad_names_are_refused_at_registration(plugin_manager: PluginManager, name: str) -> None:
    with pytest.raises(RegistrationError, match="is not valid"):
        plugin_manager.registry("losses").register(name, MeanLoss())


def test_objects_of_the_wrong_kind_are_refused_naming_what_is_missing() -> None:
    class NotALoss:
        def compute_loss(self, logits: Any, labels: Any, inputs: Any = None) -> Any:
            return None

    manager = isolated_plugin_manager(("acme", losses_plugin(broken=NotALoss)))
    with pytest.raises(RegistrationError) as caught:
        manager.registry("losses").names()
    assert "'broken' from acme" in str(caught.value)
    assert "validate_inputs" in str(caught.value)


def test_a_wrapper_on_a_registration_hook_is_an_error_naming_the_plugin() -> None:
    class Wrapper:
        @hookimpl(wrapper=True)
        def treadle_register_losses(self, register: Any) -> Any:
            return (yield)

    manager = isolated_plugin_manager(("sneaky", Wrapper()))
    with pytest.raises(RegistrationError, match=r"sneaky.*wrapper"):
        manager.registry("losses").names()


def test_an_exception_in_a_registration_hook_keeps_its_type_and_names_the_plugin() -> None:
    class Failing:
        @hookimpl
        def treadle_register_losses(self, register: Any) -> None:
            raise ZeroDivisionError("boom")

    manager = isolated_plugin_manager(("failing", Failing()))
    with pytest.raises(ZeroDivisionError) as caught:
        manager.registry("losses").names()
    assert "in treadle_register_losses of plugin failing" in caught.value.__notes__


def test_registration_hooks_run_once_per_manager() -> None:
    calls = []

    class Counting:
        @hookimpl
        def treadle_register_losses(self, register: Any) -> None:
            calls.append(1)
            register("mean", MeanLoss)

    manager = isolated_plugin_manager(("counting", Counting()))
    for _ in range(3):
        manager.registry("losses").get("mean")
    assert calls == [1]


def test_registering_a_plugin_after_lookups_is_refused() -> None:
    manager = isolated_plugin_manager(("acme", losses_plugin(mean=MeanLoss)))
    manager.registry("losses").names()
    with pytest.raises(PluginLoadError, match="already filled"):
        manager.register(losses_plugin(sum=SumLoss), name="late")


def test_hooks_that_do_not_exist_are_refused_at_registration(
    plugin_manager: PluginManager,
) -> None:
    class Misspelled:
        @hookimpl
        def treadle_on_batch_endd(self, trainer: Any) -> None:
            pass

    with pytest.raises(PluginLoadError, match="treadle_on_batch_endd"):
        plugin_manager.register(Misspelled(), name="typo")
    assert plugin_manager.get_plugin("typo") is None


def test_arguments_the_spec_lacks_are_refused_at_registration(
    plugin_manager: PluginManager,
) -> None:
    class WrongArgs:
        @hookimpl
        def treadle_on_epoch_end(self, trainer: Any, epoch_number: int) -> None:
            pass

    with pytest.raises(PluginLoadError, match="epoch_number"):
        plugin_manager.register(WrongArgs(), name="wrong")


# -- "module:attr" references: recorded at once, imported and checked on first use ----------

REFERENCED = """
import sys
IMPORTED = True

class MeanLoss:
    def compute_loss(self, logits, labels, inputs=None):
        return (logits - labels).abs().mean()

    def validate_inputs(self, logits, labels):
        pass

class NotALoss:
    def compute_loss(self, logits, labels, inputs=None):
        return None
"""


@pytest.fixture
def referenced_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module on ``sys.path`` that no test has imported yet; returns its name."""
    name = f"acme_lazy_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(REFERENCED, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return name


def test_a_reference_is_listed_without_importing_and_imported_on_first_get(
    referenced_module: str,
) -> None:
    manager = isolated_plugin_manager(("acme", losses_plugin(mean=f"{referenced_module}:MeanLoss")))
    registry = manager.registry("losses")
    assert registry.names() == ["mean"]
    assert "mean" in registry
    (listed,) = registry.entries()
    assert listed.reference == f"{referenced_module}:MeanLoss"
    assert listed.provenance.plugin == "acme"
    assert not listed.is_loaded
    assert referenced_module not in sys.modules, "listing names imports nothing"
    loss_class = registry.get("mean")
    assert loss_class is sys.modules[referenced_module].MeanLoss
    assert listed.is_loaded
    assert isinstance(registry.create("mean"), loss_class)


def test_a_reference_that_cannot_be_imported_names_plugin_reference_and_cause(
    fake_plugin_dist: FakeDist,
) -> None:
    fake_plugin_dist(
        "acme-treadle",
        "1.2.0",
        {"acme": "acme_treadle"},
        {
            "acme_treadle": """
            from treadle import hookimpl

            @hookimpl
            def treadle_register_losses(register):
                register("focal", "acme_treadle_missing.focal:FocalLoss")
            """
        },
    )
    registry = make_plugin_manager().registry("losses")
    assert "focal" in registry, "the name is registered before anything is imported"
    with pytest.raises(PluginLoadError) as caught:
        registry.get("focal")
    message = str(caught.value)
    assert "'focal' from acme: acme-treadle 1.2.0" in message
    assert "'acme_treadle_missing.focal:FocalLoss'" in message
    assert "ModuleNotFoundError" in message
    assert "TREADLE_DISABLE_PLUGINS=acme" in message
    assert isinstance(caught.value.__cause__, ModuleNotFoundError)


def test_a_referenced_object_of_the_wrong_kind_is_refused_on_first_use(
    referenced_module: str,
) -> None:
    manager = isolated_plugin_manager(
        ("acme", losses_plugin(broken=f"{referenced_module}:NotALoss"))
    )
    registry = manager.registry("losses")
    assert registry.names() == ["broken"]
    with pytest.raises(RegistrationError) as caught:
        registry.create("broken")
    message = str(caught.value)
    assert "'broken' from acme" in message
    assert f"imported from '{referenced_module}:NotALoss'" in message
    assert "validate_inputs" in message


def test_a_missing_attribute_of_a_reference_is_a_load_error(referenced_module: str) -> None:
    manager = isolated_plugin_manager(("acme", losses_plugin(gone=f"{referenced_module}:Gone")))
    with pytest.raises(PluginLoadError, match="AttributeError"):
        manager.registry("losses").entry("gone")


@pytest.mark.parametrize("text", ["acme.focal", "acme focal:Loss", ":Loss", "acme:", "a:b:c"])
def test_a_string_that_is_no_reference_is_refused_at_registration(
    plugin_manager: PluginManager, text: str
) -> None:
    with pytest.raises(RegistrationError, match=r"no 'package\.module:attr' reference"):
        plugin_manager.registry("losses").register("focal", text)


def test_references_clash_and_override_like_objects(referenced_module: str) -> None:
    reference = f"{referenced_module}:MeanLoss"
    clashing = isolated_plugin_manager(
        ("first", losses_plugin(mean=reference)), ("second", losses_plugin(mean=SumLoss))
    )
    with pytest.raises(PluginConflictError, match="first and second"):
        clashing.registry("losses").names()
    overriding = isolated_plugin_manager(
        ("plain", losses_plugin(mean=MeanLoss)), ("lazy", overriding_plugin("mean", reference))
    )
    assert referenced_module not in sys.modules, "a clash is resolved before any import"
    assert overriding.registry("losses").entry("mean").provenance.plugin == "lazy"


def test_runtime_registration_takes_a_reference(
    plugin_manager: PluginManager, referenced_module: str
) -> None:
    registry = plugin_manager.registry("losses")
    registry.register("mean", f"{referenced_module}:MeanLoss")
    assert referenced_module not in sys.modules
    assert registry.entry("mean").provenance.plugin == "runtime"
    assert registry.get("mean").__name__ == "MeanLoss"
