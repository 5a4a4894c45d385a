"""``treadle verify-resume``: prove a config resumes exactly. It trains the config once
uninterrupted and once stopped by SIGTERM at the given steps and resumed each time, each part a
``treadle train`` in its own process, then compares every batch loss and the final parameters'
sha256. The parts record and stop through :mod:`treadle_cli.resume_probe`, a plugin their
environment loads; ``treadle train`` itself has no flag for either."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from treadle.errors import ConfigError, TreadleError
from treadle.plugins import PLUGINS_ENV
from treadle_cli.arguments import add_config_arguments, forwarded_arguments
from treadle_cli.resume_probe import PROBE_TARGET, RECORD_ENV, STOP_AT_ENV
from treadle_cli.table import format_table

__all__ = ["VerifyResumeCommand", "compare_records", "probe_environment"]


def compare_records(
    reference: dict[str, Any], parts: list[dict[str, Any]]
) -> tuple[bool, list[str]]:
    """Whether the parts' losses, joined, and final parameters equal the reference's; with
    one line per finding."""
    joined = [loss for part in parts for loss in part["losses"]]
    expected = reference["losses"]
    lines = []
    same_length = len(joined) == len(expected)
    mismatch = next(
        (index for index, (a, b) in enumerate(zip(joined, expected, strict=False)) if a != b),
        None,
    )
    if same_length and mismatch is None:
        lines.append(f"losses: all {len(expected)} batch losses identical")
    else:
        lines.append(
            f"losses: DIFFER: {len(joined)} resumed vs {len(expected)} uninterrupted batches"
            + (
                ""
                if mismatch is None
                else f"; first difference at batch {mismatch} (step {expected[mismatch][0]}): "
                f"{joined[mismatch][1]!r} vs {expected[mismatch][1]!r}"
            )
        )
    same_parameters = parts[-1]["parameters"] == reference["parameters"]
    lines.append(
        f"parameters: {'identical' if same_parameters else 'DIFFER'} "
        f"(sha256 {parts[-1]['parameters'][:16]} vs {reference['parameters'][:16]})"
    )
    return same_length and mismatch is None and same_parameters, lines


def probe_environment(
    record: Path, stop_at_step: int | None, environ: dict[str, str] | None = None
) -> dict[str, str]:
    """``environ`` (default: this process's) for a training part that loads the resume probe,
    recording into ``record`` and stopping itself at ``stop_at_step``."""
    env = dict(os.environ if environ is None else environ)
    loaded = [name for name in env.get(PLUGINS_ENV, "").split(",") if name.strip()]
    env[PLUGINS_ENV] = ",".join([*loaded, PROBE_TARGET])
    env[RECORD_ENV] = str(record)
    env.pop(STOP_AT_ENV, None)
    if stop_at_step is not None:
        env[STOP_AT_ENV] = str(stop_at_step)
    return env


class VerifyResumeCommand:
    """``treadle verify-resume``."""

    help = "check that a config resumes exactly: stop at steps, resume, compare to one run"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_config_arguments(parser)
        parser.add_argument(
            "--kill-at",
            type=int,
            nargs="+",
            default=[5],
            metavar="STEP",
            help="optimizer steps at which a SIGTERM stops the run (default: 5)",
        )
        parser.add_argument(
            "--workers",
            type=int,
            default=None,
            help="DataLoader workers of the resumed parts (default: the config's)",
        )
        parser.add_argument(
            "--keep",
            type=Path,
            metavar="DIR",
            help="keep the runs in this folder (default: a temporary folder, deleted at the end)",
        )

    def run(self, args: argparse.Namespace) -> int:
        steps = sorted(set(args.kill_at))
        if not steps or steps[0] < 1:
            msg = f"--kill-at needs optimizer steps >= 1: {args.kill_at}"
            raise ConfigError(msg)
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            return self._verify(args, steps, args.keep)
        # the runs take ~11 MB: removed however the command ends (failure and Ctrl-C too)
        with tempfile.TemporaryDirectory(prefix="treadle-verify-resume-") as folder:
            return self._verify(args, steps, Path(folder))

    def _verify(self, args: argparse.Namespace, steps: list[int], folder: Path) -> int:
        base = [*forwarded_arguments(args), "--set", "experiment_location=null"]
        reference = self._part(base, folder / "reference", folder / "reference.json", [])
        resumed_base = base + (
            ["--set", f"num_workers={args.workers}"] if args.workers is not None else []
        )
        parts = []
        for index, step in enumerate([*steps, None]):
            extra = ["--resume"] if index else []
            record = folder / f"part{index + 1}.json"
            parts.append(self._part(resumed_base, folder / "resumed", record, extra, step))
        rows: list[Sequence[object]] = [
            ["uninterrupted", len(reference["losses"]), "-"],
            *[
                [f"part {index + 1}", len(part["losses"]), step or "end"]
                for index, (part, step) in enumerate(zip(parts, [*steps, None], strict=True))
            ],
        ]
        sys.stdout.write(format_table(["run", "batches", "stopped at step"], rows) + "\n")
        same, lines = compare_records(reference, parts)
        sys.stdout.write("\n".join(lines) + "\n")
        if args.keep is not None:
            sys.stdout.write(f"runs in {folder}\n")
        else:
            sys.stdout.write("runs deleted (keep them: --keep DIR)\n")
        sys.stdout.write("resume is exact\n" if same else "resume is NOT exact\n")
        return 0 if same else 1

    def _part(
        self,
        base: list[str],
        run_dir: Path,
        record: Path,
        extra: list[str],
        stop_at_step: int | None = None,
    ) -> dict[str, Any]:
        command = [
            sys.executable,
            "-m",
            "treadle",
            "-q",
            "train",
            *base,
            "--run-dir",
            str(run_dir),
            "--no-register",
            "--json",
            *extra,
        ]
        completed = subprocess.run(
            command,
            capture_output=True,
            text=True,
            check=False,
            env=probe_environment(record, stop_at_step),
        )
        # a part stopped by its SIGTERM exits 143 (128 + 15), as treadle train does
        stopped = 128 + signal.SIGTERM if stop_at_step is not None else 0
        if completed.returncode not in (0, stopped):
            msg = (
                f"a training run failed (exit {completed.returncode}): {' '.join(command)}\n"
                f"{completed.stderr[-4000:]}"
            )
            raise TreadleError(msg)
        if not record.is_file():
            msg = (
                f"the training run wrote no record to {record}: the resume probe "
                f"({PROBE_TARGET}) did not run; check {PLUGINS_ENV} and the disabled plugins"
            )
            raise TreadleError(msg)
        loaded: dict[str, Any] = json.loads(record.read_text(encoding="utf-8"))
        return loaded
