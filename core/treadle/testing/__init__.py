"""Test kit for treadle and for plugin authors: an opt-in pytest plugin.

Enable it in a ``conftest.py``::

    pytest_plugins = ["treadle.testing"]

It provides the ``plugin_manager`` fixture (an isolated manager: nothing discovered, nothing
global) and :func:`check_hookimpls`, which a plugin's own test suite calls on its plugin module
to catch misspelled hooks, unknown arguments and forgotten ``@hookimpl`` markers before a user
does. Contract suites per kind (losses, collators, exporters, stores) live in submodules.

It is deliberately not a ``pytest11`` entry point: that would import torch in every pytest run
on any machine where treadle is installed.
"""

from __future__ import annotations

import inspect

import pytest

from treadle import hookspecs
from treadle.plugins import PluginManager, make_plugin_manager

__all__ = ["check_hookimpls", "isolated_plugin_manager", "plugin_manager"]

_SPEC_NAMES = {name for name in vars(hookspecs) if name.startswith("treadle_")}


def isolated_plugin_manager(*plugins: tuple[str, object]) -> PluginManager:
    """A plugin manager with only the given ``(name, plugin)`` pairs: no entry points, no
    ``TREADLE_DISABLE_PLUGINS``, nothing shared with other tests."""
    return make_plugin_manager(load_entry_points=False, disabled=(), plugins=plugins)


@pytest.fixture
def plugin_manager() -> PluginManager:
    """An isolated, empty plugin manager: register exactly what the test needs with
    ``plugin_manager.register(module_or_object, name="...")``."""
    return isolated_plugin_manager()


def check_hookimpls(plugin: object) -> list[str]:
    """Problems with ``plugin``'s hook implementations, one sentence each (empty when fine).

    Finds: a ``treadle_*`` function not marked with ``@hookimpl`` (pluggy ignores it silently),
    a marked implementation of a hook that does not exist (with the closest name), and an
    argument the hook's specification does not provide.
    """
    import difflib

    problems = []
    marker_attr = "treadle_impl"
    for name, function in inspect.getmembers(plugin, callable):
        if not name.startswith("treadle_"):
            continue
        marked = hasattr(function, marker_attr)
        if name not in _SPEC_NAMES:
            if marked:
                close = difflib.get_close_matches(name, sorted(_SPEC_NAMES), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append(f"{name} is marked @hookimpl but is no treadle hook{hint}")
            continue
        if not marked:
            problems.append(f"{name} is not marked with @hookimpl, so pluggy never calls it")
            continue
        spec_args = set(inspect.signature(getattr(hookspecs, name)).parameters)
        impl_args = [
            parameter.name
            for parameter in inspect.signature(function).parameters.values()
            if parameter.name != "self"
        ]
        unknown = [arg for arg in impl_args if arg not in spec_args]
        if unknown:
            problems.append(
                f"{name} takes {', '.join(unknown)}, which the hook does not provide "
                f"(it provides {', '.join(sorted(spec_args))})"
            )
        defaults = [
            parameter.name
            for parameter in inspect.signature(function).parameters.values()
            if parameter.default is not inspect.Parameter.empty
        ]
        if defaults:
            problems.append(
                f"{name} gives defaults to {', '.join(defaults)}; hook implementations take "
                f"none (pluggy versions disagree on what they then receive)"
            )
    return problems
