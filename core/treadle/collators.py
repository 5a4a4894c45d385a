"""The collator face of the core: the collator registry and the task's collator.

Collators themselves are plugins (the four built-ins live in ``treadle_collators``)::

    from treadle.collators import CollatorRegistry, get_collator

    collate = CollatorRegistry().get("language_modeling", task_spec=task)
    batch = collate([{"input_ids": [5, 6, 7]}, {"input_ids": [8]}])

    def my_collator(samples):
        return {"input_ids": ..., "labels": ...}

    CollatorRegistry().register("custom", my_collator)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from treadle.plugins import PluginManager
    from treadle.protocols import Collator
    from treadle.registry import Entry, NamedRegistry
    from treadle.task import TaskSpec

__all__ = ["CollatorRegistry", "get_collator"]


class CollatorRegistry:
    """The collators registered by plugins and at runtime, by name.

    A thin face over ``get_registry("collators", plugin_manager)``: a runtime ``register`` is
    seen by every lookup through the same plugin manager (the process-wide one by default).

    :param plugin_manager: whose registry to use; default the process-wide manager.
    """

    def __init__(self, plugin_manager: PluginManager | None = None) -> None:
        self._plugin_manager = plugin_manager

    @property
    def _registry(self) -> NamedRegistry:
        from treadle.plugins import get_registry

        return get_registry("collators", self._plugin_manager)

    def get(self, name: str, task_spec: TaskSpec | None = None, **options: Any) -> Collator:
        """A ready collator: a registered class is built as ``cls(task_spec=task_spec,
        **options)``; a registered function (``my_collator(samples)``) or instance is returned
        as it is.

        :raises UnknownNameError: nothing is registered under ``name``; the message lists what is.
        :raises TypeError: options were given for a function or instance.
        """
        obj = self._registry.get(name)
        if isinstance(obj, type):
            collator: Collator = obj(task_spec=task_spec, **options)
            return collator
        if options:
            msg = (
                f"Collator {name!r} was registered as a ready function or instance, so it takes "
                f"no options (given: {', '.join(sorted(options))}). Register a class taking "
                f"task_spec= and options to configure it per use."
            )
            raise TypeError(msg)
        ready: Collator = obj
        return ready

    def register(self, name: str, obj: Any, override: bool = False) -> None:
        """Register a collator class, function or instance under ``name`` at runtime.

        :raises RegistrationError: the name is not valid, or ``obj`` is not callable.
        :raises PluginConflictError: the name is taken and ``override`` is false.
        """
        self._registry.register(name, obj, override=override)

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return self._registry.names()

    def entry(self, name: str) -> Entry:
        """The registration of ``name``: the object and the plugin that registered it."""
        return self._registry.entry(name)

    def __contains__(self, name: object) -> bool:
        return name in self._registry

    def __repr__(self) -> str:
        return f"<CollatorRegistry: {', '.join(self.names()) or 'empty'}>"


def get_collator(task_spec: TaskSpec, plugin_manager: PluginManager | None = None) -> Collator:
    """The collator of ``task_spec`` (its ``collator_name``), built for it.

    :raises UnknownNameError: nothing is registered under that name.
    """
    return CollatorRegistry(plugin_manager).get(task_spec.collator_name, task_spec=task_spec)
