"""Plugin discovery, disabling and provenance: the plugin manager and its named registries.

Plugins come from the ``treadle`` entry-point group, the built-ins included. Discovery reads the
group, sorts it by name (``importlib.metadata`` yields directory order), skips disabled names,
loads each entry point on its own, and validates every hook implementation against
:mod:`treadle.hookspecs`. Then it loads the plugins ``TREADLE_PLUGINS`` names for this process
alone (as pytest's ``PYTEST_PLUGINS``). A plugin that fails is recorded with its cause:
start-up fails naming it (``strict``), while ``treadle plugins`` lists it as broken.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import logging
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import attrs
import pluggy

from treadle import hookspecs
from treadle.errors import PluginConflictError, PluginLoadError
from treadle.registry import KINDS, NamedRegistry, Provenance, fill_from_hook

if TYPE_CHECKING:
    from treadle.config import PluginsConfig

__all__ = [
    "DISABLE_ENV",
    "ENTRY_POINT_GROUP",
    "PLUGINS_ENV",
    "PluginInfo",
    "PluginManager",
    "check_requirements",
    "get_plugin_manager",
    "get_registry",
    "make_plugin_manager",
    "plugin_manager_for",
]

logger = logging.getLogger(__name__)
hook_logger = logging.getLogger("treadle.hooks")

ENTRY_POINT_GROUP = "treadle"
DISABLE_ENV = "TREADLE_DISABLE_PLUGINS"
#: comma-separated ``module`` or ``module:attr`` plugins loaded after the entry points
PLUGINS_ENV = "TREADLE_PLUGINS"
TRACE_ENV = "TREADLE_TRACE_HOOKS"

PluginStatus = Literal["loaded", "registered", "disabled", "broken"]


@attrs.frozen
class PluginInfo:
    """What ``treadle plugins`` shows about one plugin.

    :ivar name: the plugin's name (its entry-point name, or the name it was registered under).
    :ivar distribution: the installed distribution that declares it, if any.
    :ivar version: that distribution's version.
    :ivar target: the entry point's ``module:attr`` value, or the object's repr.
    :ivar status: ``loaded`` (from an entry point), ``registered`` (directly, as in tests),
        ``disabled`` or ``broken``.
    :ivar error: for a broken plugin, the cause.
    """

    name: str
    distribution: str | None
    version: str | None
    target: str
    status: PluginStatus
    error: str | None = None

    @property
    def provenance(self) -> Provenance:
        return Provenance(self.name, self.distribution, self.version)


class PluginManager(pluggy.PluginManager):
    """pluggy's plugin manager for project ``treadle``, with provenance and named registries.

    Build one with :func:`make_plugin_manager`; the process-wide one is
    :func:`get_plugin_manager`.
    """

    def __init__(self, disabled: Iterable[str] = ()) -> None:
        super().__init__("treadle")
        self.add_hookspecs(hookspecs)
        self._infos: dict[str, PluginInfo] = {}
        self._registries: dict[str, NamedRegistry] = {}
        self._registry_lock = threading.Lock()
        self.disabled: tuple[str, ...] = tuple(sorted(set(disabled)))
        for name in self.disabled:
            self.set_blocked(name)

    # -- registration --------------------------------------------------------------------

    def register(self, plugin: object, name: str | None = None) -> str | None:
        """Register ``plugin`` (a module, class or instance with hook implementations).

        Hook implementations are validated against the specs at once: an unknown ``treadle_``
        hook or an argument the spec lacks raises :class:`~treadle.errors.PluginLoadError`.
        """
        return self.register_plugin(plugin, name)

    def register_plugin(
        self,
        plugin: object,
        name: str | None = None,
        *,
        distribution: str | None = None,
        version: str | None = None,
        target: str | None = None,
    ) -> str | None:
        """Register ``plugin`` recording where it came from (for messages and listings)."""
        if self._registries:
            msg = (
                "Registries were already filled from this plugin manager; register plugins "
                "before the first lookup (or build a new manager with make_plugin_manager)."
            )
            raise PluginLoadError(msg)
        plugin_name = name or self.get_canonical_name(plugin)
        describe = f"plugin {plugin_name!r}" + (
            f" ({distribution} {version})" if distribution else ""
        )
        try:
            registered = super().register(plugin, plugin_name)
            self._check_unknown_hooks(plugin)
        except (ValueError, pluggy.PluginValidationError) as err:
            if registered_name := self.get_name(plugin):
                self.unregister(name=registered_name)
            msg = f"Cannot register {describe}: {err}"
            raise PluginLoadError(msg) from err
        if registered is not None:
            self._infos[plugin_name] = PluginInfo(
                name=plugin_name,
                distribution=distribution,
                version=version,
                target=target or _describe_object(plugin),
                status="loaded" if distribution else "registered",
            )
        return registered

    def _check_unknown_hooks(self, plugin: object) -> None:
        for caller in self.get_hookcallers(plugin) or ():
            if not caller.has_spec():
                msg = (
                    f"it implements {caller.name!r}, which is no treadle hook "
                    f"(see treadle.hookspecs for the list)"
                )
                raise pluggy.PluginValidationError(plugin, msg)

    def load_entry_points(self, *, strict: bool = True) -> None:
        """Load every plugin of the ``treadle`` entry-point group, sorted by name.

        :param strict: raise on the first broken or clashing plugin (a run must not quietly
            train without an installed plugin); otherwise record it as broken and go on.
        :raises PluginLoadError: an entry point failed to import or to validate.
        :raises PluginConflictError: two distributions declare one plugin name.
        """
        by_name: dict[str, list[importlib.metadata.EntryPoint]] = {}
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            same = by_name.setdefault(entry_point.name, [])
            # one distribution found twice on sys.path (an editable install and a copy) is one
            if all(
                (e.value, _dist_name(e)) != (entry_point.value, _dist_name(entry_point))
                for e in same
            ):
                same.append(entry_point)
        known = sorted(by_name)
        for name in self.disabled:
            if name not in by_name:
                # a setting, not the caller's code: one log line (`treadle` prints it as one
                # line; Python's last-resort handler too), not a UserWarning with a source line
                close = difflib.get_close_matches(name, known, n=1)
                logger.warning(
                    "Cannot disable unknown plugin %r (%s or plugins.disable).%s Installed "
                    "plugins: %s.",
                    name,
                    DISABLE_ENV,
                    f" Did you mean {close[0]!r}?" if close else "",
                    ", ".join(known) or "none",
                )
        # sorted: entry points come in directory order, and registration order decides
        # which clashing name is "later" and the order hooks are called in
        for name in sorted(by_name):
            claims = by_name[name]
            first = claims[0]
            dist, version = _dist_name(first), _dist_version(first)
            if name in self.disabled:
                self._infos[name] = PluginInfo(name, dist, version, first.value, "disabled")
                continue
            if len(claims) > 1:
                owners = " and ".join(f"{_dist_name(e)} {_dist_version(e)}" for e in claims)
                msg = (
                    f"Plugin name {name!r} is declared by {owners}. Uninstall one, or disable "
                    f"the name with {DISABLE_ENV}={name}."
                )
                self._record_broken(name, dist, version, first.value, msg)
                if strict:
                    raise PluginConflictError(msg)
                continue
            try:
                plugin = first.load()
                self.register_plugin(
                    plugin, name, distribution=dist, version=version, target=first.value
                )
            except Exception as err:
                cause = f"{type(err).__name__}: {err}"
                self._record_broken(name, dist, version, first.value, cause)
                if strict:
                    msg = (
                        f"Plugin {name!r} (entry point {first.value!r} in the 'treadle' group of "
                        f"{dist} {version}) failed to load: {cause}. Fix or uninstall "
                        f"{dist}, or disable the plugin with {DISABLE_ENV}={name}."
                    )
                    raise PluginLoadError(msg) from err
                logger.warning("plugin %r from %s %s is broken: %s", name, dist, version, cause)

    def load_named_plugins(self, targets: Sequence[str], *, strict: bool = True) -> None:
        """Load plugins named by ``"module"`` or ``"module:attr"`` (an entry point's value),
        each registered under its target, as ``TREADLE_PLUGINS`` asks.

        :param strict: raise when one fails to load; otherwise record it as broken.
        :raises PluginLoadError: a target failed to import or to validate.
        """
        for target in targets:
            if target in self.disabled:
                self._infos[target] = PluginInfo(target, None, None, target, "disabled")
                continue
            try:
                plugin = importlib.metadata.EntryPoint(target, target, ENTRY_POINT_GROUP).load()
                self.register_plugin(plugin, target, target=target)
            except Exception as err:
                cause = f"{type(err).__name__}: {err}"
                self._record_broken(target, None, None, target, cause)
                if strict:
                    msg = (
                        f"Plugin {target!r} named in {PLUGINS_ENV} failed to load: {cause}. "
                        f"Fix it, or remove it from {PLUGINS_ENV}."
                    )
                    raise PluginLoadError(msg) from err
                logger.warning("plugin %r from %s is broken: %s", target, PLUGINS_ENV, cause)

    def _record_broken(
        self, name: str, dist: str | None, version: str | None, target: str, cause: str
    ) -> None:
        self._infos[name] = PluginInfo(name, dist, version, target, "broken", cause)

    # -- introspection -------------------------------------------------------------------

    def plugin_infos(self) -> list[PluginInfo]:
        """Every plugin this manager knows of, loaded, disabled or broken, sorted by name."""
        return [self._infos[name] for name in sorted(self._infos)]

    def provenance(self, plugin_name: str) -> Provenance:
        """Plugin, distribution and version behind a plugin name."""
        info = self._infos.get(plugin_name)
        return info.provenance if info else Provenance(plugin_name)

    def hooks_of(self, plugin_name: str) -> list[str]:
        """Names of the hooks a registered plugin implements."""
        plugin = self.get_plugin(plugin_name)
        if plugin is None:
            return []
        return sorted(caller.name for caller in self.get_hookcallers(plugin) or ())

    # -- registries ----------------------------------------------------------------------

    def registry(self, kind: str) -> NamedRegistry:
        """The named registry of ``kind`` (``losses``, ``collators``, ...), filled on first use
        from ``treadle_register_<kind>``."""
        with self._registry_lock:
            existing = self._registries.get(kind)
            if existing is not None:
                return existing
            try:
                kind_info = KINDS[kind]
            except KeyError:
                msg = f"Unknown registry kind {kind!r}; kinds: {', '.join(KINDS)}."
                raise KeyError(msg) from None
            caller = getattr(self.hook, kind_info.hook_name)
            registry = NamedRegistry(
                kind_info,
                fill=lambda reg: fill_from_hook(reg, caller, self.provenance),
                disabled_plugins=self.disabled,
            )
            self._registries[kind] = registry
            return registry


def _dist_name(entry_point: importlib.metadata.EntryPoint) -> str | None:
    dist = entry_point.dist
    return dist.metadata["Name"] if dist is not None else None


def _dist_version(entry_point: importlib.metadata.EntryPoint) -> str | None:
    dist = entry_point.dist
    return dist.version if dist is not None else None


def _describe_object(plugin: object) -> str:
    name = getattr(plugin, "__name__", None)
    return name if isinstance(name, str) else repr(plugin)


def _names_in_env(variable: str) -> list[str]:
    return [name.strip() for name in os.environ.get(variable, "").split(",") if name.strip()]


def disabled_from_env() -> list[str]:
    """Plugin names listed in ``TREADLE_DISABLE_PLUGINS`` (comma-separated)."""
    return _names_in_env(DISABLE_ENV)


def plugins_from_env() -> list[str]:
    """Plugins listed in ``TREADLE_PLUGINS`` (comma-separated ``module`` or ``module:attr``)."""
    return _names_in_env(PLUGINS_ENV)


def make_plugin_manager(
    *,
    load_entry_points: bool = True,
    disabled: Sequence[str] | None = None,
    plugins: Sequence[tuple[str, object]] = (),
    strict: bool = True,
) -> PluginManager:
    """Build a new plugin manager.

    :param load_entry_points: discover the ``treadle`` entry-point group (the built-ins and
        every installed plugin), then the plugins ``TREADLE_PLUGINS`` names. ``False`` gives
        an isolated manager for tests: register what the test needs with
        ``manager.register(module, name=...)``.
    :param disabled: plugin names not to load; defaults to ``TREADLE_DISABLE_PLUGINS``.
    :param plugins: ``(name, plugin)`` pairs registered after discovery.
    :param strict: fail on a broken plugin (see :meth:`PluginManager.load_entry_points`).
    """
    manager = PluginManager(disabled=disabled_from_env() if disabled is None else disabled)
    if os.environ.get(TRACE_ENV, "") not in ("", "0"):
        manager.add_hookcall_monitoring(_trace_before, _trace_after)
    if load_entry_points:
        manager.load_entry_points(strict=strict)
        manager.load_named_plugins(plugins_from_env(), strict=strict)
    for name, plugin in plugins:
        manager.register(plugin, name=name)
    return manager


def _trace_before(
    hook_name: str, hook_impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, Any]
) -> None:
    hook_logger.debug(
        "%s -> %s", hook_name, ", ".join(impl.plugin_name for impl in hook_impls) or "(none)"
    )


def _trace_after(
    outcome: pluggy.Result[Any],
    hook_name: str,
    hook_impls: Sequence[pluggy.HookImpl],
    kwargs: Mapping[str, Any],
) -> None:
    if outcome.exception is not None:
        hook_logger.debug("%s raised %r", hook_name, outcome.exception)


_global_manager: PluginManager | None = None
_global_lock = threading.Lock()


def get_plugin_manager() -> PluginManager:
    """The process-wide plugin manager, built on first use (never at ``import treadle``).

    :raises PluginLoadError: an installed plugin is broken; the message names it and the fix.
    """
    global _global_manager
    if _global_manager is None:
        with _global_lock:
            if _global_manager is None:
                _global_manager = make_plugin_manager()
    return _global_manager


def check_requirements(requirements: Sequence[str]) -> None:
    """Fail unless every requirement (``"treadle-focal>=0.2"``, pytest's ``required_plugins``)
    is installed at a matching version.

    :raises PluginLoadError: listing each requirement that is missing or at the wrong version,
        with the install command.
    """
    from packaging.requirements import InvalidRequirement, Requirement

    problems = []
    for text in requirements:
        try:
            requirement = Requirement(text)
        except InvalidRequirement as err:
            problems.append(f"{text!r} is not a valid requirement ({err})")
            continue
        try:
            installed = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{requirement.name} is not installed")
            continue
        if requirement.specifier and not requirement.specifier.contains(
            installed, prereleases=True
        ):
            problems.append(f"{requirement.name} {installed} is installed, not {requirement}")
    if problems:
        wanted = " ".join(f'"{text}"' for text in requirements)
        msg = (
            f"Required plugins are not satisfied (plugins.require): {'; '.join(problems)}. "
            f"Install them with: pip install {wanted}"
        )
        raise PluginLoadError(msg)


def plugin_manager_for(plugins_config: PluginsConfig | None) -> PluginManager:
    """The plugin manager a run with this ``plugins`` config section uses.

    Without ``disable`` entries it is the process-wide manager; with them, a new manager that
    also leaves out those plugins (on top of ``TREADLE_DISABLE_PLUGINS``). ``require`` entries
    are checked first, so a run never starts without a plugin it asked for.
    """
    if plugins_config is None:
        return get_plugin_manager()
    if plugins_config.require:
        check_requirements(plugins_config.require)
    if not plugins_config.disable:
        return get_plugin_manager()
    return make_plugin_manager(disabled=[*disabled_from_env(), *plugins_config.disable])


def get_registry(kind: str, plugin_manager: PluginManager | None = None) -> NamedRegistry:
    """The named registry of ``kind`` from ``plugin_manager`` (default: the global one)."""
    return (plugin_manager or get_plugin_manager()).registry(kind)
