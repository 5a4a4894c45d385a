"""The runs pages' data: a page of the runs table with each run's best validation loss, epochs
and duration; one run with its curves, checkpoints, drift and alerts; runs overlaid.

Everything is read through :class:`~treadle.experiments.ExperimentDB` and its store protocol.
The protocol has no offset and no substring match, so a page ``p`` asks for the newest
``p * size + 1`` runs, and a name search keeps every run's name in memory (names never
change), refreshed with the runs created since.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import attrs

from treadle.storage import RUN_STATUSES, MetricRow, RunRecord
from treadle_ui.series import AXES, Axis, build_charts, fingerprint

if TYPE_CHECKING:
    from treadle.experiments import ExperimentDB

__all__ = [
    "LIVE_STATUSES",
    "RunNameIndex",
    "RunRow",
    "RunsPage",
    "SeriesCache",
    "compare_payload",
    "duration_seconds",
    "list_runs",
    "parse_time",
    "run_payload",
    "summarize_runs",
]

#: statuses whose runs may still log: their pages poll for new points
LIVE_STATUSES = ("running",)
#: the epoch-level metrics that give a run's table columns
_TABLE_METRICS = ("val_loss", "train_loss")
#: runs whose names one store call reads when filtering a name match by status
_CHUNK = 500
#: the newest runs every refresh of the name index reads again: a store whose ids come from
#: a sequence (PostgreSQL) may commit a lower id after a higher one
_REREAD = 64


def parse_time(text: str | None) -> datetime | None:
    """An ISO 8601 time as stores write it (UTC when it carries no zone); ``None`` for
    ``None`` or text that is not a time."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def duration_seconds(run: RunRecord, now: datetime) -> float | None:
    """From creation to end, or to ``now`` while the run has no end."""
    start = parse_time(run.created_at)
    if start is None:
        return None
    end = parse_time(run.ended_at) or now
    return max(0.0, (end - start).total_seconds())


@attrs.frozen(kw_only=True)
class RunRow:
    """One line of the runs table."""

    run: RunRecord
    best_val_loss: float | None
    epochs: int | None
    duration_seconds: float | None


@attrs.frozen(kw_only=True)
class RunsPage:
    """A page of the runs table.

    :ivar matched: how many runs match the name filter (``None``: not known without
        reading every run).
    """

    rows: tuple[RunRow, ...]
    page: int
    page_size: int
    has_next: bool
    status: str | None
    name: str | None
    matched: int | None
    statuses: tuple[str, ...]


def summarize_runs(db: ExperimentDB, runs: Sequence[RunRecord], now: datetime) -> list[RunRow]:
    """Table rows for ``runs``: best ``val_loss`` (NaN never best; the run's summary when it
    logged none), the number of epochs with an epoch-level loss, and the duration."""
    rows_by_run: dict[int, list[MetricRow]] = {}
    if runs:
        for row in db.metric_rows([run.run_id for run in runs], names=list(_TABLE_METRICS)):
            rows_by_run.setdefault(row.run_id, []).append(row)
    table = []
    for run in runs:
        metric_rows = rows_by_run.get(run.run_id, [])
        val_losses = [
            row.value for row in metric_rows if row.name == "val_loss" and math.isfinite(row.value)
        ]
        best = min(val_losses) if val_losses else _summary_number(run.summary, "best_val_loss")
        epochs = {row.epoch for row in metric_rows if row.epoch is not None}
        table.append(
            RunRow(
                run=run,
                best_val_loss=best,
                epochs=len(epochs) if epochs else None,
                duration_seconds=duration_seconds(run, now),
            )
        )
    return table


def _summary_number(summary: dict[str, Any], key: str) -> float | None:
    value = summary.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


class RunNameIndex:
    """Every run's name by id, for substring search the store protocol cannot do.

    Built on first use from one read of every run; later calls read only the runs created
    since (a run's name never changes).
    """

    def __init__(self) -> None:
        self._names: dict[int, str] = {}
        self._lock = threading.Lock()

    def refresh(self, db: ExperimentDB) -> None:
        with self._lock:
            if not self._names:
                self._names = {run.run_id: run.run_name for run in db.store.find_runs()}
                return
            floor = max(self._names)
            limit = _REREAD
            while True:
                runs = db.store.find_runs(limit=limit)
                for run in runs:
                    self._names[run.run_id] = run.run_name
                if len(runs) < limit or runs[-1].run_id <= floor:
                    return
                limit *= 4

    def matching(self, text: str) -> list[int]:
        """Ids of the runs whose name holds ``text`` (case-insensitive), newest first."""
        needle = text.casefold()
        with self._lock:
            return sorted(
                (run_id for run_id, name in self._names.items() if needle in name.casefold()),
                reverse=True,
            )


