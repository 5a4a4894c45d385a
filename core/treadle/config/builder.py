"""TrainingConfigBuilder: five presets and chainable, immutable customization."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from treadle.config.training import TrainingConfig

__all__ = ["PRESETS", "TrainingConfigBuilder"]


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


def _given(**values: Any) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not UNSET}


# The model of quick_prototype fits the built-in byte-level tokenizer (256 bytes + 3 specials)
# and trains for about a minute on 2 CPU cores; the others follow the spec's descriptions.
PRESETS: dict[str, dict[str, Any]] = {
    "quick_prototype": {
        "epochs": 3,
        "batch_size": 16,
        "learning_rate": 1e-3,
        "warmup_ratio": 0.05,
        "validation_split": 0.1,
        "early_stopping_patience": None,
        "model_type": "tiny_gpt",
        "model_name": "tiny-gpt",
        "vocab_size": 259,
        "max_seq_len": 64,
        "d_model": 128,
        "num_layers": 2,
        "num_heads": 4,
        "d_ff": 512,
        "dropout": 0.0,
        "keep_best_k": 1,
        "keep_last_n": 1,
        # 3,072 blocks of 64 tokens per epoch (of ~6,500 in pydoc_topics): about a minute
        "max_train_samples": 3072,
        "max_val_samples": 512,
        "run_name": "quick-prototype",
    },
    "baseline": {
        "epochs": 10,
        "batch_size": 8,
        "learning_rate": 3e-4,
        "vocab_size": 50257,
        "max_seq_len": 512,
        "d_model": 768,
        "num_layers": 12,
        "num_heads": 12,
        "d_ff": 3072,
        "run_name": "baseline",
    },
    "production": {
        "epochs": 20,
        "batch_size": 16,
        "learning_rate": 3e-4,
        "deterministic": True,
        "early_stopping_patience": 3,
        "save_every_n_epochs": 1,
        "keep_best_k": 3,
        "keep_last_n": 2,
        "export_formats": ("onnx", "torchscript", "pytorch"),
        "run_name": "production",
    },
    "distributed": {
        "epochs": 10,
        "batch_size": 16,
        "learning_rate": 3e-4,
        "devices": 4,
        "strategy": "ddp",
        "use_amp": True,
        "precision": "bf16-mixed",
        "run_name": "distributed",
    },
    "low_memory": {
        "epochs": 10,
        "batch_size": 2,
        "gradient_accumulation_steps": 8,
        "learning_rate": 1e-4,
        "use_amp": True,
        "max_seq_len": 256,
        "keep_best_k": 1,
        "keep_last_n": 1,
        "run_name": "low-memory",
    },
}


@attrs.frozen
class TrainingConfigBuilder:
    """Fluent, immutable builder: every ``with_*`` returns a new builder, so a preset is never
    changed by what is chained onto it.

    >>> config = (TrainingConfigBuilder.baseline()
    ...     .with_training(epochs=30, batch_size=8)
    ...     .with_optimizer(gradient_accumulation_steps=4)
    ...     .build())

    Validation happens once, in :meth:`build`, so intermediate steps may be inconsistent.
    """

    values: Mapping[str, Any] = attrs.field(factory=dict, converter=dict)
    preset: str | None = None

    # -- presets ---------------------------------------------------------------------------

    @classmethod
    def from_preset(cls, name: str) -> TrainingConfigBuilder:
        """The builder of a preset by name (``quick_prototype``, ``baseline``, ...)."""
        try:
            values = PRESETS[name]
        except KeyError:
            msg = f"Unknown preset {name!r}. Presets: {', '.join(PRESETS)}."
            raise ValueError(msg) from None
        return cls(values, preset=name)

    @classmethod
    def quick_prototype(cls) -> TrainingConfigBuilder:
        """3 epochs of a small GPT sized for a CPU: a debugging run of about a minute."""
        return cls.from_preset("quick_prototype")

    @classmethod
    def baseline(cls) -> TrainingConfigBuilder:
        """10 epochs of a GPT-2-small sized model (about 125M parameters)."""
        return cls.from_preset("baseline")

    @classmethod
    def production(cls) -> TrainingConfigBuilder:
        """20 epochs, deterministic, early stopping, checkpointing and every export format."""
        return cls.from_preset("production")

    @classmethod
    def distributed(cls) -> TrainingConfigBuilder:
        """DDP over 4 devices with bf16 mixed precision."""
        return cls.from_preset("distributed")

    @classmethod
    def low_memory(cls) -> TrainingConfigBuilder:
        """Batch of 2 with 8 accumulation steps and mixed precision (a free Colab GPU)."""
        return cls.from_preset("low_memory")

    # -- customization ---------------------------------------------------------------------

    def with_options(self, **values: Any) -> TrainingConfigBuilder:
        """Set any :class:`TrainingConfig` fields (checked in :meth:`build`)."""
        unknown = sorted(set(values) - {f.name for f in attrs.fields(TrainingConfig)})
        if unknown:
            msg = f"Unknown TrainingConfig fields: {', '.join(unknown)}"
            raise TypeError(msg)
        return attrs.evolve(self, values={**self.values, **values})

    def with_model(
        self,
        *,
        model_name: str = UNSET,
        model_type: str = UNSET,
        vocab_size: int = UNSET,
        d_model: int = UNSET,
        num_layers: int = UNSET,
        num_heads: int = UNSET,
        d_ff: int = UNSET,
        max_seq_len: int = UNSET,
        dropout: float = UNSET,
    ) -> TrainingConfigBuilder:
        """Model architecture."""
        return self.with_options(
            **_given(
                model_name=model_name,
                model_type=model_type,
                vocab_size=vocab_size,
                d_model=d_model,
                num_layers=num_layers,
                num_heads=num_heads,
                d_ff=d_ff,
                max_seq_len=max_seq_len,
                dropout=dropout,
            )
        )

    def with_training(
        self,
        *,
        learning_rate: float = UNSET,
        batch_size: int = UNSET,
        epochs: int = UNSET,
        warmup_ratio: float = UNSET,
        validation_split: float = UNSET,
        random_seed: int = UNSET,
        deterministic: bool = UNSET,
        early_stopping_patience: int | None = UNSET,
        task: str = UNSET,
        dataset: str = UNSET,
    ) -> TrainingConfigBuilder:
        """Training hyperparameters, seed and data."""
        return self.with_options(
            **_given(
                learning_rate=learning_rate,
                batch_size=batch_size,
                epochs=epochs,
                warmup_ratio=warmup_ratio,
                validation_split=validation_split,
                random_seed=random_seed,
                deterministic=deterministic,
                early_stopping_patience=early_stopping_patience,
                task=task,
                dataset=dataset,
            )
        )

    def with_optimizer(
        self,
        *,
        weight_decay: float = UNSET,
        max_grad_norm: float | None = UNSET,
        gradient_accumulation_steps: int = UNSET,
        optimizer: str = UNSET,
        scheduler: str = UNSET,
        adam_betas: tuple[float, float] = UNSET,
        adam_epsilon: float = UNSET,
    ) -> TrainingConfigBuilder:
        """Optimizer, schedule, clipping and accumulation."""
        return self.with_options(
            **_given(
                weight_decay=weight_decay,
                max_grad_norm=max_grad_norm,
                gradient_accumulation_steps=gradient_accumulation_steps,
                optimizer=optimizer,
                scheduler=scheduler,
                adam_betas=adam_betas,
                adam_epsilon=adam_epsilon,
            )
        )

    def with_hardware(
        self,
        *,
        use_amp: bool = UNSET,
        compile_mode: str | None = UNSET,
        devices: int = UNSET,
        precision: str = UNSET,
        strategy: str = UNSET,
        device: str = UNSET,
        num_workers: int = UNSET,
    ) -> TrainingConfigBuilder:
        """Device, precision, compilation and parallelism."""
        return self.with_options(
            **_given(
                use_amp=use_amp,
                compile_mode=compile_mode,
                devices=devices,
                precision=precision,
                strategy=strategy,
                device=device,
                num_workers=num_workers,
            )
        )

    def with_checkpointing(
        self,
        *,
        checkpoint_dir: str = UNSET,
        save_every_n_epochs: int = UNSET,
        save_every_n_steps: int | None = UNSET,
        save_every_minutes: float | None = UNSET,
        keep_best_k: int = UNSET,
        keep_last_n: int = UNSET,
        async_checkpointing: bool = UNSET,
        resume: str | None = UNSET,
        handle_signals: bool = UNSET,
    ) -> TrainingConfigBuilder:
        """Where, how often and how many checkpoints; ``resume='auto'`` continues a run;
        ``handle_signals=False`` leaves SIGINT and SIGTERM to the application."""
        return self.with_options(
            **_given(
                checkpoint_dir=checkpoint_dir,
                save_every_n_epochs=save_every_n_epochs,
                save_every_n_steps=save_every_n_steps,
                save_every_minutes=save_every_minutes,
                keep_best_k=keep_best_k,
                keep_last_n=keep_last_n,
                async_checkpointing=async_checkpointing,
                resume=resume,
                handle_signals=handle_signals,
            )
        )

    def with_logging(
        self,
        *,
        wandb_project: str | None = UNSET,
        run_name: str | None = UNSET,
        notes: str = UNSET,
        loggers: tuple[str, ...] = UNSET,
        log_every_n_steps: int = UNSET,
        experiment_location: str | None = UNSET,
    ) -> TrainingConfigBuilder:
        """Experiment tracking: run name, notes, loggers and the experiment store."""
        return self.with_options(
            **_given(
                wandb_project=wandb_project,
                run_name=run_name,
                notes=notes,
                loggers=tuple(loggers) if loggers is not UNSET else UNSET,
                log_every_n_steps=log_every_n_steps,
                experiment_location=experiment_location,
            )
        )

    def build(self) -> TrainingConfig:
        """The validated config.

        :raises ConfigError: listing every problem of the combined settings.
        """
        return TrainingConfig(**self.values)
