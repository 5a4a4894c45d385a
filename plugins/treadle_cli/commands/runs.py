"""``treadle runs list|show|best|compare|plot``: the experiment store from the command line. A
run is named by its id or by its run name, when no other run has that name."""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from treadle.errors import TreadleError, UnknownNameError
from treadle.storage import RUN_STATUSES
from treadle_cli.arguments import (
    action_parser,
    add_location_argument,
    require_existing,
    split_names,
)
from treadle_cli.output import format_epoch, format_value, print_json
from treadle_cli.references import ID_OR_NAME_HELP, find_run_id
from treadle_cli.table import format_table

if TYPE_CHECKING:
    from treadle.experiments import ExperimentDB
    from treadle.storage import MetricRow, RunRecord

__all__ = ["RunsCommand", "plot_runs"]

DEFAULT_PLOT_METRICS = ("train_loss", "val_loss")


def _summaries(rows: Iterable[MetricRow]) -> dict[str, dict[str, Any]]:
    """Per metric: the last live value, min and max (NaN ignored), the number of rows."""
    found: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = found.setdefault(row.name, {"last": None, "min": None, "max": None, "count": 0})
        entry["last"] = row.value
        entry["count"] += 1
        if not math.isnan(row.value):
            entry["min"] = row.value if entry["min"] is None else min(entry["min"], row.value)
            entry["max"] = row.value if entry["max"] is None else max(entry["max"], row.value)
    return found


class RunsCommand:
    """``treadle runs ...``."""

    help = "list, show, compare and plot experiment runs"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        what = "experiment store"
        add_location_argument(parser, top=True, what=what)
        actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
        listing = action_parser(actions, "list", "list runs, newest first", what)
        listing.add_argument("--status", choices=RUN_STATUSES)
        listing.add_argument("--name", help="only runs of this name")
        listing.add_argument("--limit", type=int, default=50, help="(default: %(default)s)")
        listing.add_argument("--json", action="store_true", help="print JSON")
        show = action_parser(actions, "show", "one run: status, summary and metrics", what)
        show.add_argument("run", metavar="RUN", help=f"the run: {ID_OR_NAME_HELP}")
        show.add_argument("--json", action="store_true", help="print JSON")
        best = action_parser(actions, "best", "the run with the best value of a metric", what)
        best.add_argument("metric", help="a metric name, e.g. val_loss")
        best.add_argument("--mode", choices=("min", "max"), default="min")
        best.add_argument("--json", action="store_true", help="print JSON")
        compare = action_parser(actions, "compare", "runs side by side", what)
        compare.add_argument("runs", nargs="+", metavar="RUN", help=f"a run: {ID_OR_NAME_HELP}")
        compare.add_argument("--metrics", help="comma-separated metric names (default: all)")
        compare.add_argument("--reduce", choices=("last", "min", "max"), default="last")
        compare.add_argument("--json", action="store_true", help="print JSON")
        plot = action_parser(actions, "plot", "write a PNG of metric curves of runs", what)
        plot.add_argument("runs", nargs="+", metavar="RUN", help=f"a run: {ID_OR_NAME_HELP}")
        plot.add_argument(
            "--metrics",
            help=f"comma-separated metric names (default: {','.join(DEFAULT_PLOT_METRICS)})",
        )
        plot.add_argument("--output", type=Path, help="the PNG (default: runs-<ids>.png)")

    def run(self, args: argparse.Namespace) -> int:
        from treadle.experiments import ExperimentDB

        require_existing(args.location, "experiment store")
        with ExperimentDB(args.location, plugin_manager=args.plugin_manager) as db:
            action = getattr(self, f"_{args.action}")
            status: int = action(db, args)
        return status

    def _list(self, db: ExperimentDB, args: argparse.Namespace) -> int:
        runs = db.find_runs(name=args.name, status=args.status, limit=args.limit)
        if args.json:
            print_json([{**run.to_dict(), "last_checkpoint": _resumable(run)} for run in runs])
            return 0
        rows = [
            (
                run.run_id,
                run.run_name,
                run.status,
                run.attempt,
                run.created_at[:19],
                format_value(run.ended_at and run.ended_at[:19]),
                format_value(run.summary.get("best_val_loss")),
                format_value(_as_seen_from_here(_resumable(run))),
            )
            for run in runs
        ]
        headers = (
            "id",
            "name",
            "status",
            "attempts",
            "created",
            "ended",
            "best_val_loss",
            "last checkpoint",
        )
        print(format_table(headers, rows))
        return 0

    def _show(self, db: ExperimentDB, args: argparse.Namespace) -> int:
        run = db.get_run(find_run_id(db, args.run))
        metrics = _summaries(db.metric_rows([run.run_id]))
        if args.json:
            print_json({**run.to_dict(), "metrics": metrics})
            return 0
        fields = [
            ("run", f"{run.run_id} {run.run_name}"),
            ("status", run.status + (f" ({run.error})" if run.error else "")),
            ("attempts", run.attempt),
            ("created", run.created_at),
            ("ended", run.ended_at),
            (
                "owner",
                None if run.owner_pid is None else f"pid {run.owner_pid} on {run.owner_host}",
            ),
            ("heartbeat", run.heartbeat_at),
            ("run_dir", run.run_dir),
            ("last checkpoint", _resumable(run)),
            ("notes", run.notes or None),
            *(
                # text counts epochs from 1, as people do; --json keeps the stored value
                (
                    f"summary.{key}",
                    format_epoch(value, run.config.get("epochs")) if key == "best_epoch" else value,
                )
                for key, value in run.summary.items()
                if key != "final_metrics"
            ),
        ]
        width = max(len(name) for name, _ in fields)
        for name, value in fields:
            print(f"{name.ljust(width)}  {format_value(value)}")
        if metrics:
            print()
            rows = [
                (
                    name,
                    format_value(s["last"]),
                    format_value(s["min"]),
                    format_value(s["max"]),
                    s["count"],
                )
                for name, s in metrics.items()
            ]
            print(format_table(("metric", "last", "min", "max", "rows"), rows))
        return 0

    def _best(self, db: ExperimentDB, args: argparse.Namespace) -> int:
        best = db.get_best_run(args.metric, mode=args.mode)
        if args.json:
            print_json(best)
            return 0
        print(
            f"run {best['run_id']} {best['run_name']} ({best['status']}): {args.metric} = "
            f"{format_value(best['best_value'])} at epoch {format_epoch(best['epoch'])}, "
            f"step {format_value(best['step'])}"
        )
        return 0

    def _compare(self, db: ExperimentDB, args: argparse.Namespace) -> int:
        run_ids = [find_run_id(db, text) for text in args.runs]
        frame = db.compare_runs(run_ids, split_names(args.metrics), reduce=args.reduce)
        if args.json:
            print_json(frame.to_dict(orient="records"))
            return 0
        rows = [
            [format_value(value) for value in record]
            for record in frame.itertuples(index=False, name=None)
        ]
        print(format_table([str(column) for column in frame.columns], rows))
        return 0

    def _plot(self, db: ExperimentDB, args: argparse.Namespace) -> int:
        run_ids = [find_run_id(db, text) for text in args.runs]
        output = args.output or Path(f"runs-{'-'.join(map(str, run_ids))}.png")
        path = plot_runs(db, run_ids, split_names(args.metrics), output)
        print(path)
        return 0


