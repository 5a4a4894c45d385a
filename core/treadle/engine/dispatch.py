"""The typed lifecycle dispatcher: each lifecycle hook bound once per run, ``None`` when unheard.

pluggy cannot check an implementation against its spec, and a call to a hook nobody implements
still costs ~1.4 µs; so the trainer never calls ``plugin_manager.hook.<name>`` itself. It builds
one :class:`LifecycleDispatch` at the start of a run, and on the per-batch path does::

    if dispatch.on_batch_end is not None:
        dispatch.on_batch_end(trainer=view, batch_index=index, loss=loss, control=control)

The run's own plugins (its loggers, the spec's duck-typed ``hooks=`` object, what
``treadle_configure_run`` bound: see :mod:`treadle.engine.binding`) are bound here for this one
run, beside the entry-point plugins. An exception escaping an implementation keeps its type and
gains a note naming the hook and the implementation (plugin and distribution, or run plugin).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from treadle.engine.binding import (
    RunPlugin,
    describe_implementation,
    hooks_object_plugin,
    run_manager,
)

if TYPE_CHECKING:
    import pluggy

    from treadle.plugins import PluginManager

__all__ = [
    "LIFECYCLE_HOOKS",
    "HookCall",
    "HookTiming",
    "LifecycleDispatch",
    "describe_implementation",
]

#: Lifecycle hooks in the order a run first reaches them: the order :mod:`treadle.hookspecs`
#: numbers (a test holds the two, and a recorded run, together).
LIFECYCLE_HOOKS: tuple[str, ...] = (
    "treadle_on_load_checkpoint",
    "treadle_on_training_start",
    "treadle_on_epoch_start",
    "treadle_on_batch_start",
    "treadle_on_before_backward",
    "treadle_on_after_backward",
    "treadle_on_batch_end",
    "treadle_on_before_optimizer_step",
    "treadle_on_validation_start",
    "treadle_on_validation_batch_end",
    "treadle_on_validation_end",
    "treadle_on_epoch_end",
    "treadle_on_save_checkpoint",
    "treadle_on_training_end",
    "treadle_on_exception",
)

#: A bound lifecycle hook: called with the hook's arguments as keywords.
HookCall = Callable[..., Any]


@attrs.frozen
class HookTiming:
    """Time one hook implementation took over a run (``treadle train --profile-hooks``).

    :ivar hook: the hook's name.
    :ivar implementation: ``plugin 'name' (distribution version)``, or a run plugin's
        description (``hooks object Class``, ``logger 'experiment' (ExperimentLogger)``).
    :ivar calls: how often it was called.
    :ivar total_seconds: wall time spent inside it.
    """

    hook: str
    implementation: str
    calls: int
    total_seconds: float

    @property
    def mean_microseconds(self) -> float:
        return 1e6 * self.total_seconds / self.calls if self.calls else 0.0


def _code_of(function: object) -> object:
    unwrapped = inspect.unwrap(function)  # type: ignore[arg-type]
    return getattr(getattr(unwrapped, "__func__", unwrapped), "__code__", None)


def _raising_implementation(
    error: BaseException, impls: list[pluggy.HookImpl]
) -> pluggy.HookImpl | None:
    """The implementation whose frame is deepest in the traceback: the one that raised (a
    wrapper around it is on the stack too, further out)."""
    codes = {_code_of(impl.function): impl for impl in impls}
    found = None
    traceback = error.__traceback__
    while traceback is not None:
        found = codes.get(traceback.tb_frame.f_code, found)
        traceback = traceback.tb_next
    return found


def _has_note(error: BaseException, hook_name: str) -> bool:
    return any(note.startswith(f"in {hook_name} of ") for note in getattr(error, "__notes__", ()))


class LifecycleDispatch:
    """Every lifecycle hook of one run, bound once: each attribute is a callable taking the
    hook's arguments as keywords, or ``None`` when nothing listens (so the caller skips the
    call and builds no arguments).

    ``on_before_backward`` returns the replacement loss or ``None``; the others return nothing.

    :param plugin_manager: whose plugins every run hears.
    :param hooks: the spec's duck-typed hooks object, or ``None``; called after every other
        implementation (``trylast``).
    :param run_plugins: objects whose ``@hookimpl`` lifecycle methods hear this run only
        (:class:`~treadle.engine.binding.RunPlugin`: the run's loggers, what plugins bound).
    :param profile: time every implementation (see :meth:`timings`); off, nothing is timed.
    :raises PluginLoadError: a run plugin's implementation does not fit its hook.
    """

    on_load_checkpoint: HookCall | None
    on_training_start: HookCall | None
    on_epoch_start: HookCall | None
    on_batch_start: HookCall | None
    on_before_backward: HookCall | None
    on_after_backward: HookCall | None
    on_batch_end: HookCall | None
    on_before_optimizer_step: HookCall | None
    on_validation_start: HookCall | None
    on_validation_batch_end: HookCall | None
    on_validation_end: HookCall | None
    on_epoch_end: HookCall | None
    on_save_checkpoint: HookCall | None
    on_training_end: HookCall | None
    on_exception: HookCall | None

    def __init__(
        self,
        plugin_manager: PluginManager,
        hooks: object | None = None,
        *,
        run_plugins: Sequence[RunPlugin] = (),
        profile: bool = False,
    ) -> None:
        bound = list(run_plugins)
        hooks_plugin = None if hooks is None else hooks_object_plugin(hooks)
        if hooks_plugin is not None:
            bound.append(hooks_plugin)
        self._plugin_manager = plugin_manager
        self._descriptions = {run_plugin.name: run_plugin.description for run_plugin in bound}
        #: the process-wide plugins, plus the run's own in a manager of the run's when it has any
        self._run_manager = run_manager(plugin_manager, bound) if bound else plugin_manager
        self._profile = profile
        self._timings: dict[tuple[str, str], list[float]] = {}
        for hook_name in LIFECYCLE_HOOKS:
            setattr(self, hook_name.removeprefix("treadle_"), self._bind(hook_name))

    # -- introspection -----------------------------------------------------------------------

    def listeners(self, hook_name: str) -> list[str]:
        """Who a hook calls, in call order: plugin and run plugin descriptions."""
        caller: pluggy.HookCaller = getattr(self._run_manager.hook, hook_name)
        return [self._describe(impl.plugin_name) for impl in reversed(caller.get_hookimpls())]

    def timings(self) -> list[HookTiming]:
        """Time per implementation, slowest first (empty unless built with ``profile=True``)."""
        rows = [
            HookTiming(hook, implementation, int(calls), total)
            for (hook, implementation), (calls, total) in self._timings.items()
        ]
        return sorted(rows, key=lambda row: row.total_seconds, reverse=True)

    # -- binding -----------------------------------------------------------------------------

    def _describe(self, plugin_name: str) -> str:
        description = self._descriptions.get(plugin_name)
        if description is not None:
            return description
        return describe_implementation(self._plugin_manager, plugin_name)

    def _bind(self, hook_name: str) -> HookCall | None:
        caller: pluggy.HookCaller = getattr(self._run_manager.hook, hook_name)
        impls = caller.get_hookimpls()
        return self._plugin_call(hook_name, caller, impls) if impls else None

    def _plugin_call(
        self, hook_name: str, caller: pluggy.HookCaller, impls: list[pluggy.HookImpl]
    ) -> HookCall:
        returns_loss = hook_name == "treadle_on_before_backward"
        describe = self._describe

        def annotate(error: BaseException) -> None:
            if _has_note(error, hook_name):
                return
            impl = _raising_implementation(error, impls)
            where = describe(impl.plugin_name) if impl else "a plugin"
            error.add_note(f"in {hook_name} of {where}")

        if self._profile:
            return self._profiled_plugin_call(hook_name, caller, impls, annotate)

        if returns_loss:

            def call_for_loss(**kwargs: Any) -> Any:
                try:
                    return caller(**kwargs)  # firstresult: the first answer, or None
                except Exception as error:
                    annotate(error)
                    raise

            return call_for_loss

        def call(**kwargs: Any) -> None:
            try:
                caller(**kwargs)
            except Exception as error:
                annotate(error)
                raise

        return call

    def _profiled_plugin_call(
        self,
        hook_name: str,
        caller: pluggy.HookCaller,
        impls: list[pluggy.HookImpl],
        annotate: Callable[[BaseException], None],
    ) -> HookCall:
        returns_loss = hook_name == "treadle_on_before_backward"
        if any(impl.wrapper or impl.hookwrapper for impl in impls):
            # a wrapper's time cannot be told apart from what it wraps: time the whole call
            label = " + ".join(self._describe(impl.plugin_name) for impl in reversed(impls))
            slot = self._slot(hook_name, f"{label} (with wrappers)")

            def timed_whole(**kwargs: Any) -> Any:
                start = time.perf_counter()
                try:
                    results = caller(**kwargs)
                except Exception as error:
                    annotate(error)
                    raise
                finally:
                    slot[0] += 1
                    slot[1] += time.perf_counter() - start
                return results if returns_loss else None

            return timed_whole

        # pluggy calls the last registered first (tryfirst/trylast already sorted in)
        ordered = [
            (impl, self._slot(hook_name, self._describe(impl.plugin_name)))
            for impl in reversed(impls)
        ]

        def timed_each(**kwargs: Any) -> Any:
            for impl, slot in ordered:
                start = time.perf_counter()
                try:
                    value = impl.function(*[kwargs[name] for name in impl.argnames])
                except Exception as error:
                    annotate(error)
                    raise
                finally:
                    slot[0] += 1
                    slot[1] += time.perf_counter() - start
                if returns_loss and value is not None:
                    return value  # firstresult: the rest are not called
            return None

        return timed_each

    def _slot(self, hook_name: str, implementation: str) -> list[float]:
        return self._timings.setdefault((hook_name, implementation), [0, 0.0])
