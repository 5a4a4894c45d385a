"""The one named registry that every registration hook fills, with the provenance of each name.

A plugin registers an object, or a ``"package.module:attr"`` reference to one: a reference is
recorded at once (name, provenance, clash checks) and imported, then checked against its kind's
protocol, on the first lookup that needs the object. So discovery, ``treadle --help`` and
``treadle plugins`` import no implementation module, and none of torch.
"""

from __future__ import annotations

import difflib
import importlib
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from treadle import protocols
from treadle.errors import (
    PluginConflictError,
    PluginLoadError,
    RegistrationError,
    UnknownNameError,
)

if TYPE_CHECKING:
    import pluggy

__all__ = ["KINDS", "Entry", "Kind", "NamedRegistry", "Provenance"]

logger = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_-]*$")
#: ``package.module:attr`` (``attr`` may be dotted: ``module:Class.factory``), as entry points
REFERENCE_PATTERN = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


@attrs.frozen
class Provenance:
    """Where a registered name came from."""

    plugin: str
    distribution: str | None = None
    version: str | None = None

    def __str__(self) -> str:
        if self.distribution is None:
            return self.plugin
        return f"{self.plugin}: {self.distribution} {self.version}"


RUNTIME = Provenance(plugin="runtime")


@attrs.frozen
class Kind:
    """A kind of thing plugins register: its registry key, hook, noun and protocol.

    :ivar key: registry key and hook suffix (``losses`` for ``treadle_register_losses``).
    :ivar noun: how error messages call one of them (``loss strategy``).
    :ivar protocol: the runtime-checkable protocol a registered object must satisfy.
    """

    key: str
    noun: str
    protocol: type

    @property
    def hook_name(self) -> str:
        return f"treadle_register_{self.key}"


KINDS: dict[str, Kind] = {
    kind.key: kind
    for kind in (
        Kind("losses", "loss strategy", protocols.LossStrategy),
        Kind("collators", "collator", protocols.Collator),
        Kind("models", "model", protocols.ModelFactory),
        Kind("metrics", "metric", protocols.StreamingMetric),
        Kind("loggers", "logger", protocols.MetricLogger),
        Kind("exporters", "export format", protocols.Exporter),
        Kind("storage", "storage scheme", protocols.StorageBackend),
        Kind("job_types", "job type", protocols.JobType),
        Kind("commands", "command", protocols.Command),
        Kind("datasets", "data set", protocols.NamedDataset),
    )
}


class Entry:
    """One registered name: the object, who registered it, and the reference it came from.

    An entry registered as a ``"module:attr"`` reference imports and checks its object on the
    first read of :attr:`obj`; ``name``, ``provenance`` and ``reference`` never import anything.

    :ivar name: the registered name.
    :ivar provenance: the plugin, distribution and version that registered it.
    :ivar override: whether the registration asked to replace another plugin's name.
    :ivar reference: the ``"module:attr"`` registered, or ``None`` for an object.
    """

    __slots__ = ("_load", "_obj", "name", "override", "provenance", "reference")

    def __init__(self, name: str, obj: Any, provenance: Provenance, override: bool = False) -> None:
        self.name = name
        self.provenance = provenance
        self.override = override
        self.reference: str | None = None
        self._obj: Any = obj
        self._load: Callable[[], Any] | None = None

    @classmethod
    def lazy(
        cls,
        name: str,
        reference: str,
        provenance: Provenance,
        override: bool,
        load: Callable[[], Any],
    ) -> Entry:
        """An entry whose object ``load()`` imports and checks on first use."""
        entry = cls(name, None, provenance, override)
        entry.reference = reference
        entry._load = load
        return entry

    @property
    def is_loaded(self) -> bool:
        """Whether :attr:`obj` is at hand without an import."""
        return self._load is None

    @property
    def obj(self) -> Any:
        """The registered object; a reference is imported and checked on the first read
        (see :meth:`load`)."""
        return self.load()

    def load(self) -> Any:
        """The registered object, importing and checking a reference the first time.

        :raises PluginLoadError: the reference's module or attribute cannot be imported.
        :raises RegistrationError: the imported object does not fit the kind's protocol.
        """
        load = self._load
        if load is not None:
            # no lock: imports are serialized by the import system and a second resolution
            # yields the same object; a failure is not cached, so a fix is seen on retry
            self._obj = load()
            self._load = None
        return self._obj

    def __repr__(self) -> str:
        shown = self.reference if self._load is not None else self._obj
        return f"Entry({self.name!r}, {shown!r}, {self.provenance})"