def list_runs(
    db: ExperimentDB,
    index: RunNameIndex,
    *,
    status: str | None,
    name: str | None,
    page: int,
    page_size: int,
    now: datetime,
) -> RunsPage:
    """Page ``page`` (from 1) of the runs matching ``status`` (exactly, any string the store
    holds) and ``name`` (a case-insensitive part of the name), newest first."""
    page = max(1, page)
    wanted = page * page_size + 1
    matched: int | None = None
    if name:
        index.refresh(db)
        ids = index.matching(name)
        matched = len(ids) if status is None else None
        found: list[RunRecord] = []
        for start in range(0, len(ids), _CHUNK):
            found.extend(db.store.find_runs(run_ids=ids[start : start + _CHUNK], status=status))
            if len(found) >= wanted:
                break
        found.sort(key=lambda run: run.run_id, reverse=True)
    else:
        found = db.store.find_runs(status=status, limit=wanted)
    window = found[(page - 1) * page_size : page * page_size]
    statuses = tuple(
        dict.fromkeys(
            [*RUN_STATUSES, *(run.status for run in window), *([status] if status else [])]
        )
    )
    return RunsPage(
        rows=tuple(summarize_runs(db, window, now)),
        page=page,
        page_size=page_size,
        has_next=len(found) > page * page_size,
        status=status,
        name=name,
        matched=matched,
        statuses=statuses,
    )


class SeriesCache:
    """Chart payloads of finished runs, which cannot change: a revisit costs no metric read.

    Keyed by run, attempt, status, end time, axis and points, so a resumed run (a new
    attempt) is read again.
    """

    def __init__(self, size: int = 32) -> None:
        self._size = size
        self._items: OrderedDict[tuple[Any, ...], dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> dict[str, Any] | None:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def put(self, key: tuple[Any, ...], payload: dict[str, Any]) -> None:
        with self._lock:
            self._items[key] = payload
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)


def _check_axis(axis: str) -> Axis:
    return axis if axis in AXES else "step"


def _series_payload(
    rows: Sequence[MetricRow],
    runs: Iterable[RunRecord],
    *,
    axis: Axis,
    max_points: int,
    run_labels: dict[int, str] | None,
) -> dict[str, Any]:
    run_list = list(runs)
    charts = build_charts(rows, axis=axis, max_points=max_points, run_labels=run_labels)
    last_logged = max((row.logged_at for row in rows), default=0.0)
    return {
        "axis": axis,
        "live": any(run.status in LIVE_STATUSES for run in run_list),
        "runs": [
            {"run_id": run.run_id, "status": run.status, "attempt": run.attempt} for run in run_list
        ],
        "rows": len(rows),
        "last_logged_at": last_logged or None,
        "charts": [chart.to_json() for chart in charts],
        "version": fingerprint(
            [len(rows), last_logged, *((run.status, run.attempt) for run in run_list)]
        ),
    }


def run_payload(
    db: ExperimentDB,
    run: RunRecord,
    *,
    axis: str,
    max_points: int,
    cache: SeriesCache,
) -> dict[str, Any]:
    """A run's charts as JSON data (see :meth:`Chart.to_json
    <treadle_ui.series.Chart.to_json>`), with ``live`` while the run may log more."""
    checked = _check_axis(axis)
    key = (run.run_id, run.attempt, run.status, run.ended_at, checked, max_points)
    if run.status not in LIVE_STATUSES:
        cached = cache.get(key)
        if cached is not None:
            return cached
    rows = db.metric_rows([run.run_id])
    payload = _series_payload(rows, [run], axis=checked, max_points=max_points, run_labels=None)
    if run.status not in LIVE_STATUSES:
        cache.put(key, payload)
    return payload


def compare_payload(
    db: ExperimentDB, runs: Sequence[RunRecord], *, axis: str, max_points: int
) -> dict[str, Any]:
    """Several runs overlaid: one chart per metric, one series per run."""
    labels = {run.run_id: f"#{run.run_id} {run.run_name}" for run in runs}
    rows = db.metric_rows(list(labels)) if labels else []
    return _series_payload(
        rows, runs, axis=_check_axis(axis), max_points=max_points, run_labels=labels
    )
