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

from treadle.registry_face import RegistryFace

if TYPE_CHECKING:
    from treadle.plugins import PluginManager
    from treadle.protocols import Collator
    from treadle.task import TaskSpec

__all__ = ["CollatorRegistry", "get_collator"]


class CollatorRegistry(RegistryFace["Collator"]):
    """The collators registered by plugins and at runtime, by name.

    A thin face over ``get_registry("collators", plugin_manager)``: a runtime ``register`` is
    seen by every lookup through the same plugin manager (the process-wide one by default).
    ``names()``, ``entry(name)`` and ``name in registry`` work as on every registry face.

    :param plugin_manager: whose registry to use; default the process-wide manager.
    """

    kind = "collators"

    def get(self, name: str, task_spec: TaskSpec | None = None, **options: Any) -> Collator:
        """A ready collator: a registered class is built as ``cls(task_spec=task_spec,
        **options)``; a registered function (``my_collator(samples)``) or instance is returned
        as it is.

        :raises UnknownNameError: nothing is registered under ``name``; the message lists what is.
        :raises TypeError: options were given for a function or instance.
        """
        if isinstance(self._registry.get(name), type):
            options["task_spec"] = task_spec
        return super().get(name, **options)


def get_collator(task_spec: TaskSpec, plugin_manager: PluginManager | None = None) -> Collator:
    """The collator of ``task_spec`` (its ``collator_name``), built for it.

    :raises UnknownNameError: nothing is registered under that name.
    """
    return CollatorRegistry(plugin_manager).get(task_spec.collator_name, task_spec=task_spec)
