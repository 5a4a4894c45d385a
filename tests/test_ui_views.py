"""The pieces under ``treadle ui``'s pages: downsampling, axes, the lineage layout, checkpoint
listings, alert replay, time zones and how values read."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from treadle.storage import MetricRow, ModelRegistryEntry
from treadle_ui.formatting import format_bytes, format_duration, format_number, status_tone
from treadle_ui.jobs_view import local_time
from treadle_ui.lineage import NODE_WIDTH, layout_lineage
from treadle_ui.run_detail import flatten_config, read_checkpoints, replay_alerts
from treadle_ui.series import build_charts, downsample, series_points


def row(name: str, value: float, epoch: int | None, step: int | None, run_id: int = 1) -> MetricRow:
    return MetricRow(
        run_id=run_id,
        attempt=1,
        name=name,
        value=value,
        epoch=epoch,
        step=step,
        logged_at=0.0,
        superseded=False,
    )


values = st.lists(
    st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False, width=32)),
    min_size=0,
    max_size=400,
)


@given(values, st.integers(min_value=10, max_value=120))
@settings(max_examples=150, deadline=None)
def test_downsampling_keeps_the_ends_and_every_buckets_extremes(
    ys: list[float | None], max_points: int
) -> None:
    xs = [float(index) for index in range(len(ys))]
    shown_xs, shown_ys = downsample(xs, ys, max_points)
    assert len(shown_xs) == len(shown_ys)
    assert list(shown_xs) == sorted(shown_xs)
    if len(xs) <= max_points:
        assert (list(shown_xs), list(shown_ys)) == (xs, ys)
        return
    assert len(shown_xs) <= max_points
    assert shown_xs[0] == xs[0]
    assert shown_xs[-1] == xs[-1]
    finite = [value for value in ys if value is not None]
    if finite:
        kept = [value for value in shown_ys if value is not None]
        assert min(finite) in kept
        assert max(finite) in kept
    assert all(ys[int(x)] == y for x, y in zip(shown_xs, shown_ys, strict=True))


def test_the_epoch_axis_averages_a_per_step_metric_and_keeps_an_epoch_metric() -> None:
    rows = [row("train/batch_loss", value, 0, step) for step, value in ((1, 4.0), (2, 2.0))]
    rows += [row("train/batch_loss", 1.0, 1, 3), row("train/batch_loss", math.nan, 2, 4)]
    xs, ys, axis, aggregated = series_points(rows, "epoch")
    # stored epochs 0-2 drawn as epochs 1-3, as a person counts them
    assert (xs, ys, axis, aggregated) == ([1.0, 2.0, 3.0], [3.0, 1.0, None], "epoch", True)
    epoch_rows = [row("val_loss", 0.5, 0, 2), row("val_loss", 0.25, 1, 3)]
    assert series_points(epoch_rows, "epoch") == ([1.0, 2.0], [0.5, 0.25], "epoch", False)
    assert series_points(epoch_rows, "step") == ([2.0, 3.0], [0.5, 0.25], "step", False)


def test_rows_without_steps_fall_back_to_epochs_then_to_their_order() -> None:
    by_epoch = [row("acc", 0.5, 0, None), row("acc", 0.6, 1, None)]
    assert series_points(by_epoch, "step")[:3] == ([1.0, 2.0], [0.5, 0.6], "epoch")
    bare = [row("acc", 0.5, None, None), row("acc", 0.6, None, None)]
    assert series_points(bare, "step")[:3] == ([0.0, 1.0], [0.5, 0.6], "row")


def test_a_run_gets_a_loss_panel_first_then_one_per_metric() -> None:
    rows = [
        row("val_accuracy", 0.9, 0, 2),
        row("train/batch_loss", 1.0, 0, 1),
        row("val_loss", 0.8, 0, 2),
        row("gradient_norm", 0.3, 0, 2),
    ]
    charts = build_charts(rows, axis="step", max_points=100)
    assert [chart.key for chart in charts] == [
        "loss",
        "metric:gradient_norm",
        "metric:val_accuracy",
    ]
    loss = charts[0].to_json()
    assert loss["x"] == [1.0, 2.0]
    assert [series["values"] for series in loss["series"]] == [[1.0, None], [None, 0.8]]


def _entry(model_id: int, parent: int | None) -> ModelRegistryEntry:
    return ModelRegistryEntry(
        model_id=model_id,
        name="m",
        version=f"1.{model_id}",
        checkpoint_path="x.pt",
        task_type="classification",
        config_hash="",
        training_run_id=model_id * 10,
        parent_model_id=parent,
        created_at="2026-01-01T00:00:00+00:00",
        metrics={},
        export_formats=(),
        model_size_mb=0.0,
        memory_req_gb=0.0,
        status="active",
        tags=(),
    )


def test_the_lineage_puts_each_parent_left_of_its_children() -> None:
    # 1 -> 2 -> 4, 1 -> 3; 5 has a parent (99) that is not drawn
    graph = layout_lineage(
        [_entry(1, None), _entry(2, 1), _entry(3, 1), _entry(4, 2), _entry(5, 99)], focus=2
    )
    nodes = {node.entry.model_id: node for node in graph.nodes}
    assert {(edge.parent, edge.child) for edge in graph.edges} == {(1, 2), (1, 3), (2, 4)}
    for edge in graph.edges:
        assert nodes[edge.parent].x + NODE_WIDTH < nodes[edge.child].x
    assert nodes[2].x == nodes[3].x
    assert nodes[2].y != nodes[3].y
    assert nodes[5].x == nodes[1].x  # starts a line of its own
    assert [node.entry.model_id for node in graph.nodes if node.is_focus] == [2]
    assert graph.width >= max(node.x for node in graph.nodes) + NODE_WIDTH


def test_checkpoints_come_from_the_manifest_and_never_from_outside_the_folder(
    tmp_path: Path,
) -> None:
    (tmp_path / "epoch_000.pt").write_bytes(b"x" * 1000)
    (tmp_path / "epoch_001.pt").write_bytes(b"x" * 2000)
    manifest = {
        "format": "treadle.checkpoints",
        "format_version": 1,
        "checkpoints": [
            {"file": "epoch_000.pt", "epoch": 0, "step": 8, "size_bytes": 1000,
             "metrics": {"val_loss": 0.5}, "timestamp": "2026-01-01T00:00:00+00:00"},
            {"file": "epoch_001.pt", "epoch": 1, "step": 16, "size_bytes": 2000,
             "metrics": {"val_loss": "nan"}, "is_best": True},
            {"file": "../../etc/passwd", "epoch": 2, "step": 24, "size_bytes": 1},
            {"file": "epoch_002.pt", "epoch": 2, "step": 24, "size_bytes": 3000},
        ],
    }  # fmt: skip
    (tmp_path / "checkpoints.json").write_text(json.dumps(manifest), encoding="utf-8")
    listing = read_checkpoints(str(tmp_path))
    assert [item.file for item in listing.checkpoints] == [
        "epoch_000.pt",
        "epoch_001.pt",
        "epoch_002.pt",
    ]
    assert [item.size_bytes for item in listing.checkpoints] == [1000, 2000, 3000]
    assert [item.exists for item in listing.checkpoints] == [True, True, False]
    assert [item.is_best for item in listing.checkpoints] == [False, True, False]
    assert math.isnan(listing.checkpoints[1].metrics["val_loss"])
    assert listing.total_bytes == 3000
    (tmp_path / "checkpoints.json").write_text("{broken", encoding="utf-8")
    fallback = read_checkpoints(str(tmp_path))
    assert [item.file for item in fallback.checkpoints] == ["epoch_000.pt", "epoch_001.pt"]
    assert "No readable manifest" in (fallback.note or "")
    assert "not on this machine" in (read_checkpoints(str(tmp_path / "gone")).note or "")
    assert read_checkpoints(None).note == "The run recorded no folder."


def test_replayed_alerts_are_those_the_metrics_engine_raises() -> None:
    rows = []
    for epoch, (val_loss, norm) in enumerate([(1.0, 1.0), (1.3, 1.0), (1.3, 150.0)]):
        for name, value in (
            ("train_loss", 1.0),
            ("val_loss", val_loss),
            ("learning_rate", 0.01),
            ("gradient_norm", norm),
        ):
            rows.append(row(name, value, epoch, epoch + 1))
    alerts = replay_alerts(rows, {"gradient_norm_critical": 100.0})
    assert alerts is not None
    assert [(alert["type"], alert["epoch"]) for alert in alerts] == [
        ("val_loss_spike", 1),
        ("gradient_norm", 2),
    ]
    assert replay_alerts([row("val_loss", 1.0, 0, 1)], {}) is None


def test_time_zones_daylight_saving_and_values_read_as_a_person_expects() -> None:
    summer = datetime(2026, 7, 1, 0, 0, tzinfo=UTC)
    winter = datetime(2026, 1, 1, 1, 0, tzinfo=UTC)
    assert local_time(summer, "Europe/Berlin") == "2026-07-01 02:00 CEST"
    assert local_time(winter, "Europe/Berlin") == "2026-01-01 02:00 CET"
    assert local_time(winter, "Not/AZone") == "2026-01-01 01:00 UTC"
    assert status_tone("completed") == "good"
    assert status_tone("died") == "bad"
    assert status_tone("zombie") == "neutral"
    assert [format_number(v) for v in (None, math.nan, math.inf, 0.27428954, 12345, 1e-7)] == [
        "-",
        "NaN",
        "inf",
        "0.2743",
        "12,345",
        "1.000e-07",
    ]
    assert [format_duration(s) for s in (0.25, 42.0, 185, 7440, 3 * 86400)] == [
        "250 ms",
        "42.0 s",
        "3 min 05 s",
        "2 h 04 min",
        "3 d 00 h",
    ]
    assert format_bytes(28_800) == "28.1 KiB"
    assert flatten_config({"a": 1, "b": {"c": [1, 2], "d": {}}, "e": "x"}) == [
        ("a", "1"),
        ("b.c", "[1, 2]"),
        ("b.d", "{}"),
        ("e", '"x"'),
    ]


@pytest.mark.parametrize("max_points", [10, 11, 2000])
def test_downsampling_a_long_curve_stays_within_the_limit(max_points: int) -> None:
    xs = [float(step) for step in range(100_000)]
    ys: list[float | None] = [1.0 / (1 + step) for step in range(100_000)]
    shown, _ = downsample(xs, ys, max_points)
    assert len(shown) <= max_points
