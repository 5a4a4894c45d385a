"""``treadle train``: the main job. A preset (quick_prototype by default), a config file and
flags resolve into one TrainingConfig; the model comes from the model registry, the data from
the data module; the Trainer runs, with its progress display on stderr (a bar on a terminal)
and a summary on stdout.

``--plan`` resolves everything and prints it, with where each value came from, without
training.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from treadle_cli.arguments import add_config_arguments, resolve_arguments
from treadle_cli.output import format_epoch

if TYPE_CHECKING:
    from treadle.config import TrainingConfig
    from treadle.engine.distributed import DistributedContext
    from treadle.plugins import PluginManager
    from treadle.run_setup import RunSetup

__all__ = ["TrainCommand"]


class TrainCommand:
    """``treadle train``."""

    help = "train a model: the quick_prototype preset by default (about a minute on a CPU)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_config_arguments(parser)
        parser.add_argument(
            "--resume", action="store_true", help="continue the newest run of this run_name"
        )
        parser.add_argument(
            "--plan", action="store_true", help="print the resolved plan and exit; trains nothing"
        )
        parser.add_argument(
            "--profile-hooks", action="store_true", help="report time spent in each hook"
        )
        parser.add_argument(
            "--run-dir", type=Path, help="folder of this run (default: checkpoint_dir/run_name)"
        )
        parser.add_argument("--json", action="store_true", help="print the results as JSON")

    def run(self, args: argparse.Namespace) -> int:
        from treadle.engine.distributed import call_on_main, distributed_session
        from treadle.engine.trainer import resolve_device
        from treadle.plugins import check_requirements
        from treadle.run_setup import build_run_setup, next_run_dir

        resolved = resolve_arguments(args)
        config = resolved.config
        manager: PluginManager = args.plugin_manager
        if config.plugins.disable:
            from treadle.plugins import disabled_from_env, make_plugin_manager

            manager = make_plugin_manager(disabled=[*disabled_from_env(), *config.plugins.disable])
        if config.plugins.require:
            check_requirements(config.plugins.require)

        # under torchrun: one process group for the whole command, so that rank 0 alone
        # chooses the run folder and prints
        with distributed_session(resolve_device(config.device)) as distributed:
            if distributed is not None and not distributed.is_main:
                logging.getLogger("treadle").setLevel(logging.WARNING)
            run_dir = args.run_dir or call_on_main(
                distributed,
                lambda: next_run_dir(config.checkpoint_dir, config.run_name or "run", args.resume),
            )
            config = attrs.evolve(
                config,
                checkpoint_dir=str(run_dir),
                resume="auto" if args.resume else config.resume,
                # -q: the summary alone, as pip -q hides its bars
                progress_bar=config.progress_bar and not getattr(args, "quiet", 0),
            )
            setup = build_run_setup(config, manager)
            if args.plan:
                from treadle_cli.plan import describe_plan

                if distributed is None or distributed.is_main:
                    sys.stdout.write(describe_plan(resolved, setup, manager) + "\n")
                return 0
            return self._train(args, setup, manager, run_dir, distributed)

    def _train(
        self,
        args: argparse.Namespace,
        setup: RunSetup,
        manager: PluginManager,
        run_dir: Path,
        distributed: DistributedContext | None = None,
    ) -> int:
        config = setup.config
        is_main = distributed is None or distributed.is_main
        # progress: the engine's own display (config progress_bar), from rank 0 alone
        trainer = setup.make_trainer(manager, profile_hooks=args.profile_hooks)
        results = trainer.train(setup.train_data, setup.val_data)
        if not is_main:
            return 0
        if args.json:
            printable = {k: v for k, v in results.items() if k != "hook_profile"}
            sys.stdout.write(json.dumps(printable, indent=2, default=str) + "\n")
        else:
            sys.stdout.write(_summary(results, config, run_dir) + "\n")
        if args.profile_hooks:
            sys.stdout.write(_hook_profile(results.get("hook_profile", [])) + "\n")
        return 0


def _summary(results: Mapping[str, Any], config: TrainingConfig, run_dir: Path) -> str:
    lines = []
    stop = results.get("stop_reason")
    if stop:
        lines.append(f"stopped early: {stop}")
        if stop == "SIGTERM":
            lines.append("continue with: treadle train --resume (same preset, config and flags)")
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
    lines.append(f"checkpoints: {run_dir}")
    if results.get("best_checkpoint"):
        lines.append(f"best checkpoint: {results['best_checkpoint']}")
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
