"""``treadle worker``: run a worker of the job queue until SIGTERM, ``--max-jobs`` or idle."""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys

__all__ = ["WorkerCommand"]


class WorkerCommand:
    """``treadle worker [--location DB] [--worker-id ID] [--max-jobs N] ...``."""

    help = "claim and run queued jobs, each in a child process (stop with SIGTERM)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--location", default="treadle.db", help="job store (default: %(default)s)"
        )
        parser.add_argument(
            "--worker-id", default=None, help="this worker's name (default: host-pid)"
        )
        parser.add_argument("--max-jobs", type=int, default=None, help="stop after N attempts")
        parser.add_argument(
            "--timeout-minutes", type=float, default=60.0, help="per-job limit (default: 60)"
        )
        parser.add_argument(
            "--idle-exit",
            type=float,
            default=None,
            metavar="SECONDS",
            help="stop once nothing could be claimed for this long",
        )
        parser.add_argument("--lease-seconds", type=float, default=60.0)
        parser.add_argument("--heartbeat-seconds", type=float, default=None)
        parser.add_argument("--poll-seconds", type=float, default=1.0)
        parser.add_argument("--retry-backoff", type=float, default=30.0, metavar="SECONDS")
        parser.add_argument("--retry-backoff-cap", type=float, default=3600.0, metavar="SECONDS")
        parser.add_argument("--shutdown-grace", type=float, default=30.0, metavar="SECONDS")
        parser.add_argument("--kill-grace", type=float, default=10.0, metavar="SECONDS")
        parser.add_argument(
            "--output-root", default="runs", help="attempt folders go here (default: runs)"
        )
        parser.add_argument(
            "--cold", action="store_true", help="spawn each job fresh, without the fork server"
        )
        parser.add_argument(
            "--preload",
            action="append",
            metavar="MODULE",
            help="a module the fork server imports once, before any job (repeatable; default: "
            "treadle.jobs.warm: every plugin, torch and the engine)",
        )
        parser.add_argument("--json", action="store_true", help="print the report as JSON")

    def run(self, args: argparse.Namespace) -> int:
        from treadle.jobs.executor import JobExecutor
        from treadle.jobs.forkserver import DEFAULT_PRELOAD
        from treadle.jobs.manager import JobManager

        worker_id = args.worker_id or f"{socket.gethostname()}-{os.getpid()}"
        with JobManager(args.location, plugin_manager=args.plugin_manager) as manager:
            executor = JobExecutor(
                manager,
                worker_id,
                lease_seconds=args.lease_seconds,
                heartbeat_seconds=args.heartbeat_seconds,
                poll_seconds=args.poll_seconds,
                retry_backoff_seconds=args.retry_backoff,
                retry_backoff_cap_seconds=args.retry_backoff_cap,
                shutdown_grace_seconds=args.shutdown_grace,
                kill_grace_seconds=args.kill_grace,
                output_root=args.output_root,
                warm=not args.cold,
                preload=args.preload or DEFAULT_PRELOAD,
            )
            report = executor.run_worker(
                max_jobs=args.max_jobs,
                timeout_minutes=args.timeout_minutes,
                idle_exit_seconds=args.idle_exit,
            )
        if args.json:
            sys.stdout.write(json.dumps(report.to_dict()) + "\n")
        else:
            counts = {key: value for key, value in report.to_dict().items() if key != "stop_reason"}
            shown = ", ".join(f"{count} {name}" for name, count in counts.items() if count)
            sys.stdout.write(
                f"worker {worker_id}: {shown or 'no jobs'}; stopped: {report.stop_reason}\n"
            )
        return 0
