"""What a run page shows beside its curves: the resolved config as rows, the checkpoints in
its folder with their sizes, drift scores, and the alerts the Trainer raised.

Alerts are not stored with a run: the MetricsEngine logs them as it goes. The page replays
the run's stored epoch rows through a :class:`~treadle.engine.metrics.MetricsEngine` with the
run's thresholds, which raises the same alerts, since an alert depends only on those rows.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from treadle.storage import MetricRow, RunRecord

__all__ = [
    "CheckpointInfo",
    "CheckpointListing",
    "DriftPoint",
    "flatten_config",
    "read_checkpoints",
    "replay_alerts",
    "drift_points",
    "run_folder",
]

#: the manifest CheckpointManager keeps in a run folder (treadle.engine.checkpoints.INDEX_NAME)
_MANIFEST = "checkpoints.json"
_MANIFEST_FORMAT = "treadle.checkpoints"
_CHECKPOINT_FILE = re.compile(r"^epoch_\d{3,}(?:_step_\d{6,})?\.pt$")
#: the names of the MetricsEngine's epoch row that alerts read
_EPOCH_ROW = ("train_loss", "learning_rate", "gradient_norm", "epoch_duration")


@attrs.frozen(kw_only=True)
class CheckpointInfo:
    """One checkpoint file of a run folder.

    :ivar size_bytes: the file's size on disk (the manifest's when the file is gone).
    :ivar exists: whether the file is there now.
    """

    file: str
    path: str
    epoch: int | None
    step: int | None
    size_bytes: int | None
    is_best: bool
    metrics: dict[str, float]
    timestamp: str | None
    exists: bool


@attrs.frozen(kw_only=True)
class CheckpointListing:
    """A run folder's checkpoints, oldest first, or why there are none to show."""

    folder: str | None
    checkpoints: tuple[CheckpointInfo, ...] = ()
    note: str | None = None

    @property
    def total_bytes(self) -> int:
        return sum(item.size_bytes or 0 for item in self.checkpoints if item.exists)


def run_folder(run: RunRecord) -> str | None:
    """The run's folder: as recorded, else as its summary reports it."""
    folder = run.run_dir or run.summary.get("run_dir")
    return str(folder) if folder else None


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def read_checkpoints(folder: str | None) -> CheckpointListing:
    """The checkpoints of ``folder`` from its manifest (read only; nothing is written or
    swept), else from the checkpoint files found there."""
    if folder is None:
        return CheckpointListing(folder=None, note="The run recorded no folder.")
    root = Path(folder)
    if not root.is_dir():
        return CheckpointListing(
            folder=folder,
            note="The run's folder is not on this machine (or was removed).",
        )
    manifest = _read_manifest(root)
    if manifest is not None:
        note = None if manifest else "No checkpoint kept yet."
        return CheckpointListing(folder=folder, checkpoints=tuple(manifest), note=note)
    files = sorted(path for path in root.iterdir() if _CHECKPOINT_FILE.match(path.name))
    listed = tuple(
        CheckpointInfo(
            file=path.name,
            path=str(path),
            epoch=None,
            step=None,
            size_bytes=_size(path),
            is_best=False,
            metrics={},
            timestamp=None,
            exists=True,
        )
        for path in files
    )
    note = None if listed else "No checkpoints in the run's folder."
    if listed:
        note = "No readable manifest: files listed as found, without epochs and metrics."
    return CheckpointListing(folder=folder, checkpoints=listed, note=note)


