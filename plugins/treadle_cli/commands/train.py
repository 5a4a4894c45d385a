"""``treadle train``: the main job. A preset (quick_prototype by default), a config file and
flags resolve into one TrainingConfig; the model comes from the model registry, the data from
the data module; the Trainer runs in a folder of its own, with its progress display on
stderr (a bar on a terminal) and a summary on stdout; a run that completes is registered as
the next version of its model.

``--plan`` resolves everything and prints it, with where each value came from, without
training. Ctrl-C (or SIGTERM) saves a checkpoint at the next optimizer step, prints the
command that resumes the run and exits with 128 + the signal's number (130, 143); a second
Ctrl-C aborts at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shlex
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from treadle.errors import ConfigError, TreadleError
from treadle_cli.arguments import add_config_arguments, forwarded_arguments, resolve_arguments
from treadle_cli.output import format_epoch

if TYPE_CHECKING:
    from treadle.config import TrainingConfig
    from treadle.engine.distributed import DistributedContext
    from treadle.plugins import PluginManager
    from treadle.run_setup import RunSetup
    from treadle.storage import ModelRegistryEntry

__all__ = ["TrainCommand"]

logger = logging.getLogger(__name__)


class TrainCommand:
    """``treadle train``."""

    help = "train a model: the quick_prototype preset by default (about a minute on a CPU)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_config_arguments(parser)
        parser.add_argument(
            "--resume",
            action="store_true",
            help="continue the newest run of this run_name (after Ctrl-C, SIGTERM or a crash)",
        )
        parser.add_argument(
            "--plan", action="store_true", help="print the resolved plan and exit; trains nothing"
        )
        parser.add_argument(
            "--profile-hooks", action="store_true", help="report time spent in each hook"
        )
        parser.add_argument(
            "--run-dir",
            type=Path,
            help="folder of this run (default: checkpoint_dir/run_name); taken when it holds "
            "no other run, else the first free of RUN_DIR-2, -3, ...",
        )
        parser.add_argument(
            "--no-register",
            action="store_true",
            help="do not register the best checkpoint in the model registry when the run ends",
        )
        parser.add_argument("--json", action="store_true", help="print the results as JSON")

    def run(self, args: argparse.Namespace) -> int:
        from treadle.engine.distributed import call_on_main, distributed_session
        from treadle.engine.trainer import resolve_device
        from treadle.plugins import check_requirements
        from treadle.run_setup import build_run_setup, run_folder_base

        resolved = resolve_arguments(args)
        config = resolved.config
        manager: PluginManager = args.plugin_manager
        if config.plugins.disable:
            from treadle.plugins import disabled_from_env, make_plugin_manager

            manager = make_plugin_manager(disabled=[*disabled_from_env(), *config.plugins.disable])
        if config.plugins.require:
            check_requirements(config.plugins.require)
        if args.run_dir is not None:
            base = Path(os.path.abspath(args.run_dir))
        else:
            base = run_folder_base(config.checkpoint_dir, config.run_name or "run")

        # under torchrun: one process group for the whole command; rank 0 alone looks at the
        # run folders and prints
        with distributed_session(resolve_device(config.device)) as distributed:
            is_main = distributed is None or distributed.is_main
            if not is_main:
                logging.getLogger("treadle").setLevel(logging.WARNING)
            if args.plan:
                shown = call_on_main(distributed, lambda: _folder_to_take(base, args.resume))
                config = attrs.evolve(
                    config,
                    checkpoint_dir=str(shown),
                    resume="auto" if args.resume else config.resume,
                )
                setup = build_run_setup(config, manager)
                if is_main:
                    from treadle_cli.plan import describe_plan

                    sys.stdout.write(describe_plan(resolved, setup, manager) + "\n")
                return 0
            if args.resume:
                finished = call_on_main(distributed, lambda: _check_resumable(base, config))
                if finished is not None:
                    if is_main:
                        sys.stdout.write(finished + "\n")
                    return 0
            # the Trainer claims base, or the first free of base-2, -3 ... (or, resuming, the
            # newest run there), under the folder's lock
            config = attrs.evolve(
                config,
                checkpoint_dir=str(base),
                resume="auto" if args.resume else config.resume,
                # -q: the summary alone, as pip -q hides its bars
                progress_bar=config.progress_bar and not getattr(args, "quiet", 0),
            )
            setup = build_run_setup(config, manager)
            return self._train(args, setup, manager, distributed)

    def _train(
        self,
        args: argparse.Namespace,
        setup: RunSetup,
        manager: PluginManager,
        distributed: DistributedContext | None = None,
    ) -> int:
        config = setup.config
        is_main = distributed is None or distributed.is_main
        # progress: the engine's own display (config progress_bar), from rank 0 alone
        trainer = setup.make_trainer(manager, profile_hooks=args.profile_hooks)
        try:
            results = trainer.train(setup.train_data, setup.val_data)
        except KeyboardInterrupt as interrupt:
            if not is_main or not str(interrupt):
                raise  # not the Trainer's abort: cli.py reports it
            sys.stderr.write(
                f"\ntreadle train: {interrupt}; the run's last checkpoint stands. Continue "
                f"with: {_resume_command(args)}\n"
            )
            return 128 + signal.SIGINT
        status = results["status"]
        if not is_main:
            return _exit_status(results)
        if status == "already_completed":
            sys.stdout.write(_completed_message(Path(results["run_dir"]), results) + "\n")
            return 0
        registered: ModelRegistryEntry | None = None
        register_error: TreadleError | None = None
        if status == "completed" and not args.no_register:
            try:
                registered = _register(results, setup, manager)
            except TreadleError as err:
                register_error = err
        if args.json:
            printable = {k: v for k, v in results.items() if k != "hook_profile"}
            printable["registered"] = None if registered is None else registered.to_dict()
            sys.stdout.write(json.dumps(printable, indent=2, default=str) + "\n")
        else:
            sys.stdout.write(_summary(results, config, args, registered) + "\n")
        if args.profile_hooks:
            sys.stdout.write(_hook_profile(results.get("hook_profile", [])) + "\n")
        if register_error is not None:
            sys.stderr.write(
                f"treadle train: the run completed, but registering it failed: "
                f"{register_error}\nRegister it with: treadle registry register "
                f"{shlex.quote(str(results['best_checkpoint']))} --name "
                f"{shlex.quote(config.model_name)} --location "
                f"{shlex.quote(config.registry_location)}\n"
            )
            return 1
        return _exit_status(results)


def _exit_status(results: Mapping[str, Any]) -> int:
    """0, or 128 + the signal's number for a run a signal interrupted (as a shell reports a
    process the signal ended): ``treadle train && deploy`` must not deploy after Ctrl-C."""
    if results.get("status") != "interrupted":
        return 0
    try:
        return 128 + signal.Signals[str(results.get("stop_reason"))].value
    except KeyError:
        return 1


def _folder_to_take(base: Path, resume: bool) -> Path:
    """The folder a run would take now (``--plan``); nothing is claimed."""
    from treadle.engine.checkpoints.run_folder import find_run_folder, folder_series, holds_run

    if resume:
        found = find_run_folder(base)
        if found is None:
            msg = f"no run in {base} (or {base.name}-2, -3, ...) to resume"
            raise ConfigError(msg)
        return found
    for path in folder_series(base):
        if not path.exists() or (path.is_dir() and not holds_run(path)):
            return path
    msg = f"{base} and {base.name}-2 ... -999 all hold runs; choose another run_name"
    raise ConfigError(msg)


def _check_resumable(base: Path, config: TrainingConfig) -> str | None:
    """Before anything loads: refuse a resume with nothing to resume or whose run is alive;
    the message for a run that is complete (nothing to do), else ``None``.

    :raises ConfigError: no run to resume.
    :raises RunFolderBusyError: its process is alive.
    """
    from treadle.engine.checkpoints.run_folder import ensure_not_busy, read_run_info

    folder = _folder_to_take(base, resume=True)
    ensure_not_busy(folder)
    info = read_run_info(folder)
    if info is None or not info.is_complete(config.epochs):
        return None
    results = {**(info.results or {}), "run_id": info.run_id, "registered": info.registered}
    return _completed_message(folder, results)


def _completed_message(folder: Path, results: Mapping[str, Any]) -> str:
    lines = [f"run {results.get('run_id')} in {folder} is complete; nothing to resume."]
    history = results.get("history") or []
    best_loss = results.get("best_val_loss")
    if history:
        lines.append(f"epochs trained: {len(history)}")
    if results.get("stop_reason"):
        lines.append(f"stopped early: {results['stop_reason']}")
    if isinstance(best_loss, int | float):
        lines.append(f"best val loss: {best_loss:.4f}")
    if results.get("best_checkpoint"):
        lines.append(f"best checkpoint: {results['best_checkpoint']}")
    registered = results.get("registered")
    if isinstance(registered, Mapping):
        lines.append(
            f"registered as: {registered.get('name')} {registered.get('version')} "
            f"(model {registered.get('model_id')})"
        )
    lines.append("Start a new run without --resume, or train it further with more --epochs.")
    return "\n".join(lines)


def _register(
    results: Mapping[str, Any], setup: RunSetup, manager: PluginManager
) -> ModelRegistryEntry | None:
    """Register the run's best checkpoint (once per run) and note it in its run.json."""
    from treadle.engine.checkpoints.run_folder import record_in_run_file
    from treadle.model_registry import ModelRegistry
    from treadle.run_registration import register_run

    config = setup.config
    with ModelRegistry(config.registry_location, plugin_manager=manager) as registry:
        entry = register_run(
            registry,
            results,
            config,
            task_type=setup.task_spec.task_type,
            plugin_manager=manager,
        )
    if entry is not None:
        note = {
            "model_id": entry.model_id,
            "name": entry.name,
            "version": entry.version,
            "location": config.registry_location,
        }
        try:
            record_in_run_file(results["run_dir"], registered=note)
        except TreadleError as err:  # the registry entry is what counts
            logger.warning("could not note the registration in the run's folder: %s", err)
    return entry


