"""ExperimentDB: runs with their configs, statuses and metrics, kept in an experiment store.

A thin layer over a :class:`~treadle.storage.ExperimentStore`: it checks arguments and
shapes results (records, dicts, pandas DataFrames). Queries show the live timeline: rows an
attempt logged before it died and a resumed attempt logged again are marked superseded and
left out unless asked for.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from treadle.errors import ConfigError, UnknownNameError
from treadle.optional import require
from treadle.owner import LEASE_SECONDS, ProcessOwner
from treadle.storage import (
    DEFAULT_LOCATION,
    RUN_STATUSES,
    MetricRow,
    MetricValues,
    RunRecord,
    check_json,
    check_name,
    check_text,
    open_store,
)

if TYPE_CHECKING:
    import pandas

    from treadle.plugins import PluginManager
    from treadle.storage import ExperimentStore

__all__ = ["ExperimentDB", "RunRecord", "check_config", "metric_value"]

logger = logging.getLogger(__name__)

METRIC_COLUMNS = ("run_id", "attempt", "name", "value", "epoch", "step", "logged_at", "superseded")
RUN_COLUMNS = (
    "run_id",
    "run_name",
    "status",
    "created_at",
    "ended_at",
    "attempt",
    "notes",
    "run_dir",
    "error",
    "owner_pid",
    "owner_host",
    "heartbeat_at",
)
_REDUCTIONS = ("last", "min", "max")


def check_config(config: object, path: str = "config") -> dict[str, Any]:
    """``config`` as JSON data by the stores' one rule (:func:`treadle.storage.check_json`),
    copied; an object with ``to_dict()`` (a :class:`~treadle.config.TrainingConfig`) gives
    its dict.

    :raises ConfigError: naming the key and what is wrong with its value.
    """
    to_dict = getattr(config, "to_dict", None)
    if callable(to_dict) and not isinstance(config, Mapping):
        config = to_dict()
    return check_json(config, path)


def metric_value(value: object, name: str) -> float | None:
    """A metric value as stored: a float, ``None`` for NaN (stores keep NaN as NULL).

    :raises ConfigError: not a number.
    """
    if isinstance(value, bool):
        msg = f"metric {name!r} must be a number, not a bool: {value!r}"
        raise ConfigError(msg)
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        msg = f"metric {name!r} must be a number: {value!r:.60}"
        raise ConfigError(msg) from None
    return None if math.isnan(number) else number


def _check_step(value: object, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        msg = f"{what} must be an integer >= 0 or None: {value!r}"
        raise ConfigError(msg)
    return int(value)


def _check_run_id(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"run_id must be an integer: {value!r}"
        raise ConfigError(msg)
    return value


def _lease(owner: ProcessOwner | None, lease_seconds: float | None) -> float | None:
    if owner is None:
        return None
    return LEASE_SECONDS if lease_seconds is None else float(lease_seconds)


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


class ExperimentDB:
    """Experiment runs: config, notes, status and metrics, queryable as DataFrames.

    :param location: a path or ``sqlite:///path`` (the SQLite plugin), or any scheme a
        storage plugin registers; may be shared with the model registry and the job queue.
    :param plugin_manager: where the storage backend is looked up (default: the global one).
    :raises StorageError: the location is not a treadle store or holds a newer schema.
    """

    def __init__(
        self,
        location: str | Path = DEFAULT_LOCATION,
        *,
        plugin_manager: PluginManager | None = None,
    ) -> None:
        self.location = str(location)
        self.store: ExperimentStore = open_store(self.location, "experiments", plugin_manager)

    def close(self) -> None:
        """Close the store's connection."""
        self.store.close()

    def __enter__(self) -> ExperimentDB:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- writing -------------------------------------------------------------------------

    def log_run(
        self,
        run_name: str,
        config: Mapping[str, Any] | Any = None,
        notes: str = "",
        *,
        run_dir: str | Path | None = None,
        status: str = "running",
        owner: ProcessOwner | None = None,
        lease_seconds: float | None = None,
    ) -> int:
        """Record a new run; returns its ``run_id``.

        :param config: the run's configuration: JSON data, or an object with ``to_dict()``
            (a :class:`~treadle.config.TrainingConfig`).
        :param run_dir: the run's folder, by which a resumed run finds its record.
        :param status: ``running`` (the default), or any of :data:`~treadle.storage.RUN_STATUSES`.
        :param owner: the process running it (:func:`treadle.owner.current_owner`): with it,
            the run is reported ``died`` once that process is gone from this machine or its
            heartbeats (:meth:`heartbeat`) stop for longer than ``lease_seconds``.
        :param lease_seconds: how long the first heartbeat vouches for the run
            (:data:`treadle.owner.LEASE_SECONDS` by default, with an owner).
        :raises ConfigError: a malformed name, status or config (the key named).
        """
        check_name(run_name, "run name")
        check_text(notes, "notes")
        folder = None if run_dir is None else check_text(str(run_dir), "run_dir")
        self._check_status(status)
        data = check_config({} if config is None else config)
        return self.store.create_run(
            run_name=run_name,
            config=data,
            notes=notes,
            run_dir=folder,
            status=status,
            owner=owner,
            lease_seconds=_lease(owner, lease_seconds),
        )

    def log_metric(
        self,
        run_id: int,
        name: str,
        value: float,
        epoch: int | None = None,
        step: int | None = None,
    ) -> None:
        """Record one value of metric ``name`` (any text, ``/`` and quotes included) now.

        NaN is stored (as NULL) and never counts as best.

        :raises UnknownNameError: no run has this id.
        :raises ConfigError: a malformed name, value, epoch or step.
        """
        self.log_metrics(run_id, {name: value}, epoch=epoch, step=step)

    def log_metrics(
        self,
        run_id: int,
        metrics: Mapping[str, float],
        *,
        epoch: int | None = None,
        step: int | None = None,
    ) -> None:
        """Record several metrics at one epoch and step, in one transaction.

        :raises UnknownNameError: no run has this id.
        :raises ConfigError: a malformed name, value, epoch or step.
        """
        epoch = _check_step(epoch, "epoch")
        step = _check_step(step, "step")
        now = time.time()
        rows: list[MetricValues] = [
            (check_name(name, "metric name"), metric_value(value, name), epoch, step, now)
            for name, value in metrics.items()
        ]
        self.store.add_metrics(_check_run_id(run_id), None, rows)

    def resume_run(
        self,
        run_id: int,
        from_step: int | None,
        *,
        owner: ProcessOwner | None = None,
        lease_seconds: float | None = None,
    ) -> int:
        """Start the next attempt of a run resumed from a checkpoint at optimizer step
        ``from_step``: rows earlier attempts logged after it are marked superseded (the new
        attempt logs those steps again). Returns the attempt number.

        :param owner: the process of the new attempt, as for :meth:`log_run`.
        :raises UnknownNameError: no run has this id.
        """
        return self.store.start_attempt(
            _check_run_id(run_id),
            _check_step(from_step, "from_step"),
            owner=owner,
            lease_seconds=_lease(owner, lease_seconds),
        )

    def heartbeat(self, run_id: int, attempt: int, lease_seconds: float = LEASE_SECONDS) -> bool:
        """Mark attempt ``attempt`` of a running run alive for ``lease_seconds`` more (call it
        every :data:`~treadle.owner.HEARTBEAT_SECONDS`). Returns ``False``, changing nothing,
        when the run is no longer running or a later attempt took it over.

        :raises ConfigError: ``lease_seconds`` is not a positive number.
        """
        if isinstance(lease_seconds, bool) or not (
            isinstance(lease_seconds, int | float) and 0 < lease_seconds < math.inf
        ):
            msg = f"lease_seconds must be a positive number: {lease_seconds!r}"
            raise ConfigError(msg)
        return self.store.heartbeat(_check_run_id(run_id), int(attempt), float(lease_seconds))

    def update_run(
        self,
        run_id: int,
        *,
        status: str | None = None,
        error: str | None = None,
        summary: Mapping[str, Any] | None = None,
    ) -> None:
        """Set a run's status (``completed``, ``failed``, ``interrupted`` and ``died`` stamp
        ``ended_at``), its error text, and merge ``summary`` (JSON data:
        ``best_checkpoint``, ...) into its summary.

        :raises UnknownNameError: no run has this id.
        """
        if status is not None:
            self._check_status(status)
        if error is not None:
            # error text comes from exceptions: kept, with a NUL written as \x00
            error = str(error).replace("\x00", "\\x00")
        data = None if summary is None else check_json(summary, "summary")
        self.store.update_run(_check_run_id(run_id), status=status, error=error, summary=data)

    @staticmethod
    def _check_status(status: str) -> None:
        if status not in RUN_STATUSES:
            msg = f"run status must be one of {', '.join(RUN_STATUSES)}: {status!r}"
            raise ConfigError(msg)

    # -- reading -------------------------------------------------------------------------

    def get_run(self, run_id: int) -> RunRecord:
        """:raises UnknownNameError: no run has this id."""
        return self.store.get_run(_check_run_id(run_id))

    def find_runs(
        self,
        *,
        name: str | None = None,
        status: str | None = None,
        run_dir: str | Path | None = None,
        limit: int | None = None,
    ) -> list[RunRecord]:
        """Runs matching every given filter, newest first. ``status="died"`` finds the runs
        still marked ``running`` whose process is gone (and only those: ``running`` finds the
        live ones)."""
        if status is not None:
            self._check_status(status)
        return self.store.find_runs(
            name=name,
            status=status,
            run_dir=None if run_dir is None else str(run_dir),
            limit=limit,
        )

    def list_runs(
        self, limit: int | None = None, *, name: str | None = None, status: str | None = None
    ) -> pandas.DataFrame:
        """Runs, newest first, as a DataFrame with :data:`RUN_COLUMNS`."""
        require("pandas", extra="pandas", feature="ExperimentDB.list_runs")
        import pandas

        runs = self.find_runs(name=name, status=status, limit=limit)
        return pandas.DataFrame(
            [{column: getattr(run, column) for column in RUN_COLUMNS} for run in runs],
            columns=list(RUN_COLUMNS),
        )

    def metric_rows(
        self,
        run_ids: Sequence[int],
        *,
        names: Sequence[str] | None = None,
        include_superseded: bool = False,
    ) -> list[MetricRow]:
        """The metric rows of the runs (live ones unless ``include_superseded``), by run,
        then step and epoch."""
        ids = [_check_run_id(run_id) for run_id in run_ids]
        return self.store.get_metrics(ids, names=names, include_superseded=include_superseded)

    def get_metrics(
        self,
        run_id: int,
        names: Sequence[str] | None = None,
        *,
        include_superseded: bool = False,
    ) -> pandas.DataFrame:
        """A run's metrics as a long DataFrame, one row per logged value, with
        :data:`METRIC_COLUMNS` (``logged_at`` as ISO 8601 text, NaN where NaN was logged).

        :param names: only these metrics.
        :param include_superseded: also rows of dead attempts that a resume replaced
            (``superseded`` True).
        :raises UnknownNameError: no run has this id.
        """
        require("pandas", extra="pandas", feature="ExperimentDB.get_metrics")
        import pandas

        self.get_run(run_id)
        rows = self.metric_rows([run_id], names=names, include_superseded=include_superseded)
        frame = pandas.DataFrame(
            [
                (
                    row.run_id,
                    row.attempt,
                    row.name,
                    row.value,
                    row.epoch,
                    row.step,
                    _iso(row.logged_at),
                    row.superseded,
                )
                for row in rows
            ],
            columns=list(METRIC_COLUMNS),
        )
        for column in ("epoch", "step"):
            frame[column] = frame[column].astype("Int64")
        return frame

    def get_history(self, run_id: int) -> pandas.DataFrame:
        """A run's epoch-level metrics, one row per epoch and one column per metric (the
        last live value logged at that epoch), like :meth:`MetricsTracker.get_summary
        <treadle.engine.tracker.MetricsTracker.get_summary>`.

        :raises UnknownNameError: no run has this id.
        """
        require("pandas", extra="pandas", feature="ExperimentDB.get_history")
        import pandas

        self.get_run(run_id)
        table: dict[int, dict[str, float]] = {}
        for row in self.metric_rows([run_id]):
            if row.epoch is not None:
                table.setdefault(row.epoch, {})[row.name] = row.value
        frame = pandas.DataFrame([{"epoch": epoch, **table[epoch]} for epoch in sorted(table)])
        if frame.empty:
            frame = pandas.DataFrame({"epoch": pandas.Series(dtype="int64")})
        return frame

    def compare_runs(
        self,
        run_ids: Sequence[int],
        metrics: Sequence[str] | None = None,
        *,
        reduce: str = "last",
    ) -> pandas.DataFrame:
        """Runs side by side: ``run_id``, ``run_name``, ``status``, ``created_at`` and one
        column per metric (default: every metric the runs logged).

        :param reduce: the value shown per metric: ``last`` (the final live value),
            ``min`` or ``max`` (NaN ignored).
        :raises UnknownNameError: an id names no run; the message lists every such id.
        """
        require("pandas", extra="pandas", feature="ExperimentDB.compare_runs")
        import pandas

        if reduce not in _REDUCTIONS:
            msg = f"reduce must be one of {', '.join(_REDUCTIONS)}: {reduce!r}"
            raise ConfigError(msg)
        ids = [_check_run_id(run_id) for run_id in run_ids]
        runs = {run.run_id: run for run in self.store.find_runs(run_ids=ids)}
        missing = [run_id for run_id in ids if run_id not in runs]
        if missing:
            msg = f"No run with id {', '.join(map(str, missing))} in {self.location}."
            raise UnknownNameError(msg)
        names = list(metrics) if metrics is not None else self.store.metric_names(ids)
        values: dict[tuple[int, str], float] = {}
        for row in self.metric_rows(ids, names=names):
            key = (row.run_id, row.name)
            previous = values.get(key)
            if reduce == "last" or previous is None or math.isnan(previous):
                values[key] = row.value
            elif not math.isnan(row.value):
                better = min if reduce == "min" else max
                values[key] = better(previous, row.value)
        columns = ["run_id", "run_name", "status", "created_at"]
        records = []
        for run_id in ids:
            run = runs[run_id]
            record: dict[str, Any] = {
                "run_id": run.run_id,
                "run_name": run.run_name,
                "status": run.status,
                "created_at": run.created_at,
            }
            for name in names:
                column = f"metric:{name}" if name in columns else name
                record[column] = values.get((run_id, name), math.nan)
            records.append(record)
        metric_columns = [f"metric:{name}" if name in columns else name for name in names]
        return pandas.DataFrame(records, columns=[*columns, *metric_columns])

    def get_best_run(self, metric: str, mode: str = "min") -> dict[str, Any]:
        """The run with the best live value of ``metric``; NaN is never best.

        :param mode: ``min`` (losses) or ``max`` (accuracies).
        :returns: ``run_id``, ``run_name``, ``status``, ``best_value``, ``epoch``,
            ``step``, ``created_at``, ``notes``, ``config``.
        :raises UnknownNameError: no run logged a number for ``metric``; the message lists
            the metric names there are.
        :raises ConfigError: ``mode`` is neither ``min`` nor ``max``.
        """
        if mode not in ("min", "max"):
            msg = f"mode must be 'min' or 'max': {mode!r}"
            raise ConfigError(msg)
        best = self.store.best_values(metric, mode, 1)
        if not best:
            known = self.store.metric_names()
            listing = ", ".join(json.dumps(name) for name in known[:30]) or "none"
            msg = f"No run logged a number for metric {metric!r}. Metrics logged: {listing}."
            raise UnknownNameError(msg)
        run_id, value, epoch, step = best[0]
        run = self.store.get_run(run_id)
        return {
            "run_id": run.run_id,
            "run_name": run.run_name,
            "status": run.status,
            "best_value": value,
            "epoch": epoch,
            "step": step,
            "created_at": run.created_at,
            "notes": run.notes,
            "config": run.config,
        }
