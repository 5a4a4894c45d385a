"""Run-scoped plugins: objects bound to the lifecycle hooks of one run only.

An entry-point plugin hears every run of every trainer in the process. An object that belongs
to one run (its loggers, the spec's ``hooks=`` object, a stateful object a plugin binds from
``treadle_configure_run``) is bound to that run's hooks and no other, so it never has to find
its run through a module global::

    class TensorBoardLogger:
        def log_metrics(self, metrics, step): ...
        def close(self): ...

        @hookimpl
        def treadle_on_save_checkpoint(self, plugin_state):
            plugin_state["tensorboard"] = {"last_step": self.last_step}

A run's plugins are registered, after the process-wide ones, in a plugin manager of the run's
own: pluggy's rules (``tryfirst``, ``trylast``, wrappers, ``firstresult``) hold across both
alike, and the lifecycle dispatcher binds each hook of that manager once, as it does for a run
without any.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from treadle import hookimpl
from treadle.errors import PluginLoadError

if TYPE_CHECKING:
    import torch

    from treadle.config import TrainingConfig
    from treadle.plugins import PluginManager

__all__ = [
    "RunConfiguration",
    "RunPlugin",
    "configure_run",
    "describe_implementation",
    "hooks_object_plugin",
    "run_manager",
]


@attrs.frozen
class RunPlugin:
    """An object bound to one run's lifecycle hooks.

    :ivar name: its name in the run's plugin manager, unique within the run
        (``logger:0:experiment``).
    :ivar plugin: the object: its ``@hookimpl``-marked ``treadle_on_*`` methods are bound.
    :ivar description: how error notes and hook profiles name it
        (``logger 'experiment' (ExperimentLogger)``).
    """

    name: str
    plugin: object
    description: str


def describe_implementation(plugin_manager: PluginManager, plugin_name: str) -> str:
    """``plugin 'acme' (acme-treadle 1.2.0)``, for notes and reports."""
    provenance = plugin_manager.provenance(plugin_name)
    if provenance.distribution is None:
        return f"plugin {plugin_name!r}"
    return f"plugin {plugin_name!r} ({provenance.distribution} {provenance.version})"


def run_manager(plugin_manager: PluginManager, run_plugins: Sequence[RunPlugin]) -> PluginManager:
    """A plugin manager for one run: ``plugin_manager``'s plugins, in their order, then the
    run's own.

    :raises PluginLoadError: a run plugin's hook implementation does not fit its spec, or it
        implements a hook that is not a lifecycle hook; the message names it.
    """
    from treadle.plugins import make_plugin_manager

    manager = make_plugin_manager(load_entry_points=False, disabled=())
    for name, plugin in plugin_manager.list_name_plugin():
        if plugin is not None:  # None: a blocked (disabled) name
            manager.register(plugin, name=name)
    for run_plugin in run_plugins:
        try:
            manager.register(run_plugin.plugin, name=run_plugin.name)
        except PluginLoadError as err:
            cause = err.__cause__ or err
            msg = f"Cannot bind {run_plugin.description} to the run: {cause}"
            raise PluginLoadError(msg) from err
        for hook_name in manager.hooks_of(run_plugin.name):
            if not hook_name.startswith("treadle_on_"):
                msg = (
                    f"{run_plugin.description} implements {hook_name}; an object bound to one "
                    f"run takes only lifecycle hooks (treadle_on_*). Implement {hook_name} in "
                    f"a plugin module registered through the 'treadle' entry-point group."
                )
                raise PluginLoadError(msg)
    return manager


# -- treadle_configure_run ----------------------------------------------------------------


@attrs.define
class RunConfiguration:
    """What the plugins' ``treadle_configure_run`` implementations asked of a run.

    :ivar logger_names: registered loggers to add to the run, in the order asked, each once.
    :ivar bound: objects to bind to the run's lifecycle hooks.
    """

    logger_names: list[str] = attrs.field(factory=list)
    bound: list[RunPlugin] = attrs.field(factory=list)


def configure_run(
    plugin_manager: PluginManager, training_config: TrainingConfig
) -> RunConfiguration:
    """Call every ``treadle_configure_run`` implementation, in registration order, with an
    ``add_logger`` and a ``bind`` that remember which plugin asked.

    :raises PluginLoadError: an implementation is a wrapper (the message names the plugin).
    """
    configured = RunConfiguration()

    def add_logger(name: str) -> None:
        if name not in configured.logger_names:
            configured.logger_names.append(name)

    caller = plugin_manager.hook.treadle_configure_run
    for impl in caller.get_hookimpls():
        owner = describe_implementation(plugin_manager, impl.plugin_name)
        if impl.wrapper or impl.hookwrapper:
            msg = f"{owner} implements treadle_configure_run as a wrapper; it must be plain."
            raise PluginLoadError(msg)
        available: dict[str, object] = {
            "training_config": training_config,
            "add_logger": add_logger,
            "bind": _binder(configured.bound, impl.plugin_name, owner),
        }
        try:
            impl.function(*[available[name] for name in impl.argnames])
        except Exception as err:
            err.add_note(f"in treadle_configure_run of {owner}")
            raise
    return configured


def _binder(bound: list[RunPlugin], plugin_name: str, owner: str) -> Callable[[object], None]:
    def bind(obj: object) -> None:
        kind = type(obj).__qualname__
        bound.append(
            RunPlugin(
                name=f"{plugin_name}:{kind}:{len(bound)}",
                plugin=obj,
                description=f"{kind} bound by {owner}",
            )
        )

    return bind


# -- the spec's hooks= object -------------------------------------------------------------


def hooks_object_plugin(hooks: object) -> RunPlugin | None:
    """The spec's duck-typed ``hooks=`` object (``on_training_start()``,
    ``on_batch_end(batch_idx, loss)``, ...) as a run plugin: ``trylast`` implementations that
    call the methods it has, so it is called after the plugins' implementations. ``None`` when
    it has none of them. An exception from a method gains a note naming it."""
    description = f"hooks object {type(hooks).__qualname__}"
    implementations: dict[str, Callable[..., None]] = {}
    for hook_name, adapt in _ADAPTERS.items():
        method = getattr(hooks, hook_name.removeprefix("treadle_"), None)
        if callable(method):
            note = f"in {hook_name} of {description}.{method.__name__}"
            implementations[hook_name] = hookimpl(trylast=True)(adapt(method, note))
    if not implementations:
        return None
    return RunPlugin("hooks", types.SimpleNamespace(**implementations), description)


Adapter = Callable[[Callable[..., Any], str], Callable[..., None]]


def _training_start(method: Callable[..., Any], note: str) -> Callable[..., None]:
    noted = _Noted(note)

    def treadle_on_training_start() -> None:
        with noted:
            method()

    return treadle_on_training_start


def _epoch_start(method: Callable[..., Any], note: str) -> Callable[..., None]:
    noted = _Noted(note)

    def treadle_on_epoch_start(epoch: int) -> None:
        with noted:
            method(epoch)

    return treadle_on_epoch_start


def _batch_end(method: Callable[..., Any], note: str) -> Callable[..., None]:
    noted = _Noted(note)

    def treadle_on_batch_end(batch_index: int, loss: torch.Tensor) -> None:
        with noted:
            method(batch_index, float(loss.item()))  # the spec hands it a float

    return treadle_on_batch_end


def _validation_end(method: Callable[..., Any], note: str) -> Callable[..., None]:
    noted = _Noted(note)

    def treadle_on_validation_end(metrics: Mapping[str, float]) -> None:
        with noted:
            method(dict(metrics))

    return treadle_on_validation_end


def _epoch_end(method: Callable[..., Any], note: str) -> Callable[..., None]:
    noted = _Noted(note)

    def treadle_on_epoch_end(epoch: int, metrics: Mapping[str, float]) -> None:
        with noted:
            method(epoch, dict(metrics))

    return treadle_on_epoch_end


def _training_end(method: Callable[..., Any], note: str) -> Callable[..., None]:
    noted = _Noted(note)

    def treadle_on_training_end() -> None:
        with noted:
            method()

    return treadle_on_training_end


#: lifecycle hook -> the adapter calling the hooks object's method of the same event, with the
#: arguments in the order the API reference fixes
_ADAPTERS: dict[str, Adapter] = {
    "treadle_on_training_start": _training_start,
    "treadle_on_epoch_start": _epoch_start,
    "treadle_on_batch_end": _batch_end,
    "treadle_on_validation_end": _validation_end,
    "treadle_on_epoch_end": _epoch_end,
    "treadle_on_training_end": _training_end,
}


class _Noted:
    """Adds ``note`` to an exception passing through, so the error names the method; made once
    per adapter and reused (no allocation per call)."""

    __slots__ = ("note",)

    def __init__(self, note: str) -> None:
        self.note = note

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, error: BaseException | None, traceback: object) -> None:
        if isinstance(error, Exception):
            error.add_note(self.note)
