"""Every hook treadle calls, and its contract: this module is the plugin API.

A plugin is any module or object with functions named after these hooks and marked with
``treadle.hookimpl``. It is found through the ``treadle`` entry-point group, exactly like the
built-in plugins::

    # acme_treadle/plugin.py
    from treadle import hookimpl
    from acme_treadle.focal import FocalLoss

    @hookimpl
    def treadle_register_losses(register):
        register("focal", FocalLoss)

    @hookimpl
    def treadle_on_epoch_end(trainer, epoch, metrics, control):
        if metrics.get("val_loss", 0.0) < 0.1:
            control.should_stop = True

    # acme_treadle's pyproject.toml
    # [project.entry-points.treadle]
    # acme = "acme_treadle.plugin"

Rules that hold for every hook:

- An implementation names only the arguments it needs; the core always passes all of them,
  so a hook may gain arguments in a minor release, never lose or rename one.
- Implementations take no default values (pluggy versions disagree on what they receive).
- Registration hooks (``treadle_register_<kinds>``) are called once per plugin manager, on the
  first lookup of that kind, in entry-point name order; they are never wrappers.
- Lifecycle hooks (``treadle_on_<event>``) receive a read-only ``trainer`` view and, where the
  event allows steering, a :class:`~treadle.control.TrainerControl`. An exception escaping one
  keeps its type, gains a note naming the plugin, and ends the run after
  :func:`treadle_on_exception`. Each is bound once per run: one that nothing implements costs
  nothing per batch. Every lifecycle hook may be implemented as a wrapper
  (``@hookimpl(wrapper=True)``); ``tryfirst`` and ``trylast`` order implementations as pluggy
  does (the last registered plain implementation is called first).
- An object that belongs to one run implements lifecycle hooks as ``@hookimpl`` methods and
  hears that run only: a logger the run built, the spec's ``hooks=`` object, an object a
  plugin binds in :func:`treadle_configure_run`. They are registered after the entry-point
  plugins, so pluggy calls them first unless they are marked ``trylast`` (the ``hooks=``
  object is). No plugin needs a module global to find its run.

A run calls the lifecycle hooks in this order (an epoch of B batches, N batches accumulated
per optimizer step):

1. ``treadle_on_load_checkpoint``: once, when the run resumes from a checkpoint.
2. ``treadle_on_training_start``: once, before the first epoch.
3. ``treadle_on_epoch_start``: at the start of every epoch.
4. ``treadle_on_batch_start``: before every batch's forward pass.
5. ``treadle_on_before_backward``: with every batch's loss.
6. ``treadle_on_after_backward``: after every batch's ``backward()``.
7. ``treadle_on_batch_end``: after every batch.
8. ``treadle_on_before_optimizer_step``: after the ``batch_end`` of every N-th batch and of
   the epoch's last batch, before the optimizer steps.
9. ``treadle_on_validation_start``: after the epoch's last optimizer step; also right after
   an optimizer step inside the epoch when a hook set ``control.should_validate``.
10. ``treadle_on_validation_batch_end``: after every validation batch.
11. ``treadle_on_validation_end``: after every validation pass, mid-epoch ones included.
12. ``treadle_on_epoch_end``: after the epoch and its validation.
13. ``treadle_on_save_checkpoint``: whenever a checkpoint is written: after ``epoch_end``
    when one is due, and after an optimizer step for step or time intervals and requests.
14. ``treadle_on_training_end``: once, after the last epoch or a stop request.
15. ``treadle_on_exception``: once, when the run fails (in a step or in any hook), before the
    error propagates to the caller.

Steps 4-8 repeat for each batch, 10 for each validation batch, 3-13 for each epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import torch

    from treadle.config import TrainingConfig
    from treadle.control import TrainerControl
    from treadle.protocols import TrainerView

hookspec = pluggy.HookspecMarker("treadle")

#: ``treadle_configure_run``'s ``add_logger(name)``: the run also writes to logger ``name``.
AddLogger = Callable[[str], None]
#: ``treadle_configure_run``'s ``bind(obj)``: ``obj``'s lifecycle methods hear this run only.
Bind = Callable[[object], None]

#: The ``register`` callable every registration hook receives.
#: ``register(name, obj, override=False)``: ``name`` matches ``^[a-z][a-z0-9_-]*$``; ``obj`` is
#: checked against the kind's protocol at once, or is a ``"package.module:attr"`` reference,
#: imported and checked on first use; ``override=True`` replaces a name another plugin
#: registered (exactly one registrant of a name may pass it).
Register = Callable[..., None]

# --------------------------------------------------------------------------------------------
# Registration: each fills one named registry. Called once per plugin manager, on first lookup.
# --------------------------------------------------------------------------------------------


@hookspec
def treadle_register_losses(register: Register) -> None:
    """Register loss strategies.

    :param register: ``register(name, strategy)``. ``strategy`` is a class (instantiated with the
        options given to ``get_loss_strategy(name, **options)``) or a ready instance; either must
        provide ``compute_loss(logits, labels, inputs=None)`` and ``validate_inputs(logits,
        labels)`` (:class:`treadle.protocols.LossStrategy`).

    Every implementation is called once; return values are ignored. An exception stops the
    lookup that triggered registration and names the plugin.
    """


@hookspec
def treadle_register_collators(register: Register) -> None:
    """Register batch collators.

    :param register: ``register(name, collator)``. A class is instantiated with ``task_spec=``
        (and any options) when a loader is built; a function ``collate(samples) -> batch`` is
        used as it is (:class:`treadle.protocols.Collator`).

    Every implementation is called once; return values are ignored.
    """


@hookspec
def treadle_register_models(register: Register) -> None:
    """Register model factories, used by the CLI and by jobs to build a model from config.

    :param register: ``register(name, factory)`` where ``factory(training_config, task_spec)``
        returns a ``torch.nn.Module`` (:class:`treadle.protocols.ModelFactory`).

    Every implementation is called once; return values are ignored.
    """


@hookspec
def treadle_register_metrics(register: Register) -> None:
    """Register streaming metrics computed during validation.

    :param register: ``register(name, metric)`` where ``metric`` is a class whose instances
        accumulate with ``update(...)`` and report with ``compute()``
        (:class:`treadle.protocols.StreamingMetric`). A new instance is made per validation.

    Every implementation is called once; return values are ignored.
    """


@hookspec
def treadle_register_loggers(register: Register) -> None:
    """Register metric sinks (console, JSON lines, the experiment store, W&B, ...).

    :param register: ``register(name, logger_class)``; the class is instantiated per run with
        the options configured for it (:class:`treadle.protocols.MetricLogger`). A logger whose
        optional dependency is missing still registers, and fails on use with the install fix.

    Every implementation is called once; return values are ignored.
    """


@hookspec
def treadle_register_exporters(register: Register) -> None:
    """Register export formats for export bundles (``onnx``, ``torchscript``, ``pytorch``, ...).

    :param register: ``register(format_name, exporter)`` (:class:`treadle.protocols.Exporter`).

    Every implementation is called once; return values are ignored.
    """


@hookspec
def treadle_register_storage(register: Register) -> None:
    """Register storage backends, keyed by URL scheme (``sqlite``, ``postgresql``, ...).

    :param register: ``register(scheme, backend)`` (:class:`treadle.protocols.StorageBackend`).
        ``open_store("scheme://...")`` and the stores built on it resolve through this registry.

    Every implementation is called once; return values are ignored.
    """


@hookspec
def treadle_register_job_types(register: Register) -> None:
    """Register job types the job queue can run (training, evaluation, export, retraining).

    :param register: ``register(job_type, runner)`` (:class:`treadle.protocols.JobType`).

    Every implementation is called once; return values are ignored.
    """


@hookspec
def treadle_register_commands(register: Register) -> None:
    """Register sub-commands of the ``treadle`` command line.

    :param register: ``register(name, command)`` (:class:`treadle.protocols.Command`): the
        command adds its arguments to an ``argparse`` sub-parser and runs with the parsed
        namespace, returning an exit status.

    Every implementation is called once, when the command line starts; return values are
    ignored.
    """


@hookspec
def treadle_register_datasets(register: Register) -> None:
    """Register named data sets: the names ``TrainingConfig.dataset`` (``--set dataset=NAME``)
    and ``UniversalDataModule.load_named(name)`` look up.

    :param register: ``register(name, dataset)`` (:class:`treadle.protocols.NamedDataset`): a
        class (instantiated without arguments on each lookup) or a ready instance, describing
        the data (``description``, ``task_types``, ``modalities``, ``source``, ``licence``) and
        providing ``default_task(training_config)`` and ``load(task_spec, tokenizer=...,
        validation_split=..., seed=..., **options)``. Keep registration cheap: import the data's
        libraries (scikit-learn, ``datasets``) inside ``load``, never at module level.

    Every implementation is called once, on the first lookup of a data set; return values are
    ignored. An exception stops that lookup and names the plugin.
    """


# --------------------------------------------------------------------------------------------
# Lifecycle: called by the Trainer in the order the module docstring numbers.
# --------------------------------------------------------------------------------------------


@hookspec
def treadle_on_load_checkpoint(trainer: TrainerView, plugin_state: Mapping[str, Any]) -> None:
    """Called once when a run resumes from a checkpoint, before ``treadle_on_training_start``,
    with what ``treadle_on_save_checkpoint`` stored (an empty mapping for checkpoints written
    without plugin state).

    :param plugin_state: the saved plugin state, keyed by plugin name.

    Every implementation is called; return values are ignored. Wrappers are allowed.
    """


@hookspec
def treadle_on_training_start(trainer: TrainerView, control: TrainerControl) -> None:
    """Called once, after setup (model on its device, optimizer built, checkpoint resumed) and
    before the first epoch.

    :param trainer: read-only view of the run: config, task, model, step counters.
    :param control: set ``should_stop`` to end the run before it starts.

    Every implementation is called; return values are ignored. Wrappers are allowed.
    """


@hookspec
def treadle_on_epoch_start(trainer: TrainerView, epoch: int, control: TrainerControl) -> None:
    """Called at the start of every training epoch (not when a resumed run continues inside
    an epoch it had begun).

    :param epoch: the epoch about to run, from 0.
    :param control: set ``should_stop`` to end the run before this epoch.

    Every implementation is called; return values are ignored. Wrappers are allowed.
    """


@hookspec
def treadle_on_batch_start(
    trainer: TrainerView, batch_index: int, batch: MutableMapping[str, Any], control: TrainerControl
) -> None:
    """Called before every training batch's forward pass. This is the hot path: keep it cheap.

    :param batch_index: position of the batch in the epoch, from 0.
    :param batch: the collated batch, already on the training device. An implementation may
        change it in place (add, replace or remove keys); the forward pass sees the result.
    :param control: set ``should_stop`` to end the run after this batch's optimizer step.

    Every implementation is called; return values are ignored. Wrappers are allowed: code
    before ``yield`` runs before every plain implementation.
    """


@hookspec(firstresult=True)
def treadle_on_before_backward(
    trainer: TrainerView, batch_index: int, loss: torch.Tensor, control: TrainerControl
) -> torch.Tensor | None:
    """Called with each batch's loss before ``backward()``. Hot path.

    :param batch_index: position of the batch in the epoch, from 0.
    :param loss: the scalar loss of this micro-batch, already weighed for accumulation (its
        share of the optimizer step), still on its device and attached to the graph.
    :returns: ``None`` to keep the loss, or a scalar tensor to back-propagate instead (an extra
        regularization term, say).

    ``firstresult``: implementations are called in call order (``tryfirst`` ones first) until
    one returns a tensor; that one is back-propagated and the rest are not called. Wrappers are
    allowed: a wrapper receives the chosen loss (or ``None``) from ``yield`` and may return
    another.
    """


@hookspec
def treadle_on_after_backward(
    trainer: TrainerView, batch_index: int, control: TrainerControl
) -> None:
    """Called after each ``backward()``; gradients of this micro-batch are accumulated. Hot path.

    :param batch_index: position of the batch in the epoch, from 0.

    Every implementation is called; return values are ignored. Wrappers are allowed.
    """


@hookspec
def treadle_on_batch_end(
    trainer: TrainerView, batch_index: int, loss: torch.Tensor, control: TrainerControl
) -> None:
    """Called after every training batch, before the optimizer step its window may end with.
    This is the hot path: keep it cheap.

    :param batch_index: position of the batch in the epoch, from 0.
    :param loss: the batch's own loss (not weighed for accumulation), detached, still on its
        device; call ``.item()`` only when logging.
    :param control: set ``should_stop``, ``should_save`` or ``should_validate`` to steer; they
        take effect at the next optimizer-step boundary.

    Every implementation is called; return values are ignored. An exception ends the run
    after ``treadle_on_exception``. Wrappers are allowed.
    """


@hookspec
def treadle_on_before_optimizer_step(
    trainer: TrainerView, optimizer: torch.optim.Optimizer, control: TrainerControl
) -> None:
    """Called before each optimizer step: after the ``treadle_on_batch_end`` of the window's
    last batch, once gradients are unscaled and clipped.

    :param optimizer: the optimizer about to step; gradients are readable on the model.
    :param control: set ``should_skip_step`` to skip this step (gradients are cleared).

    Every implementation is called; return values are ignored. Wrappers are allowed.
    """


@hookspec
def treadle_on_validation_start(trainer: TrainerView, epoch: int, control: TrainerControl) -> None:
    """Called before each validation pass: after every epoch's training, and mid-epoch right
    after the optimizer step at which a hook had set ``control.should_validate``. Runs without
    validation data never validate and never call it.

    :param epoch: the epoch being trained (mid-epoch: the current one).

    Every implementation is called; return values are ignored. Wrappers are allowed.
    """


@hookspec
def treadle_on_validation_batch_end(trainer: TrainerView, epoch: int, batch_index: int) -> None:
    """Called after every validation batch (a progress display advances here; Lightning's
    ``on_validation_batch_end``, HF's ``on_prediction_step``). Validation's hot path: keep it
    cheap. Nothing is called per validation batch when no plugin implements it.

    :param epoch: the epoch being trained (mid-epoch: the current one).
    :param batch_index: position of the batch in this validation pass, from 0;
        ``trainer.num_validation_batches`` says how many there are.

    Every implementation is called; return values are ignored. Wrappers are allowed.
    """


@hookspec
def treadle_on_validation_end(
    trainer: TrainerView, epoch: int, metrics: Mapping[str, float], control: TrainerControl
) -> None:
    """Called after each validation pass, mid-epoch ones included, with its metrics
    (``val_loss``, ``val_accuracy``, ...).

    :param epoch: the epoch being trained (mid-epoch: the current one).
    :param control: set ``should_stop`` to end the run, ``should_save`` to checkpoint now.

    Every implementation is called; return values are ignored. Wrappers are allowed.
    """


@hookspec
def treadle_on_epoch_end(
    trainer: TrainerView, epoch: int, metrics: Mapping[str, float], control: TrainerControl
) -> None:
    """Called after each epoch, its validation included, with the epoch's combined metrics.

    :param metrics: training and validation metrics of the epoch (``train_loss``,
        ``val_loss``, ...), plain floats.
    :param control: set ``should_stop`` to end the run, ``should_save`` to checkpoint now.

    Every implementation is called; return values are ignored. Wrappers are allowed.
    """


@hookspec
def treadle_on_save_checkpoint(
    trainer: TrainerView, plugin_state: MutableMapping[str, Any]
) -> None:
    """Called while a checkpoint is written, so a plugin can store its own state.

    :param plugin_state: a dict saved inside the checkpoint. Store under your plugin's name:
        ``plugin_state["acme"] = {...}``. Values must be plain types (``int``, ``float``,
        ``str``, lists, dicts, tensors): checkpoints load with ``weights_only=True``.

    Every implementation is called; return values are ignored. Wrappers are allowed: after
    ``yield`` a wrapper sees what the others stored.
    """


@hookspec
def treadle_on_training_end(trainer: TrainerView, results: Mapping[str, Any]) -> None:
    """Called once after the last epoch, or after a requested stop, with the run's results
    (``best_epoch``, ``best_val_loss``, ``total_time``, ``final_metrics``, ``history``). The
    run's loggers are closed by then.

    Every implementation is called; return values are ignored. Wrappers are allowed.
    """


@hookspec
def treadle_on_exception(trainer: TrainerView, exception: BaseException) -> None:
    """Called once when the run fails, before the exception propagates to the caller.

    :param exception: the error; it is re-raised after every implementation ran. An exception
        raised here is attached as a note and does not replace the original.

    Every implementation is called; return values are ignored. Wrappers are allowed.
    """


# --------------------------------------------------------------------------------------------
# Run set-up: called once per run, before its loggers are built and its hooks bound.
# --------------------------------------------------------------------------------------------


@hookspec
def treadle_configure_run(
    training_config: TrainingConfig, add_logger: AddLogger, bind: Bind
) -> None:
    """Called once per ``Trainer.train`` run, before its loggers are built and its lifecycle
    hooks bound, so a plugin can switch on what the run's config asks of it (as pytest's
    ``pytest_configure`` registers stepwise only when ``--stepwise`` is given).

    :param training_config: the run's configuration; a plugin's own options are in
        ``training_config.plugins.options[<plugin name>]``.
    :param add_logger: ``add_logger(name)`` writes the run's metrics to the registered logger
        ``name`` too, as if ``training_config.loggers`` listed it (a name is added once).
    :param bind: ``bind(obj)`` binds ``obj``'s ``@hookimpl``-marked lifecycle methods to this
        run only (a stateful object: early stopping with its own counters, a profiler). It
        never hears another run; off, it costs nothing.

    Every implementation is called, in plugin registration order; return values are ignored.
    Wrappers are not allowed. An exception stops the run before it starts and names the
    plugin.
    """