def _owner(run: RunRecord) -> str | None:
    if run.owner_pid is None:
        return None
    return f"pid {run.owner_pid} on {run.owner_host}, started {run.owner_started_at}"


def _resumable(run: RunRecord) -> str | None:
    """For a run that did not finish (``died``, ``interrupted``, ``failed``): the newest
    checkpoint in its folder, which ``treadle train --resume`` continues from."""
    if run.status in ("completed", "running") or not run.run_dir:
        return None
    from treadle.engine.checkpoints.run_folder import last_checkpoint

    found = last_checkpoint(run.run_dir)
    return None if found is None else str(found)


def _as_seen_from_here(path: str | None) -> str | None:
    """``path`` relative to the working directory when it lies below it, so that a table's
    cell shows the file's name rather than a long cut prefix."""
    if path is None:
        return None
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def plot_runs(
    db: ExperimentDB, run_ids: Sequence[int], metrics: Sequence[str] | None, output: Path
) -> Path:
    """Draw each metric's curve per run (against the epoch, counted from 1, when every row of
    it has one, one per epoch; else the step) into ``output`` as a PNG; one panel per metric.

    :raises TreadleError: matplotlib is missing (with the install command), or the runs
        logged none of the metrics (listing those they did).
    :raises UnknownNameError: a run id names no run.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError as err:
        msg = 'plotting needs matplotlib: pip install "treadle[plot]"'
        raise TreadleError(msg) from err
    runs = {run_id: db.get_run(run_id) for run_id in run_ids}
    available = db.store.metric_names(list(run_ids))
    wanted = list(metrics) if metrics else [m for m in DEFAULT_PLOT_METRICS if m in available]
    rows = db.metric_rows(list(run_ids), names=wanted)
    present = [name for name in wanted if any(row.name == name for row in rows)]
    if not present:
        msg = (
            f"runs {', '.join(map(str, run_ids))} logged none of "
            f"{', '.join(wanted) or ', '.join(DEFAULT_PLOT_METRICS)}; they logged: "
            f"{', '.join(available) or 'nothing'}. Choose with --metrics."
        )
        raise UnknownNameError(msg)
    figure, axes = plt.subplots(
        len(present), 1, figsize=(8, 3.2 * len(present)), squeeze=False, constrained_layout=True
    )
    for panel, name in zip(axes[:, 0], present, strict=True):
        for run_id, run in runs.items():
            series = [row for row in rows if row.run_id == run_id and row.name == name]
            if not series:
                continue
            xs, axis = _x_axis(series)
            values = [row.value for row in series]
            panel.plot(xs, values, marker="o", markersize=3, label=f"{run_id} {run.run_name}")
            panel.set_xlabel(axis)
        panel.xaxis.set_major_locator(MaxNLocator(integer=True))
        panel.set_title(name)
        panel.grid(alpha=0.3)
        panel.legend(fontsize="small")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, format="png", dpi=100)
    plt.close(figure)
    return output


def _x_axis(series: Sequence[MetricRow]) -> tuple[list[int], str]:
    epochs = [row.epoch for row in series]
    if None not in epochs and len(set(epochs)) == len(epochs):
        # stored from 0 as the API counts; drawn from 1 as people count
        return [int(epoch) + 1 for epoch in epochs if epoch is not None], "epoch"
    steps = [row.step for row in series]
    if None not in steps:
        return [int(step) for step in steps if step is not None], "step"
    return list(range(len(series))), "row"