class NamedRegistry:
    """Names to objects of one kind, filled from a registration hook on first lookup.

    :param kind: what this registry holds.
    :param fill: called once, before the first lookup, with ``self``; the plugin manager
        passes a function that walks the kind's hook implementations. ``None`` for a registry
        filled only at runtime.
    :param disabled_plugins: plugin names switched off, quoted when a lookup fails.
    """

    def __init__(
        self,
        kind: Kind,
        fill: Callable[[NamedRegistry], None] | None = None,
        disabled_plugins: Sequence[str] = (),
    ) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._fill = fill
        self._disabled_plugins = tuple(disabled_plugins)

    # -- filling -------------------------------------------------------------------------

    def _ensure_filled(self) -> None:
        if self._fill is not None:
            fill, self._fill = self._fill, None
            fill(self)

    def check(self, name: object, obj: object, provenance: Provenance) -> None:
        """Raise :class:`RegistrationError` unless ``name`` and ``obj`` fit this kind.

        A ``"module:attr"`` string passes when it is well formed; its object is checked when
        it is imported (:meth:`entry_for`).
        """
        self.check_name(name, provenance)
        if isinstance(obj, str):
            if not REFERENCE_PATTERN.match(obj):
                msg = (
                    f"{self.kind.noun.capitalize()} {name!r} from {provenance} was registered "
                    f"as the string {obj!r}, which is no 'package.module:attr' reference; "
                    f"register the object or a reference such as 'acme_treadle.focal:FocalLoss'."
                )
                raise RegistrationError(msg)
            return
        self.check_object(name, obj, provenance)

    def check_name(self, name: object, provenance: Provenance) -> None:
        """Raise :class:`RegistrationError` unless ``name`` is a valid registered name."""
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            msg = (
                f"{self.kind.noun.capitalize()} name {name!r} from {provenance} is not valid: "
                f"use lowercase letters, digits, '_' and '-', starting with a letter."
            )
            raise RegistrationError(msg)

    def check_object(
        self, name: object, obj: object, provenance: Provenance, reference: str | None = None
    ) -> None:
        """Raise :class:`RegistrationError` unless ``obj`` fits this kind's protocol."""
        if not isinstance(obj, self.kind.protocol):
            missing = _missing_members(obj, self.kind.protocol)
            source = f"imported from {reference!r}, " if reference else ""
            msg = (
                f"{self.kind.noun.capitalize()} {name!r} from {provenance} ({source}{obj!r}) "
                f"lacks {', '.join(missing) or 'members'} required by "
                f"{self.kind.protocol.__module__}.{self.kind.protocol.__qualname__}."
            )
            raise RegistrationError(msg)

    def entry_for(self, name: str, obj: Any, provenance: Provenance, override: bool) -> Entry:
        """An entry for a checked registration: a lazy one for a ``"module:attr"`` reference."""
        if not isinstance(obj, str):
            return Entry(name, obj, provenance, override)
        return Entry.lazy(
            name, obj, provenance, override, lambda: self._import(name, obj, provenance)
        )

    def _import(self, name: str, reference: str, provenance: Provenance) -> Any:
        module_name, _, attribute = reference.partition(":")
        try:
            found: Any = importlib.import_module(module_name)
            for part in attribute.split("."):
                found = getattr(found, part)
        except Exception as err:  # any import-time failure of a plugin's module means the same
            fix = (
                f"Fix or uninstall {provenance.distribution}, or disable the plugin with "
                f"TREADLE_DISABLE_PLUGINS={provenance.plugin}."
                if provenance.distribution
                else "Fix the reference or the module it names."
            )
            msg = (
                f"{self.kind.noun.capitalize()} {name!r} from {provenance} cannot be loaded "
                f"from {reference!r}: {type(err).__name__}: {err}. {fix}"
            )
            raise PluginLoadError(msg) from err
        self.check_object(name, found, provenance, reference)
        return found

    def add_entries(self, entries: Sequence[Entry]) -> None:
        """Add plugin registrations collected in one walk, resolving clashes.

        A name registered by several plugins is an error naming all of them, unless exactly
        one of them passed ``override=True``; that one wins wherever it stands in the walk.
        """
        by_name: dict[str, list[Entry]] = {}
        for entry in entries:
            by_name.setdefault(entry.name, []).append(entry)
        for name, group in by_name.items():
            if name in self._entries:
                group = [self._entries[name], *group]
            if len(group) == 1:
                self._entries[name] = group[0]
                continue
            overriding = [entry for entry in group if entry.override]
            if len(overriding) != 1:
                raise self._conflict(name, group)
            winner = overriding[0]
            logger.debug(
                "%s %r from %s overrides %s",
                self.kind.noun,
                name,
                winner.provenance,
                ", ".join(str(e.provenance) for e in group if e is not winner),
            )
            self._entries[name] = winner

    def _conflict(self, name: str, group: Sequence[Entry]) -> PluginConflictError:
        owners = " and ".join(str(entry.provenance) for entry in group)
        msg = (
            f"{self.kind.noun.capitalize()} {name!r} is registered {len(group)} times: "
            f"{owners}. Disable one with TREADLE_DISABLE_PLUGINS=<name>, or pass "
            f"register(..., override=True) in the one that should win."
        )
        return PluginConflictError(msg)

    def register(self, name: str, obj: Any, *, override: bool = False) -> None:
        """Register ``obj`` under ``name`` at runtime (provenance ``runtime``); ``obj`` may be
        a ``"module:attr"`` reference, imported on first use.

        :raises RegistrationError: the name or object does not fit this kind.
        :raises PluginConflictError: the name is taken and ``override`` is false.
        """
        self._ensure_filled()
        self.check(name, obj, RUNTIME)
        self.add_entries([self.entry_for(name, obj, RUNTIME, override)])

    # -- lookup --------------------------------------------------------------------------

    def entry(self, name: str) -> Entry:
        """The entry under ``name``, its object loaded (a reference is imported and checked).

        :raises UnknownNameError: nothing is registered under it; the message lists what is.
        :raises PluginLoadError: its reference cannot be imported; the message names the
            plugin, the reference and the cause.
        :raises RegistrationError: the imported object does not fit the kind.
        """
        self._ensure_filled()
        try:
            found = self._entries[name]
        except KeyError:
            raise UnknownNameError(self._unknown_message(name)) from None
        found.load()  # a reference's import errors surface here, at the lookup
        return found

    def get(self, name: str) -> Any:
        """The object registered under ``name``, as registered (a class stays a class)."""
        return self.entry(name).obj

    def create(self, name: str, **options: Any) -> Any:
        """An instance for ``name``: a registered class is called with ``options``; a
        registered instance or function is returned as it is (options are then an error)."""
        obj = self.get(name)
        if isinstance(obj, type):
            return obj(**options)
        if options:
            msg = (
                f"{self.kind.noun.capitalize()} {name!r} was registered as a ready instance, so it "
                f"takes no options (given: {', '.join(sorted(options))}). Register its class "
                f"to configure it per use."
            )
            raise TypeError(msg)
        return obj

    def names(self) -> list[str]:
        """Registered names, sorted."""
        self._ensure_filled()
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        """Registered entries, sorted by name; references stay unimported until an entry's
        ``obj`` is read."""
        self._ensure_filled()
        return [self._entries[name] for name in sorted(self._entries)]

    def __contains__(self, name: object) -> bool:
        self._ensure_filled()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._ensure_filled()
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<NamedRegistry {self.kind.key}: {', '.join(self.names()) or 'empty'}>"

    def _unknown_message(self, name: str) -> str:
        by_owner: dict[str, list[str]] = {}
        for entry in self._entries.values():
            by_owner.setdefault(str(entry.provenance), []).append(entry.name)
        listing = "; ".join(
            f"{', '.join(sorted(names))} ({owner})" for owner, names in sorted(by_owner.items())
        )
        msg = f"Unknown {self.kind.noun} {name!r}. Registered: {listing or 'none'}."
        close = difflib.get_close_matches(name, list(self._entries), n=1)
        if close:
            msg += f" Did you mean {close[0]!r}?"
        if self._disabled_plugins:
            msg += (
                f" Disabled plugins, which may provide it: {', '.join(self._disabled_plugins)}"
                f" (see TREADLE_DISABLE_PLUGINS and plugins.disable)."
            )
        return msg


