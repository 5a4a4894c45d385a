"""``treadle schedule add|list|pause|resume|delete|trigger|run``: cron schedules of jobs."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import attrs

from treadle_cli.arguments import read_job_config
from treadle_cli.references import ID_OR_NAME_HELP, find_schedule_id

if TYPE_CHECKING:
    from treadle.jobs.records import Schedule
    from treadle.jobs.scheduler import FiredSchedule

__all__ = ["ScheduleCommand", "describe_run"]


class ScheduleCommand:
    """``treadle schedule ...``."""

    help = "cron schedules that enqueue jobs (run the scheduler with `treadle schedule run`)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--location", default="treadle.db", help="job store (default: %(default)s)"
        )
        actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
        add = actions.add_parser("add", help="create a schedule")
        add.add_argument("name")
        add.add_argument("job_type")
        add.add_argument("schedule_expr", help="five-field cron, e.g. '0 2 * * *'")
        add.add_argument("--timezone", default="UTC", help="IANA name (default: UTC)")
        add.add_argument("--config", help="the job config as JSON")
        add.add_argument(
            "--config-file", type=Path, help="the job config in a JSON file (TOML when named .toml)"
        )
        add.add_argument(
            "--training-preset",
            help="the preset under the config's training_config, whose fields override it "
            "(default: quick_prototype, as treadle train)",
        )
        add.add_argument("--priority", type=int, default=5)
        add.add_argument("--max-retries", type=int, default=3)
        listing = actions.add_parser("list", help="list schedules with their next fire time")
        listing.add_argument("--json", action="store_true")
        for name, text in (
            ("pause", "stop firing"),
            ("resume", "fire again from now on"),
            ("delete", "delete (its jobs stay)"),
            ("trigger", "enqueue its job now"),
        ):
            actions.add_parser(name, help=text).add_argument(
                "schedule", metavar="SCHEDULE", help=f"the schedule: {ID_OR_NAME_HELP}"
            )
        run = actions.add_parser("run", help="fire due schedules until SIGTERM or Ctrl-C")
        run.add_argument("--poll-seconds", type=float, default=30.0)
        run.add_argument(
            "--once",
            action="store_true",
            help="check once, say what fired and what was enqueued (or the next fire time), exit",
        )

    def run(self, args: argparse.Namespace) -> int:
        from treadle.jobs.scheduler import TrainingScheduler

        # read before the store is opened: a bad config must leave no store behind
        config = read_job_config(args) if args.action == "add" else {}
        with TrainingScheduler(args.location, plugin_manager=args.plugin_manager) as scheduler:
            if args.action == "add":
                created = scheduler.create_schedule(
                    args.name,
                    args.job_type,
                    config,
                    args.schedule_expr,
                    priority=args.priority,
                    timezone=args.timezone,
                    max_retries=args.max_retries,
                )
                sys.stdout.write(f"{created}\n")
            elif args.action == "list":
                schedules = scheduler.list_schedules()
                if args.json:
                    data = [attrs.asdict(schedule) for schedule in schedules]
                    sys.stdout.write(json.dumps(data, indent=2) + "\n")
                else:
                    from treadle_cli.table import format_table

                    rows = [
                        [
                            s.schedule_id,
                            s.name,
                            s.job_type,
                            s.schedule_expr,
                            s.timezone,
                            "paused" if s.is_paused else "active",
                            s.next_fire_at or "-",
                            s.last_fire_at or "-",
                        ]
                        for s in schedules
                    ]
                    headers = ["id", "name", "type", "cron", "zone", "state", "next", "last"]
                    sys.stdout.write(format_table(headers, rows) + "\n")
            elif args.action == "pause":
                scheduler.pause_schedule(find_schedule_id(scheduler, args.schedule))
            elif args.action == "resume":
                scheduler.resume_schedule(find_schedule_id(scheduler, args.schedule))
            elif args.action == "delete":
                scheduler.delete_schedule(find_schedule_id(scheduler, args.schedule))
            elif args.action == "trigger":
                job_id = scheduler.trigger_schedule(find_schedule_id(scheduler, args.schedule))
                sys.stdout.write(f"{job_id}\n")
            elif args.once:
                fired = scheduler.run_pending()
                sys.stdout.write(describe_run(fired, scheduler.list_schedules()) + "\n")
            else:
                stopping = []

                def on_sigterm(signum: int, frame: FrameType | None) -> None:
                    stopping.append(signum)

                signal.signal(signal.SIGTERM, on_sigterm)
                scheduler.run(poll_seconds=args.poll_seconds, should_stop=lambda: bool(stopping))
        return 0


def describe_run(fired: Sequence[FiredSchedule], schedules: Sequence[Schedule]) -> str:
    """What one ``run_pending`` did, a line per fire time (the job it enqueued, or that
    another scheduler had enqueued it), then when the next schedule fires."""
    by_id = {schedule.schedule_id: schedule for schedule in schedules}
    lines = []
    for item in fired:
        schedule = by_id.get(item.schedule_id)
        job_type = f" {schedule.job_type}" if schedule is not None else ""
        if item.job_id is None:
            outcome = "enqueued already (by another scheduler): nothing new"
        else:
            outcome = f"enqueued{job_type} job {item.job_id}"
        missed = f"; {item.skipped} earlier fire times missed" if item.skipped else ""
        lines.append(
            f"schedule {item.name!r} ({item.schedule_id}) fired for {item.fire_time}: "
            f"{outcome}{missed}"
        )
    enqueued = sum(item.job_id is not None for item in fired)
    if fired:
        lines.append(f"{len(fired)} fired, {enqueued} enqueued")
    upcoming = sorted(
        (schedule.next_fire_at, schedule.name)
        for schedule in schedules
        if schedule.next_fire_at is not None
    )
    if upcoming:
        next_fire_at, name = upcoming[0]
        lead = "" if fired else "nothing was due; "
        lines.append(f"{lead}next: schedule {name!r} at {next_fire_at}")
    elif not fired:
        paused = " (every schedule is paused)" if schedules else ""
        lines.append(f"nothing was due: no active schedules{paused}")
    return "\n".join(lines)