def _read_manifest(root: Path) -> list[CheckpointInfo] | None:
    try:
        data = json.loads((root / _MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != _MANIFEST_FORMAT:
        return None
    entries = data.get("checkpoints")
    if not isinstance(entries, list):
        return None
    listed = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        name = entry.get("file")
        if not isinstance(name, str) or not _CHECKPOINT_FILE.match(name):
            continue  # never a path outside the folder
        path = root / name
        on_disk = _size(path)
        recorded = entry.get("size_bytes")
        stored_metrics = entry.get("metrics")
        metrics = stored_metrics if isinstance(stored_metrics, dict) else {}
        listed.append(
            CheckpointInfo(
                file=name,
                path=str(path),
                epoch=_int(entry.get("epoch")),
                step=_int(entry.get("step")),
                size_bytes=on_disk if on_disk is not None else _int(recorded),
                is_best=bool(entry.get("is_best", False)),
                metrics={str(key): _float(value) for key, value in metrics.items()},
                timestamp=str(entry["timestamp"]) if entry.get("timestamp") else None,
                exists=on_disk is not None,
            )
        )
    return listed


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    try:
        return float(str(value))
    except ValueError:
        return math.nan


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """``(dotted.key, value as JSON text)`` for every leaf, in the config's order."""
    rows: list[tuple[str, str]] = []
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            rows.extend(flatten_config(value, f"{name}."))
        else:
            rows.append((name, json.dumps(value, ensure_ascii=False)))
    return rows


@attrs.frozen(kw_only=True)
class DriftPoint:
    """One logged drift score with its level against the MetricsEngine's thresholds."""

    name: str
    epoch: int | None
    step: int | None
    value: float
    level: str


def drift_points(rows: Sequence[MetricRow]) -> tuple[list[DriftPoint], float, float]:
    """Rows of metrics named ``drift*`` (``drift_js_divergence``), each rated ``healthy``,
    ``warning`` or ``critical`` by the MetricsEngine's default thresholds; returns the points
    and the two thresholds."""
    from treadle.engine.metrics import MetricsEngine

    engine = MetricsEngine()
    warning, critical = engine.drift_threshold_warning, engine.drift_threshold_critical
    points = []
    for row in rows:
        if not row.name.startswith("drift"):
            continue
        value = row.value
        if math.isnan(value):
            level = "unknown"
        elif value >= critical:
            level = "critical"
        elif value >= warning:
            level = "warning"
        else:
            level = "healthy"
        points.append(
            DriftPoint(name=row.name, epoch=row.epoch, step=row.step, value=value, level=level)
        )
    return points, warning, critical


class _QuietReplay(logging.Filter):
    """Drops the MetricsEngine's alert log lines raised by a replay on this thread."""

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.local, "replaying", False)


_QUIET = _QuietReplay()
_QUIET_LOCK = threading.Lock()
_quiet_installed = False


@contextmanager
def _quiet() -> Iterator[None]:
    global _quiet_installed
    with _QUIET_LOCK:
        if not _quiet_installed:
            logging.getLogger("treadle.engine.metrics").addFilter(_QUIET)
            _quiet_installed = True
    _QUIET.local.replaying = True
    try:
        yield
    finally:
        _QUIET.local.replaying = False


def _epoch_rows(rows: Sequence[MetricRow]) -> dict[int, dict[str, float]]:
    table: dict[int, dict[str, float]] = {}
    for row in rows:
        if row.epoch is None:
            continue
        if row.name in _EPOCH_ROW or (row.name.startswith("val_") and "/" not in row.name):
            table.setdefault(row.epoch, {})[row.name] = row.value
    return table


def replay_alerts(
    rows: Sequence[MetricRow], config: Mapping[str, Any]
) -> list[dict[str, Any]] | None:
    """The alerts the run's MetricsEngine raised, recomputed from its stored epoch rows.

    :returns: the alert dicts (``type``, ``severity``, ``message``, ``epoch``, ...), oldest
        first; ``None`` when the run has no epoch rows of the Trainer (``train_loss`` and
        ``gradient_norm`` per epoch) to replay.
    """
    table = _epoch_rows(rows)
    epochs = [
        epoch
        for epoch in sorted(table)
        if "train_loss" in table[epoch] and "gradient_norm" in table[epoch]
    ]
    if not epochs:
        return None
    from treadle.engine.metrics import AlertConfig, MetricsEngine

    threshold = config.get("gradient_norm_critical")
    alert_config = (
        AlertConfig(gradient_norm_threshold=float(threshold))
        if isinstance(threshold, int | float)
        and not isinstance(threshold, bool)
        and math.isfinite(threshold)
        and threshold >= 0
        else AlertConfig()
    )
    engine = MetricsEngine(alert_config=alert_config, loggers=[])
    with _quiet():
        for epoch in epochs:
            values = table[epoch]
            val = {name: value for name, value in values.items() if name.startswith("val_")}
            engine.log_epoch(
                epoch=epoch,
                train_metrics={"loss": values["train_loss"]},
                val_metrics=val or None,
                learning_rate=values.get("learning_rate", 0.0),
                gradient_norm=values["gradient_norm"],
                epoch_duration=values.get("epoch_duration", 0.0),
            )
    return engine.get_alert_history()
