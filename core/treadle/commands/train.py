"""``treadle train``: the main job. A preset (quick_prototype by default), a config file and
flags resolve into one TrainingConfig; the model comes from the model registry, the data from
the data module; the Trainer runs, with progress on stderr and a summary on stdout.

``--plan`` resolves everything and prints it, with where each value came from, without
training.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import attrs

from treadle.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from treadle.config import TrainingConfig
    from treadle.engine.distributed import DistributedContext
    from treadle.plugins import PluginManager
    from treadle.task import TaskSpec

__all__ = [
    "DEFAULT_PRESET",
    "Job",
    "ResolvedConfig",
    "TrainCommand",
    "add_config_arguments",
    "build_job",
    "parameter_digest",
    "resolve_config",
]

DEFAULT_PRESET = "quick_prototype"


@attrs.frozen
class ResolvedConfig:
    """A config and, for each field, where its value came from (``default``, ``preset
    NAME``, ``file PATH``, ``flag --set``, ``flag --epochs``)."""

    config: TrainingConfig
    sources: Mapping[str, str]


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments that choose a config: shared by ``train`` and ``verify-resume``."""
    parser.add_argument(
        "--preset", default=None, help=f"configuration preset (default: {DEFAULT_PRESET})"
    )
    parser.add_argument("--config", type=Path, help="JSON or TOML file of TrainingConfig fields")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help='override one field; VALUE is JSON (3, 0.1, true, "text", [1, 2]) or plain text',
    )
    parser.add_argument("--epochs", type=int, help="number of epochs")
    parser.add_argument("--batch-size", type=int, help="batch size")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 or auto (default: the config's)")


def _parse_override(text: str) -> tuple[str, Any]:
    key, separator, raw = text.partition("=")
    key = key.strip()
    if not separator or not key:
        msg = f"--set {text!r}: expected KEY=VALUE, e.g. --set learning_rate=3e-4"
        raise ConfigError(msg)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    if isinstance(value, list):
        value = tuple(value)
    if isinstance(value, float) and not math.isfinite(value):
        msg = f"--set {key}: NaN and infinities are refused"
        raise ConfigError(msg)
    return key, value


def resolve_config(args: argparse.Namespace) -> ResolvedConfig:
    """Defaults, then the preset, then ``--config``, then ``--set``, then the named flags.

    :raises ConfigError: unknown preset or field, or invalid values; every problem listed.
    """
    from treadle.config import PRESETS, TrainingConfig
    from treadle.config.convert import read_config_file

    preset = args.preset or DEFAULT_PRESET
    if preset not in PRESETS:
        msg = f"Unknown preset {preset!r}. Presets: {', '.join(PRESETS)}."
        raise ConfigError(msg)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}

    def layer(data: Mapping[str, Any], source: str) -> None:
        for key, value in data.items():
            values[key] = value
            sources[key] = source

    layer(PRESETS[preset], f"preset {preset}")
    if args.config is not None:
        layer(read_config_file(args.config), f"file {args.config}")
    layer(dict(_parse_override(text) for text in args.overrides), "flag --set")
    named = {"epochs": args.epochs, "batch_size": args.batch_size, "device": args.device}
    for key, value in named.items():
        if value is not None:
            layer({key: value}, f"flag --{key.replace('_', '-')}")
    base = TrainingConfig().to_dict()
    config = TrainingConfig.from_dict({**base, **values}, source="treadle train")
    all_sources = {name: sources.get(name, "default") for name in base}
    return ResolvedConfig(config, all_sources)


@attrs.frozen
class Job:
    """Everything a run needs besides the config: task, model and data."""

    task_spec: TaskSpec
    model: torch.nn.Module
    model_config: Any
    train_data: Any
    val_data: Any


