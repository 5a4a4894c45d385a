"""The API reference's registry classes (``LossStrategyRegistry``, ``CollatorRegistry``) as
one thin face over a kind's named registry."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

if TYPE_CHECKING:
    from treadle.plugins import PluginManager
    from treadle.registry import Entry, NamedRegistry

__all__ = ["RegistryFace"]

T = TypeVar("T")


class RegistryFace(Generic[T]):
    """The objects of one kind registered by plugins and at runtime, by name.

    A face over ``get_registry(kind, plugin_manager)``, holding nothing itself: a runtime
    :meth:`register` is seen by every lookup through the same plugin manager (the process-wide
    one by default), whichever face or function made it.

    :param plugin_manager: whose registry to use; default the process-wide manager.
    """

    #: the registry key: ``losses``, ``collators``, ...
    kind: ClassVar[str]

    def __init__(self, plugin_manager: PluginManager | None = None) -> None:
        self._plugin_manager = plugin_manager

    @property
    def _registry(self) -> NamedRegistry:
        from treadle.plugins import get_registry

        return get_registry(self.kind, self._plugin_manager)

    def get(self, name: str, **options: Any) -> T:
        """A ready object: a registered class is built with ``options``; a registered
        instance or function is returned as it is (options are then an error).

        :raises UnknownNameError: nothing is registered under ``name``; the message lists what
            is, and the closest name.
        :raises TypeError: options were given for a registered instance or function.
        """
        ready: T = self._registry.create(name, **options)
        return ready

    def register(self, name: str, obj: Any, override: bool = False) -> None:
        """Register a class, instance or function under ``name`` at runtime.

        :raises RegistrationError: the name is not valid, or ``obj`` does not satisfy the
            kind's protocol (the message names what it lacks).
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
        return f"<{type(self).__name__}: {', '.join(self.names()) or 'empty'}>"
