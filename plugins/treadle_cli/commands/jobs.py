"""``treadle jobs submit|list|show|cancel``: the job queue from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import attrs

from treadle_cli.arguments import read_job_config

__all__ = ["JobsCommand"]


class JobsCommand:
    """``treadle jobs ...``."""

    help = "submit, list, show and cancel jobs of the queue"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--location", default="treadle.db", help="job store (default: %(default)s)"
        )
        actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
        submit = actions.add_parser("submit", help="queue a job")
        submit.add_argument("job_type", help="training, evaluation, export, retraining, ...")
        submit.add_argument("--config", help="the job config as JSON")
        submit.add_argument(
            "--config-file", type=Path, help="the job config in a JSON file (TOML when named .toml)"
        )
        submit.add_argument(
            "--training-preset",
            help="the preset under the config's training_config, whose fields override it "
            "(default: quick_prototype, as treadle train)",
        )
        submit.add_argument("--priority", type=int, default=5, help="1..10 (default: 5)")
        submit.add_argument("--max-retries", type=int, default=3, help="(default: 3)")
        listing = actions.add_parser("list", help="list jobs, newest first")
        listing.add_argument("--status", help="pending, running, completed, failed, cancelled")
        listing.add_argument(
            "--type", dest="job_type", help="only jobs of this type (training, noop, ...)"
        )
        listing.add_argument("--limit", type=int, default=50)
        listing.add_argument("--json", action="store_true")
        show = actions.add_parser("show", help="one job with its attempts")
        show.add_argument("job_id", type=int)
        show.add_argument("--json", action="store_true")
        cancel = actions.add_parser("cancel", help="cancel a pending or running job")
        cancel.add_argument("job_id", type=int)

    def run(self, args: argparse.Namespace) -> int:
        from treadle.jobs.manager import JobManager

        # read before the store is opened: a bad config must leave no store behind
        config = read_job_config(args) if args.action == "submit" else {}
        with JobManager(args.location, plugin_manager=args.plugin_manager) as manager:
            if args.action == "submit":
                job_id = manager.submit_job(args.job_type, config, args.priority, args.max_retries)
                sys.stdout.write(f"{job_id}\n")
            elif args.action == "list":
                jobs = manager.list_jobs(args.status, args.job_type, args.limit)
                if (
                    not jobs
                    and args.job_type is not None
                    and not manager.list_jobs(job_type=args.job_type, limit=1)
                ):
                    # no job of a type, and no plugin registers it: a typo; the lookup lists
                    # the registered types
                    manager.plugin_manager.registry("job_types").get(args.job_type)
                if args.json:
                    listed = [attrs.asdict(job, recurse=True) for job in jobs]
                    sys.stdout.write(json.dumps(listed, indent=2) + "\n")
                else:
                    from treadle_cli.table import format_table

                    rows = [
                        [
                            job.job_id,
                            job.job_type,
                            job.status,
                            job.priority,
                            job.attempt,
                            job.worker_id or "-",
                            job.created_at,
                        ]
                        for job in jobs
                    ]
                    headers = ["id", "type", "status", "priority", "attempts", "worker", "created"]
                    sys.stdout.write(format_table(headers, rows) + "\n")
            elif args.action == "show":
                shown = attrs.asdict(manager.get_job(args.job_id), recurse=True)
                if args.json:
                    sys.stdout.write(json.dumps(shown, indent=2) + "\n")
                else:
                    sys.stdout.write(_describe(shown) + "\n")
            else:
                job = manager.cancel_job(args.job_id)
                state = (
                    "cancelling" if job.cancel_requested and job.status == "running" else job.status
                )
                sys.stdout.write(f"job {job.job_id}: {state}\n")
        return 0


def _describe(data: dict[str, Any]) -> str:
    attempts = data.pop("attempts")
    lines = [
        f"{key}: {json.dumps(value) if isinstance(value, dict) else value}"
        for key, value in data.items()
    ]
    for attempt in attempts:
        lines.append(
            f"attempt {attempt['attempt']} on {attempt['worker_id']} at {attempt['started_at']}:"
            f" {attempt['outcome']}"
            + (f" (retry after {attempt['retry_delay']:g} s)" if attempt["retry_delay"] else "")
        )
        if attempt["error"]:
            lines.append("  " + attempt["error"].strip().replace("\n", "\n  "))
    return "\n".join(lines)