def _missing_members(obj: object, protocol: type) -> list[str]:
    members = set(getattr(protocol, "__annotations__", {}))
    members.update(
        name for name in vars(protocol) if not name.startswith("_") or name == "__call__"
    )
    members -= {"_is_protocol", "_is_runtime_protocol"}
    return sorted(member for member in members if not hasattr(obj, member))


def fill_from_hook(
    registry: NamedRegistry,
    caller: pluggy.HookCaller,
    provenance_of: Callable[[str], Provenance],
) -> None:
    """Call each implementation of a registration hook, in registration order, with a
    ``register`` bound to its plugin, then add everything collected to ``registry``.

    Implementations receive only the arguments they name; ``register`` takes an object or a
    ``"module:attr"`` reference (imported on first use). A wrapper is an error naming the
    plugin; an exception from an implementation keeps its type and gains a note naming it.
    """
    collected: list[Entry] = []
    for impl in caller.get_hookimpls():
        provenance = provenance_of(impl.plugin_name)
        if impl.wrapper or impl.hookwrapper:
            msg = (
                f"Plugin {provenance} implements {caller.name} as a wrapper; registration "
                f"hooks must be plain implementations."
            )
            raise RegistrationError(msg)

        def register(
            name: str, obj: Any, override: bool = False, *, _provenance: Provenance = provenance
        ) -> None:
            registry.check(name, obj, _provenance)
            collected.append(registry.entry_for(name, obj, _provenance, override))

        available = {"register": register}
        try:
            impl.function(**{arg: available[arg] for arg in impl.argnames})
        except Exception as err:
            err.add_note(f"in {caller.name} of plugin {provenance}")
            raise
    registry.add_entries(collected)
