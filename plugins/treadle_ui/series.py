"""Metric rows into chart data: one series per metric (or per run, when overlaying), on a
step or an epoch axis, downsampled on the server so a page stays fast at any run length.

Downsampling keeps, per bucket of consecutive points, the lowest and the highest value (and
always the first and the last point): a loss spike or a NaN gap survives, which an average
or a stride would hide.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import attrs

from treadle.storage import MetricRow

__all__ = [
    "AXES",
    "Axis",
    "Chart",
    "Series",
    "build_charts",
    "downsample",
    "fingerprint",
    "series_points",
]

Axis = Literal["step", "epoch"]
AXES: tuple[Axis, ...] = ("step", "epoch")
#: the chart that gathers every loss curve of a run, drawn first
LOSS_CHART = "loss"


@attrs.frozen(kw_only=True)
class Series:
    """One curve: ``xs`` and ``ys`` as drawn (``None`` where NaN was logged).

    :ivar total: points logged; ``len(xs)`` is smaller when the series was downsampled.
    :ivar axis: what ``xs`` counts: ``step``, ``epoch``, or ``row`` (the logging order, for
        rows that carry neither).
    :ivar aggregated: on the epoch axis, ``True`` when several rows per epoch were averaged.
    """

    label: str
    xs: tuple[float, ...]
    ys: tuple[float | None, ...]
    total: int
    axis: str
    aggregated: bool = False
    color: int = 0

    @property
    def is_downsampled(self) -> bool:
        return len(self.xs) < self.total


@attrs.frozen(kw_only=True)
class Chart:
    """One panel: its series share the x axis."""

    key: str
    title: str
    axis: str
    series: tuple[Series, ...]

    def to_json(self) -> dict[str, Any]:
        """uPlot's aligned form: one ``x`` (the union of the series' x values) and per series
        its values at those x, ``None`` where it has no point."""
        xs = sorted({x for series in self.series for x in series.xs})
        position = {x: index for index, x in enumerate(xs)}
        payload = []
        for series in self.series:
            values: list[float | None] = [None] * len(xs)
            for x, y in zip(series.xs, series.ys, strict=True):
                values[position[x]] = y
            payload.append(
                {
                    "label": series.label,
                    "values": values,
                    "points": len(series.xs),
                    "total": series.total,
                    "downsampled": series.is_downsampled,
                    "aggregated": series.aggregated,
                    "color": series.color,
                }
            )
        return {
            "key": self.key,
            "title": self.title,
            "axis": self.axis,
            "x": xs,
            "series": payload,
        }


def downsample(
    xs: Sequence[float], ys: Sequence[float | None], max_points: int
) -> tuple[tuple[float, ...], tuple[float | None, ...]]:
    """At most ``max_points`` points of a curve: the first, the last, and per bucket of
    consecutive points its lowest and highest value in their order (``None`` values: the
    bucket's first point, so a gap stays visible when a bucket holds nothing else)."""
    count = len(xs)
    if count <= max_points:
        return tuple(xs), tuple(ys)
    buckets = max(1, (max_points - 2) // 2)
    keep = {0, count - 1}
    inner = count - 2
    for bucket in range(buckets):
        start = 1 + bucket * inner // buckets
        stop = 1 + (bucket + 1) * inner // buckets
        lowest = highest = None
        for index in range(start, stop):
            value = ys[index]
            if value is None:
                continue
            if lowest is None or value < ys[lowest]:  # type: ignore[operator]
                lowest = index
            if highest is None or value > ys[highest]:  # type: ignore[operator]
                highest = index
        if lowest is None or highest is None:
            if start < stop:
                keep.add(start)
            continue
        keep.add(lowest)
        keep.add(highest)
    chosen = sorted(keep)
    return tuple(xs[index] for index in chosen), tuple(ys[index] for index in chosen)


def _value(row: MetricRow) -> float | None:
    return None if math.isnan(row.value) else row.value


def series_points(
    rows: Sequence[MetricRow], axis: Axis
) -> tuple[list[float], list[float | None], str, bool]:
    """One metric's rows as ``(xs, ys, axis_used, aggregated)``.

    On the step axis rows are placed at their step; on the epoch axis at their epoch counted
    from 1 as people read it (the stored epoch + 1), the mean of the epoch's values when a
    metric has several rows per epoch (a per-step metric).
    Rows lacking the wanted field fall back to the other one, then to their order.
    """
    steps = [row.step for row in rows]
    epochs = [row.epoch for row in rows]
    has_steps = all(step is not None for step in steps)
    has_epochs = all(epoch is not None for epoch in epochs)
    if axis == "epoch" and has_epochs:
        grouped: dict[int, list[float]] = {}
        missing: set[int] = set()
        for row in rows:
            epoch = int(row.epoch)  # type: ignore[arg-type]
            value = _value(row)
            if value is None:
                missing.add(epoch)
                grouped.setdefault(epoch, [])
            else:
                grouped.setdefault(epoch, []).append(value)
        aggregated = len(grouped) < len(rows)
        xs = sorted(grouped)
        ys = [
            (sum(grouped[epoch]) / len(grouped[epoch])) if grouped[epoch] else None for epoch in xs
        ]
        return [float(x + 1) for x in xs], ys, "epoch", aggregated
    if has_steps:
        return [float(step) for step in steps], [_value(row) for row in rows], "step", False  # type: ignore[arg-type]
    if has_epochs:
        return [float(epoch + 1) for epoch in epochs], [_value(row) for row in rows], "epoch", False  # type: ignore[operator]
    return [float(index) for index in range(len(rows))], [_value(row) for row in rows], "row", False


def _group(rows: Iterable[MetricRow], key: Any) -> dict[Any, list[MetricRow]]:
    grouped: dict[Any, list[MetricRow]] = {}
    for row in rows:
        grouped.setdefault(key(row), []).append(row)
    return grouped


def _is_loss(name: str) -> bool:
    return name.rsplit("/", 1)[-1].endswith("loss")


def build_charts(
    rows: Iterable[MetricRow],
    *,
    axis: Axis,
    max_points: int,
    run_labels: Mapping[int, str] | None = None,
) -> list[Chart]:
    """Charts of metric rows.

    One run (``run_labels`` is ``None``): a ``loss`` chart with every metric whose name ends
    in ``loss``, then one chart per other metric, by name. Several runs: one chart per
    metric, one series per run, labelled by ``run_labels``; a run keeps its colour (its
    position in ``run_labels``) in every chart, also where an earlier run lacks the metric.
    """
    by_name = _group(rows, lambda row: row.name)
    charts: list[Chart] = []
    if run_labels is None:
        losses = sorted(name for name in by_name if _is_loss(name))
        groups: list[tuple[str, str, list[tuple[str, int, list[MetricRow]]]]] = []
        if losses:
            groups.append(
                (
                    LOSS_CHART,
                    "loss",
                    [(name, index, by_name[name]) for index, name in enumerate(losses)],
                )
            )
        for name in sorted(name for name in by_name if not _is_loss(name)):
            groups.append((f"metric:{name}", name, [(name, 0, by_name[name])]))
    else:
        groups = []
        for name in sorted(by_name, key=lambda name: (not _is_loss(name), name)):
            per_run = _group(by_name[name], lambda row: row.run_id)
            groups.append(
                (
                    f"metric:{name}",
                    name,
                    [
                        (label, index, per_run[run_id])
                        for index, (run_id, label) in enumerate(run_labels.items())
                        if run_id in per_run
                    ],
                )
            )
    for key, title, members in groups:
        by_axis: dict[str, list[Series]] = {}
        for label, color, series_rows in members:
            xs, ys, used, aggregated = series_points(series_rows, axis)
            total = len(xs)
            shown_xs, shown_ys = downsample(xs, ys, max_points)
            by_axis.setdefault(used, []).append(
                Series(
                    label=label,
                    xs=shown_xs,
                    ys=shown_ys,
                    total=total,
                    axis=used,
                    aggregated=aggregated,
                    color=color,
                )
            )
        for used, series in by_axis.items():
            suffix = "" if len(by_axis) == 1 else f" (by {used})"
            chart_key = key if len(by_axis) == 1 else f"{key}:{used}"
            charts.append(
                Chart(key=chart_key, title=title + suffix, axis=used, series=tuple(series))
            )
    return charts


def fingerprint(parts: Iterable[object]) -> str:
    """A short hash of ``parts``: the version a polling page compares to skip redrawing."""
    digest = hashlib.blake2b(digest_size=8)
    for part in parts:
        digest.update(repr(part).encode())
        digest.update(b"\x00")
    return digest.hexdigest()
