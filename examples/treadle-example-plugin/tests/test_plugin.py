"""The plugin module: its hooks fit their specifications and register what it says."""

from __future__ import annotations

from treadle.plugins import PluginManager
from treadle.testing import check_hookimpls

import treadle_example.plugin


def test_hooks_match_their_specs() -> None:
    assert check_hookimpls(treadle_example.plugin) == []


def test_it_registers_its_names(plugin_manager: PluginManager) -> None:
    plugin_manager.register(treadle_example.plugin, name="example")
    assert "focal" in plugin_manager.registry("losses")
    assert "tabular" in plugin_manager.registry("collators")
    assert "numpy_mlp" in plugin_manager.registry("exporters")
