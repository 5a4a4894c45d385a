"""MetricsEngine: per-epoch history, alerts, drift detection and confidence, sent to loggers.

The engine keeps one row per epoch, raises alerts from :class:`AlertConfig`, compares data
profiles for drift (:mod:`treadle.engine.drift`) and forwards every figure to its loggers
(:class:`treadle.protocols.MetricLogger`: ``log_metrics(metrics, step)`` and ``close()``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import torch

from treadle.engine.drift import DataProfile, DriftMetrics, compute_drift
from treadle.errors import PluginLoadError, UnknownNameError
from treadle.optional import require

if TYPE_CHECKING:
    import pandas

    from treadle.config import TrainingConfig
    from treadle.plugins import PluginManager
    from treadle.protocols import MetricLogger

__all__ = ["ALERT_TYPES", "AlertConfig", "MetricsEngine", "build_loggers", "confidence_metrics"]

logger = logging.getLogger(__name__)

#: Every alert ``type`` the engine raises.
ALERT_TYPES: tuple[str, ...] = (
    "val_loss_spike",
    "accuracy_drop",
    "gradient_norm",
    "no_improvement",
    "data_drift",
)


def _non_negative(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        msg = f"AlertConfig.{attribute.name} must be a finite number >= 0: {value}"
        raise ValueError(msg)


@attrs.frozen(kw_only=True)
class AlertConfig:
    """When :class:`MetricsEngine` raises alerts.

    :ivar val_loss_spike_threshold: alert when the validation loss rises by more than this
        fraction over the previous epoch's (0.2: +20%), or is not finite.
    :ivar accuracy_drop_threshold: alert when validation accuracy falls by more than this
        fraction of the previous epoch's (0.05: -5%).
    :ivar gradient_norm_threshold: alert when the epoch's gradient norm exceeds it.
    :ivar patience_epochs: alert when the validation loss has not improved on its best for this
        many epochs (and again after each further ``patience_epochs``).
    """

    val_loss_spike_threshold: float = attrs.field(default=0.2, validator=_non_negative)
    accuracy_drop_threshold: float = attrs.field(default=0.05, validator=_non_negative)
    gradient_norm_threshold: float = attrs.field(default=10.0, validator=_non_negative)
    patience_epochs: int = attrs.field(default=3, validator=attrs.validators.ge(1))


def build_loggers(
    names: Sequence[str],
    *,
    training_config: TrainingConfig | None,
    run_dir: Path | None,
    plugin_manager: PluginManager | None = None,
) -> list[MetricLogger]:
    """Instantiate registered loggers by name as ``cls(training_config=..., run_dir=...)``.

    :raises UnknownNameError: a name no plugin registers (the message lists those that are).
    """
    from treadle.plugins import get_registry

    registry = get_registry("loggers", plugin_manager)
    return [
        registry.create(name, training_config=training_config, run_dir=run_dir) for name in names
    ]


def _switched_on(**switches: bool) -> list[str]:
    """The loggers named by the API reference's ``use_<logger>=True`` switches, in order:
    ``_switched_on(use_wandb=True)`` is ``["wandb"]``. The core knows the switch, not the
    plugin: whichever plugin registers the logger of that name serves it."""
    return [switch.removeprefix("use_") for switch, on in switches.items() if on]


def _build_switched_on(
    names: Sequence[str],
    training_config: TrainingConfig | None,
    run_dir: Path | None,
    plugin_manager: PluginManager | None,
) -> list[MetricLogger]:
    try:
        return build_loggers(
            names, training_config=training_config, run_dir=run_dir, plugin_manager=plugin_manager
        )
    except UnknownNameError as err:
        from treadle.plugins import get_registry

        registered = get_registry("loggers", plugin_manager)
        missing = next(name for name in names if name not in registered)
        msg = (
            f"use_{missing}=True needs the {missing!r} logger, which no enabled plugin "
            f'registers: pip install "treadle[{missing}]" for treadle\'s own, or the plugin '
            f"that provides it (and check TREADLE_DISABLE_PLUGINS / plugins.disable do not "
            f"switch it off)."
        )
        raise PluginLoadError(msg) from err


def confidence_metrics(
    logits: torch.Tensor, labels: torch.Tensor | None = None
) -> dict[str, float]:
    """Mean top-1 and top-5 softmax probability and mean entropy (nats) of ``logits``.

    :param logits: ``(batch, classes)`` or ``(batch, seq_len, vocab)``, float.
    :param labels: same leading shape; positions labelled -100 are left out. ``None``: all.
    :returns: ``top1_confidence``, ``top5_confidence`` (top-``min(5, classes)``), ``entropy``.
    """
    flat = logits.detach().reshape(-1, logits.shape[-1]).float()
    if labels is not None and labels.numel() == flat.shape[0]:
        flat = flat[labels.reshape(-1) != -100]
    if flat.shape[0] == 0:
        return {"top1_confidence": math.nan, "top5_confidence": math.nan, "entropy": math.nan}
    log_probs = torch.log_softmax(flat, dim=-1)
    probs = log_probs.exp()
    top = probs.topk(min(5, probs.shape[-1]), dim=-1).values
    entropy = -(probs * log_probs).nan_to_num().sum(dim=-1)
    top1, top5, mean_entropy = torch.stack(
        [top[:, 0].mean(), top.sum(dim=-1).mean(), entropy.mean()]
    ).tolist()
    return {"top1_confidence": top1, "top5_confidence": top5, "entropy": mean_entropy}


def _strip(metrics: Mapping[str, float], prefix: str) -> dict[str, float]:
    return {name.removeprefix(prefix): float(value) for name, value in metrics.items()}


class MetricsEngine:
    """Tracks a run's metrics epoch by epoch, raises alerts, detects drift, feeds loggers.

    :param use_wandb: also log to the logger registered as ``wandb`` (by the W&B plugin, the
        optional ``treadle[wandb]`` extra); an error with the install command when no enabled
        plugin registers it.
    :param gradient_accumulation_steps: :meth:`log_scalar` steps count batches; loggers get
        optimizer steps, ``step // gradient_accumulation_steps``.
    :param drift_threshold_warning: per-feature JS divergence at which drift is a warning.
    :param drift_threshold_critical: per-feature JS divergence at which drift is critical.
    :param alert_config: alert thresholds (default: ``AlertConfig()``).
    :param loggers: metric sinks to forward to; :meth:`close` closes them.
    :param training_config: given to the constructor of a logger ``use_wandb`` switches on.
    :param run_dir: likewise.
    :param plugin_manager: where that logger is looked up (default: the global manager).
    """

    def __init__(
        self,
        use_wandb: bool = False,
        gradient_accumulation_steps: int = 1,
        drift_threshold_warning: float = 0.1,
        drift_threshold_critical: float = 0.2,
        alert_config: AlertConfig | None = None,
        loggers: Sequence[MetricLogger] | None = None,
        *,
        training_config: TrainingConfig | None = None,
        run_dir: Path | None = None,
        plugin_manager: PluginManager | None = None,
    ) -> None:
        if gradient_accumulation_steps < 1:
            msg = f"gradient_accumulation_steps must be >= 1: {gradient_accumulation_steps}"
            raise ValueError(msg)
        if not 0 <= drift_threshold_warning <= drift_threshold_critical <= 1:
            msg = (
                f"Drift thresholds must satisfy 0 <= drift_threshold_warning <= "
                f"drift_threshold_critical <= 1 (JS divergence, base 2): "
                f"{drift_threshold_warning} and {drift_threshold_critical}"
            )
            raise ValueError(msg)
        self.gradient_accumulation_steps = gradient_accumulation_steps
        self.drift_threshold_warning = drift_threshold_warning
        self.drift_threshold_critical = drift_threshold_critical
        self.alert_config = alert_config if alert_config is not None else AlertConfig()
        self.loggers: list[MetricLogger] = list(loggers or ())
        switched_on = _switched_on(use_wandb=use_wandb)
        if switched_on:
            self.loggers += _build_switched_on(
                switched_on, training_config, run_dir, plugin_manager
            )
        self._history: list[dict[str, Any]] = []
        self._alerts: list[dict[str, Any]] = []
        self._alert_history: list[dict[str, Any]] = []
        self._best_val_loss = math.inf
        self._epochs_since_best = 0
        self._last_step: int | None = None

    # -- logging ---------------------------------------------------------------------------

    def _forward(self, metrics: Mapping[str, float], step: int) -> None:
        self._last_step = step if self._last_step is None else max(step, self._last_step)
        for sink in self.loggers:
            sink.log_metrics(metrics, step)

    def log_scalar(self, name: str, value: float | torch.Tensor, step: int) -> None:
        """Send one per-batch figure to the loggers (``train/batch_loss`` ...).

        :param step: the batch step (backward passes so far); loggers receive
            ``step // gradient_accumulation_steps``. A tensor value is read with ``.item()``:
            call this only on the steps you log.
        """
        number = float(value.item()) if isinstance(value, torch.Tensor) else float(value)
        self._forward({name: number}, step // self.gradient_accumulation_steps)

    def log_confidence(
        self, logits: torch.Tensor, labels: torch.Tensor | None, step: int | None = None
    ) -> dict[str, float]:
        """Compute and log prediction confidence: ``top1_confidence``, ``top5_confidence``
        and ``entropy`` (see :func:`confidence_metrics`), under ``confidence/``.

        :param step: batch step as in :meth:`log_scalar`; ``None`` logs at the latest step seen.
        :returns: the three figures.
        """
        figures = confidence_metrics(logits, labels)
        if step is not None:
            logged_step = step // self.gradient_accumulation_steps
        else:
            logged_step = self._last_step or 0
        self._forward({f"confidence/{name}": value for name, value in figures.items()}, logged_step)
        return figures

    def log_epoch(
        self,
        epoch: int,
        train_metrics: Mapping[str, float],
        val_metrics: Mapping[str, float] | None,
        learning_rate: float,
        gradient_norm: float,
        epoch_duration: float = 0.0,
        reference_profile: DataProfile | None = None,
        current_profile: DataProfile | None = None,
        *,
        step: int | None = None,
    ) -> DriftMetrics:
        """Record an epoch, check drift and alerts, and forward the row to the loggers.

        :param train_metrics: ``{"loss": ..., "accuracy": ...}`` (a ``train_`` prefix is
            accepted and dropped); stored as ``train_<name>``.
        :param val_metrics: likewise, stored as ``val_<name>``; ``None`` without validation.
        :param reference_profile: the training data's profile, and ``current_profile`` the
            profile of the data the model sees now, built with the reference's edges. Give both
            or neither.
        :param step: the optimizer step to log the row at (default: the latest step any call
            logged, else ``epoch``).
        :returns: the :class:`DriftMetrics`; without profiles a ``healthy`` one with
            ``num_features == 0`` (nothing was compared).
        :raises ValueError: only one of the two profiles was given.
        """
        if (reference_profile is None) != (current_profile is None):
            msg = (
                "log_epoch needs both reference_profile (the training data's) and "
                "current_profile (the new data's), or neither."
            )
            raise ValueError(msg)
        if reference_profile is not None and current_profile is not None:
            drift = compute_drift(
                reference_profile,
                current_profile,
                warning_threshold=self.drift_threshold_warning,
                critical_threshold=self.drift_threshold_critical,
            )
        else:
            drift = DriftMetrics(js_divergence=0.0, status="healthy", affected_features=[])
        train = _strip(train_metrics, "train_")
        val = _strip(val_metrics or {}, "val_")
        row: dict[str, Any] = {"epoch": epoch}
        row.update({f"train_{name}": value for name, value in train.items()})
        row.update({f"val_{name}": value for name, value in val.items()})
        row.update(
            learning_rate=float(learning_rate),
            gradient_norm=float(gradient_norm),
            epoch_duration=float(epoch_duration),
        )
        if drift.num_features:
            row.update(drift_js_divergence=drift.js_divergence, drift_status=drift.status)
        previous = self._history[-1] if self._history else None
        self._history.append(row)
        self._alerts = self._check_alerts(row, previous, drift)
        self._alert_history.extend(self._alerts)
        for alert in self._alerts:
            logger.warning("alert %s at epoch %d: %s", alert["type"], epoch + 1, alert["message"])
        numeric = {
            name: float(value) for name, value in row.items() if isinstance(value, int | float)
        }
        if step is None:
            step = self._last_step if self._last_step is not None else epoch
        self._forward(numeric, step)
        return drift

    # -- alerts ----------------------------------------------------------------------------

    def _check_alerts(
        self, row: Mapping[str, Any], previous: Mapping[str, Any] | None, drift: DriftMetrics
    ) -> list[dict[str, Any]]:
        config = self.alert_config
        epoch = int(row["epoch"])
        alerts: list[dict[str, Any]] = []

        def alert(kind: str, severity: str, message: str, value: float, threshold: float) -> None:
            alerts.append(
                {
                    "type": kind,
                    "severity": severity,
                    "message": message,
                    "epoch": epoch,
                    "value": value,
                    "threshold": threshold,
                }
            )

        val_loss = row.get("val_loss")
        if val_loss is not None:
            before = None if previous is None else previous.get("val_loss")
            limit = config.val_loss_spike_threshold
            if not math.isfinite(val_loss):
                alert("val_loss_spike", "critical", f"val_loss is {val_loss}", val_loss, limit)
            elif before is not None and math.isfinite(before) and before > 0:
                rise = (val_loss - before) / before
                if rise > limit:
                    alert(
                        "val_loss_spike",
                        "warning",
                        f"val_loss rose {rise:.1%} ({before:.4g} -> {val_loss:.4g}), more than "
                        f"{limit:.0%}",
                        val_loss,
                        limit,
                    )
            self._track_patience(val_loss, alert)
        accuracy = row.get("val_accuracy")
        before_accuracy = None if previous is None else previous.get("val_accuracy")
        if accuracy is not None and before_accuracy is not None and before_accuracy > 0:
            drop = (before_accuracy - accuracy) / before_accuracy
            limit = config.accuracy_drop_threshold
            if drop > limit or not math.isfinite(accuracy):
                alert(
                    "accuracy_drop",
                    "warning",
                    f"val_accuracy fell {drop:.1%} ({before_accuracy:.4g} -> {accuracy:.4g}), "
                    f"more than {limit:.0%}",
                    accuracy,
                    limit,
                )
        norm = float(row["gradient_norm"])
        if not math.isfinite(norm) or norm > config.gradient_norm_threshold:
            alert(
                "gradient_norm",
                "critical" if not math.isfinite(norm) else "warning",
                f"gradient norm {norm:.4g} is above {config.gradient_norm_threshold:g}",
                norm,
                config.gradient_norm_threshold,
            )
        if drift.status != "healthy":
            threshold = (
                self.drift_threshold_critical
                if drift.status == "critical"
                else self.drift_threshold_warning
            )
            alert(
                "data_drift",
                drift.status,
                f"data drift {drift.status}: JS divergence {drift.js_divergence:.3f} (mean); "
                f"affected features: {', '.join(drift.affected_features)}",
                drift.js_divergence,
                threshold,
            )
        return alerts

    def _track_patience(self, val_loss: float, alert: Any) -> None:
        if math.isfinite(val_loss) and val_loss < self._best_val_loss:
            self._best_val_loss = val_loss
            self._epochs_since_best = 0
            return
        self._epochs_since_best += 1
        patience = self.alert_config.patience_epochs
        if self._epochs_since_best % patience == 0:
            alert(
                "no_improvement",
                "warning",
                f"val_loss has not improved on its best ({self._best_val_loss:.4g}) for "
                f"{self._epochs_since_best} epochs",
                val_loss,
                float(patience),
            )

    def has_alerts(self) -> bool:
        """Whether the latest :meth:`log_epoch` raised any alert."""
        return bool(self._alerts)

    def get_alerts(self) -> list[dict[str, Any]]:
        """The alerts of the latest :meth:`log_epoch`: dicts with ``type`` (one of
        :data:`ALERT_TYPES`), ``message``, ``severity``, ``epoch``, ``value``, ``threshold``."""
        return [dict(alert) for alert in self._alerts]

    def get_alert_history(self) -> list[dict[str, Any]]:
        """Every alert raised in this run, oldest first."""
        return [dict(alert) for alert in self._alert_history]

    # -- reading back ----------------------------------------------------------------------

    @property
    def history(self) -> list[dict[str, Any]]:
        """One dict per logged epoch (``epoch``, ``train_loss``, ``val_loss``, ...)."""
        return [dict(row) for row in self._history]

    def get_summary(self) -> pandas.DataFrame:
        """The history as a pandas DataFrame, one row per epoch (imports pandas on call)."""
        require("pandas", extra="pandas", feature="MetricsEngine.get_summary")
        import pandas

        return pandas.DataFrame(self._history)

    def close(self) -> None:
        """Close every logger, all attempted; the first failure is raised afterwards."""
        errors: list[Exception] = []
        for sink in self.loggers:
            try:
                sink.close()
            except Exception as error:  # every logger must get its close() call
                errors.append(error)
        if errors:
            raise errors[0]
