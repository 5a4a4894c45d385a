"""``treadle train --plan``: what a run would do, resolved, without training."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from treadle_cli.table import format_table, shorten

if TYPE_CHECKING:
    import torch

    from treadle.plugins import PluginManager
    from treadle.run_setup import ResolvedConfig, RunSetup

__all__ = ["checkpoint_size_bytes", "describe_plan"]

_OPTIMIZER_STATE_COPIES = {"adamw": 2, "sgd": 1}  # exp_avg + exp_avg_sq; momentum buffer


def checkpoint_size_bytes(model: torch.nn.Module, optimizer: str) -> int:
    """Estimated checkpoint size: the weights and buffers, plus the optimizer's per-parameter
    state (AdamW keeps two float tensors per parameter, SGD with momentum one)."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return int(weights + _OPTIMIZER_STATE_COPIES.get(optimizer, 2) * trainable)


def _megabytes(size: float) -> str:
    return f"{size / 2**20:.1f} MB"


def describe_plan(resolved: ResolvedConfig, setup: RunSetup, manager: PluginManager) -> str:
    """The plan as text: config with sources, plugins and hook order, steps, optimizer and
    warmup, effective batch size, checkpoint schedule and a disk estimate. Every value a user
    chose is cut to :data:`~treadle_cli.table.MAX_CELL_WIDTH`, so the plan stays short and fast
    whatever the config holds."""
    from treadle.engine.dispatch import LIFECYCLE_HOOKS, LifecycleDispatch
    from treadle.engine.optim import parameter_groups, warmup_steps

    config = setup.config
    sections: list[str] = []
    rows = []
    for name, value in config.to_dict().items():
        source = resolved.sources.get(name, "run")
        if name in ("checkpoint_dir", "resume") and value != resolved.config.to_dict()[name]:
            source = "treadle train (run folder)"
        rows.append([name, repr(value), source])
    sections.append("config:\n" + format_table(["field", "value", "source"], rows))

    plugins = [
        [info.name, info.distribution or "-", info.version or "-", info.status]
        for info in manager.plugin_infos()
    ]
    sections.append(
        "plugins:\n" + format_table(["plugin", "distribution", "version", "status"], plugins)
    )
    dispatch = LifecycleDispatch(manager)
    order = [f"  {hook}: {', '.join(dispatch.listeners(hook)) or '-'}" for hook in LIFECYCLE_HOOKS]
    sections.append("lifecycle hooks, in call order:\n" + "\n".join(order))

    train_samples = len(setup.train_data)
    val_samples = len(setup.val_data) if setup.val_data is not None else 0
    batches = math.ceil(train_samples / config.batch_size)
    steps_per_epoch = math.ceil(batches / config.gradient_accumulation_steps)
    total_steps = steps_per_epoch * config.epochs
    warmup = warmup_steps(total_steps, config.warmup_ratio)
    groups = parameter_groups(setup.model, config.weight_decay)
    parameters = sum(p.numel() for p in setup.model.parameters())
    trainable = sum(p.numel() for p in setup.model.parameters() if p.requires_grad)
    decayed = sum(p.numel() for p in groups[0]["params"]) if groups else 0
    optimizer = (
        f"AdamW lr={config.learning_rate:g} betas={config.adam_betas} eps={config.adam_epsilon:g}"
        if config.optimizer == "adamw"
        else f"SGD lr={config.learning_rate:g} momentum=0.9"
    )
    sections.append(
        "\n".join(
            [
                "training:",
                f"  task: {shorten(setup.task_spec.name)} ({setup.task_spec.task_type}), loss "
                f"{setup.task_spec.loss_name}, metrics {', '.join(setup.task_spec.metric_names)}",
                f"  model: {shorten(config.model_type)}, {parameters:,} parameters ({trainable:,} "
                f"trainable)",
                f"  data: {shorten(config.dataset)}, {train_samples:,} training and "
                f"{val_samples:,} validation samples",
                f"  batches per epoch: {batches:,}; optimizer steps per epoch: "
                f"{steps_per_epoch:,}; total: {total_steps:,} over {config.epochs} epochs",
                f"  effective batch size: {config.batch_size} x "
                f"{config.gradient_accumulation_steps} accumulation x {config.devices} devices "
                f"= {config.effective_batch_size}",
                f"  optimizer: {optimizer}, weight decay {config.weight_decay:g} on "
                f"{decayed:,} parameters (none on biases and norms), clip "
                f"{config.max_grad_norm}",
                f"  schedule: {warmup:,} warmup steps ({config.warmup_ratio:g} of "
                f"{total_steps:,}), then {config.scheduler}",
                f"  precision: {config.precision} (use_amp={config.use_amp}); device "
                f"{config.device}; compile {config.compile_mode or 'off'}",
            ]
        )
    )
    size = checkpoint_size_bytes(setup.model, config.optimizer)
    kept = config.keep_best_k + config.keep_last_n
    schedule = [f"every {config.save_every_n_epochs} epoch(s) and at the end"]
    if config.save_every_n_steps:
        schedule.append(f"every {config.save_every_n_steps} optimizer steps")
    if config.save_every_minutes:
        schedule.append(f"every {config.save_every_minutes:g} minutes")
    if config.handle_signals:
        schedule.append("on Ctrl-C (SIGINT) or SIGTERM (then stop)")
    sections.append(
        "\n".join(
            [
                "checkpoints:",
                f"  folder: {shorten(config.checkpoint_dir)}",
                f"  when: {'; '.join(schedule)}",
                f"  kept: best {config.keep_best_k} by {shorten(config.monitor_metric)} "
                f"({config.monitor_mode}) and last {config.keep_last_n}",
                f"  disk: about {_megabytes(size)} per checkpoint (weights + "
                f"{config.optimizer} state) x at most {kept} files = {_megabytes(size * kept)}",
            ]
        )
    )
    return "\n\n".join(sections)