def build_job(config: TrainingConfig, plugin_manager: PluginManager) -> Job:
    """The task, model (from the model registry) and data (from the data module) for
    ``config``: ``config.dataset`` split by ``config.validation_split``, cut to
    ``max_train_samples`` / ``max_val_samples`` when set.

    :raises UnknownNameError: the model type or data set is not registered.
    """
    import types

    import torch

    from treadle.data import UniversalDataModule

    module = UniversalDataModule.from_training_config(config, plugin_manager=plugin_manager)
    task_spec = module.task_spec
    # the module has already cut the split to max_train_samples / max_val_samples
    train_data, val_data = module.train_dataset(), module.val_dataset()
    # the model's initial weights depend only on the seed, not on what ran before
    torch.manual_seed(config.random_seed)
    factory = plugin_manager.registry("models").get(config.model_type)
    model = factory(config, task_spec)
    model_config = types.SimpleNamespace(
        model_type=config.model_type,
        vocab_size=config.vocab_size,
        d_model=config.d_model,
        num_layers=config.num_layers,
        num_heads=config.num_heads,
        d_ff=config.d_ff,
        max_seq_len=config.max_seq_len,
        dropout=config.dropout,
    )
    return Job(task_spec, model, model_config, train_data, val_data)


def parameter_digest(model: torch.nn.Module) -> str:
    """sha256 over every parameter and buffer's bytes, in ``state_dict`` order."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        flat = tensor.detach().cpu().contiguous().view(-1)
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _next_run_dir(root: Path, run_name: str, resume: bool) -> Path:
    """``root/run_name``, or ``run_name-2``, ``-3``...: the newest for a resume, a fresh
    (empty or absent) one otherwise."""
    candidates = [root / run_name] + [root / f"{run_name}-{n}" for n in range(2, 1000)]
    existing = [path for path in candidates if path.exists() and any(path.iterdir())]
    if resume:
        if not existing:
            msg = f"--resume: no run named {run_name!r} under {root} to resume"
            raise ConfigError(msg)
        return existing[-1]
    for path in candidates:
        if not (path.exists() and any(path.iterdir())):
            return path
    msg = f"{root} holds 999 runs named {run_name!r}; choose another run_name"
    raise ConfigError(msg)


class _Progress:
    """The CLI's hooks object: a progress line on a terminal, periodic log lines otherwise,
    an optional per-batch loss record, and a self-sent SIGTERM for ``verify-resume``."""

    def __init__(
        self,
        stream: TextIO,
        epochs: int,
        batches_per_epoch: int,
        *,
        interactive: bool,
        record: list[list[float]] | None = None,
        kill_at_step: int | None = None,
    ) -> None:
        self.stream = stream
        self.epochs = epochs
        self.batches_per_epoch = batches_per_epoch
        self.interactive = interactive
        self.record = record
        self.kill_at_step = kill_at_step
        self.state: Any = None  # the trainer's RunState, set once the trainer exists
        self.epoch = 0
        self.epoch_started = time.monotonic()
        self.last_shown = 0.0
        self.interval = 0.1 if interactive else 10.0

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch = epoch
        self.epoch_started = time.monotonic()

    def on_batch_end(self, batch_idx: int, loss: float) -> None:
        step = self.state.global_step if self.state is not None else 0
        if self.record is not None:
            self.record.append([step, loss])
        if self.kill_at_step is not None and step >= self.kill_at_step:
            self.kill_at_step = None
            os.kill(os.getpid(), signal.SIGTERM)
        now = time.monotonic()
        if now - self.last_shown < self.interval:
            return
        self.last_shown = now
        done = batch_idx + 1
        total = self.batches_per_epoch
        rate = done / max(now - self.epoch_started, 1e-9)
        eta = (total - done) / rate if rate and total >= done else 0.0
        text = (
            f"epoch {self.epoch + 1}/{self.epochs} batch {done}/{total} loss {loss:.4f} "
            f"{rate:.1f} batch/s eta {eta:.0f}s"
        )
        if self.interactive:
            width = 20
            filled = int(width * done / total) if total else 0
            bar = "#" * filled + "-" * (width - filled)
            self.stream.write(f"\r[{bar}] {text}\x1b[K")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def on_epoch_end(self, epoch: int, metrics: Mapping[str, float]) -> None:
        if self.interactive:
            self.stream.write("\r\x1b[K")
        shown = ", ".join(
            f"{name} {value:.4g}"
            for name, value in metrics.items()
            if name in ("train_loss", "val_loss", "val_perplexity", "val_accuracy", "epoch_time")
        )
        self.stream.write(f"epoch {epoch + 1}/{self.epochs}: {shown}\n")
        self.stream.flush()


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
        # for `treadle verify-resume`: not part of the documented interface
        parser.add_argument("--record", type=Path, help=argparse.SUPPRESS)
        parser.add_argument("--kill-at-step", type=int, help=argparse.SUPPRESS)

    def run(self, args: argparse.Namespace) -> int:
        from treadle.plugins import check_requirements

        resolved = resolve_config(args)
        config = resolved.config
        manager: PluginManager = args.plugin_manager
        if config.plugins.disable:
            from treadle.plugins import disabled_from_env, make_plugin_manager

            manager = make_plugin_manager(disabled=[*disabled_from_env(), *config.plugins.disable])
        if config.plugins.require:
            check_requirements(config.plugins.require)
        from treadle.engine.distributed import call_on_main, distributed_session
        from treadle.engine.trainer import resolve_device

        # under torchrun: one process group for the whole command, so that rank 0 alone
        # chooses the run folder and prints
        with distributed_session(resolve_device(config.device)) as distributed:
            if distributed is not None and not distributed.is_main:
                logging.getLogger("treadle").setLevel(logging.WARNING)
            run_dir = args.run_dir or call_on_main(
                distributed,
                lambda: _next_run_dir(
                    Path(config.checkpoint_dir), config.run_name or "run", args.resume
                ),
            )
            config = attrs.evolve(
                config,
                checkpoint_dir=str(run_dir),
                resume="auto" if args.resume else config.resume,
            )
            job = build_job(config, manager)
            if args.plan:
                from treadle.commands.plan import describe_plan

                if distributed is None or distributed.is_main:
                    sys.stdout.write(describe_plan(resolved, config, job, manager) + "\n")
                return 0
            return self._train(args, config, job, manager, run_dir, distributed)

    def _train(
        self,
        args: argparse.Namespace,
        config: TrainingConfig,
        job: Job,
        manager: PluginManager,
        run_dir: Path,
        distributed: DistributedContext | None = None,
    ) -> int:
        from treadle.engine.trainer import Trainer

        is_main = distributed is None or distributed.is_main
        world_size = 1 if distributed is None else distributed.world_size
        record: list[list[float]] | None = [] if args.record else None
        batches = math.ceil(len(job.train_data) / (config.batch_size * world_size))
        progress = _Progress(
            sys.stderr,
            config.epochs,
            batches,
            interactive=sys.stderr.isatty(),
            record=record,
            kill_at_step=args.kill_at_step,
        )
        trainer = Trainer(
            model=job.model,
            config=job.model_config,
            training_config=config,
            task_spec=job.task_spec,
            hooks=progress if is_main else None,  # console output from rank 0 alone
            device=config.device,
            plugin_manager=manager,
            profile_hooks=args.profile_hooks,
        )
        progress.state = trainer.state
        results = trainer.train(job.train_data, job.val_data)
        if not is_main:
            return 0
        if args.record:
            args.record.write_text(
                json.dumps({"losses": record, "parameters": parameter_digest(job.model)}),
                encoding="utf-8",
            )
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
    lines.append(
        "best epoch: " + ("-" if best_epoch is None else f"{best_epoch + 1} of {config.epochs}")
    )
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
    from treadle.commands.table import format_table

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