def _resume_command(args: argparse.Namespace) -> str:
    """The ``treadle train`` command line that resumes this run."""
    words = ["treadle", "train", *forwarded_arguments(args)]
    if args.run_dir is not None:
        words += ["--run-dir", str(args.run_dir)]
    if args.no_register:
        words.append("--no-register")
    words.append("--resume")
    return shlex.join(words)


def _summary(
    results: Mapping[str, Any],
    config: TrainingConfig,
    args: argparse.Namespace,
    registered: ModelRegistryEntry | None,
) -> str:
    lines = []
    stop = results.get("stop_reason")
    if results.get("status") == "interrupted":
        lines.append(f"interrupted by {stop}: checkpoint saved")
        lines.append(f"continue with: {_resume_command(args)}")
    elif stop:
        lines.append(f"stopped early: {stop}")
    best_epoch = results.get("best_epoch")
    best_loss = results.get("best_val_loss")
    lines.append(f"best epoch: {format_epoch(best_epoch, config.epochs)}")
    if best_loss is not None:
        perplexity = math.exp(best_loss) if best_loss < 700 else math.inf
        lines.append(f"best val loss: {best_loss:.4f} (perplexity {perplexity:.2f})")
    final = results.get("final_metrics") or {}
    for name in ("val_accuracy", "val_token_accuracy"):
        if name in final:
            lines.append(f"{name.removeprefix('val_').replace('_', ' ')}: {final[name]:.4f}")
    lines.append(f"time: {results['total_time']:.1f} s")
    lines.append(f"checkpoints: {results['run_dir']}")
    if results.get("best_checkpoint"):
        lines.append(f"best checkpoint: {results['best_checkpoint']}")
    if registered is not None:
        lines.append(
            f"registered: {registered.name} {registered.version} (model {registered.model_id}) "
            f"in {config.registry_location}"
        )
    return "\n".join(lines)


def _hook_profile(timings: Sequence[Any]) -> str:
    from treadle_cli.table import format_table

    if not timings:
        return "hook profile: no hook implementation ran"
    rows = [
        [
            timing.hook,
            timing.implementation,
            timing.calls,
            f"{timing.total_seconds * 1e3:.2f}",
            f"{timing.mean_microseconds:.1f}",
        ]
        for timing in timings
    ]
    return "hook profile:\n" + format_table(
        ["hook", "implementation", "calls", "total ms", "mean us"], rows
    )
