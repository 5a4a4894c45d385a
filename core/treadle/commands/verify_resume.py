"""``treadle verify-resume``: prove a config resumes exactly. It trains the config once
uninterrupted and once stopped by SIGTERM at the given steps and resumed each time, each part in
its own process, then compares every batch loss and the final parameters' sha256."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from treadle.commands.table import format_table
from treadle.commands.train import add_config_arguments
from treadle.errors import ConfigError, TreadleError

__all__ = ["VerifyResumeCommand", "compare_records", "forwarded_arguments"]


def forwarded_arguments(args: argparse.Namespace) -> list[str]:
    """The config-choosing arguments of ``args`` as ``treadle train`` flags."""
    forwarded: list[str] = []
    if args.preset:
        forwarded += ["--preset", args.preset]
    if args.config is not None:
        forwarded += ["--config", str(args.config)]
    for text in args.overrides:
        forwarded += ["--set", text]
    if args.epochs is not None:
        forwarded += ["--epochs", str(args.epochs)]
    if args.batch_size is not None:
        forwarded += ["--batch-size", str(args.batch_size)]
    if args.device is not None:
        forwarded += ["--device", args.device]
    return forwarded


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
        parser.add_argument("--keep", type=Path, help="keep the runs in this folder")

    def run(self, args: argparse.Namespace) -> int:
        steps = sorted(set(args.kill_at))
        if not steps or steps[0] < 1:
            msg = f"--kill-at needs optimizer steps >= 1: {args.kill_at}"
            raise ConfigError(msg)
        base = [*forwarded_arguments(args), "--set", "experiment_location=null"]
        folder = args.keep or Path(tempfile.mkdtemp(prefix="treadle-verify-resume-"))
        folder.mkdir(parents=True, exist_ok=True)
        reference = self._part(base, folder / "reference", folder / "reference.json", [])
        resumed_base = base + (
            ["--set", f"num_workers={args.workers}"] if args.workers is not None else []
        )
        parts = []
        for index, step in enumerate([*steps, None]):
            extra = ["--resume"] if index else []
            if step is not None:
                extra += ["--kill-at-step", str(step)]
            record = folder / f"part{index + 1}.json"
            parts.append(self._part(resumed_base, folder / "resumed", record, extra))
        rows = [
            ["uninterrupted", len(reference["losses"]), "-"],
            *[
                [f"part {index + 1}", len(part["losses"]), step or "end"]
                for index, (part, step) in enumerate(zip(parts, [*steps, None], strict=True))
            ],
        ]
        sys.stdout.write(format_table(["run", "batches", "stopped at step"], rows) + "\n")
        same, lines = compare_records(reference, parts)
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.write(f"runs in {folder}\n")
        sys.stdout.write("resume is exact\n" if same else "resume is NOT exact\n")
        return 0 if same else 1

    def _part(
        self, base: list[str], run_dir: Path, record: Path, extra: list[str]
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
            "--record",
            str(record),
            "--json",
            *extra,
        ]
        completed = subprocess.run(command, capture_output=True, text=True, check=False)
        if completed.returncode != 0:
            msg = (
                f"a training run failed (exit {completed.returncode}): {' '.join(command)}\n"
                f"{completed.stderr[-4000:]}"
            )
            raise TreadleError(msg)
        loaded: dict[str, Any] = json.loads(record.read_text(encoding="utf-8"))
        return loaded
