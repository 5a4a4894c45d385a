"""``python -m treadle.testing DISTRIBUTION``: check every name an installed plugin
distribution registers, print a table per name, exit 1 when a rule is broken."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from treadle.registry import KINDS
from treadle.testing.runner import failure_messages, find_settings, run_conformance


def main(argv: Sequence[str] | None = None) -> int:
    """Run the conformance kit on a distribution; returns the exit status (0 all passed or
    skipped, 1 a rule broken, 2 nothing to check)."""
    parser = argparse.ArgumentParser(
        prog="python -m treadle.testing",
        description="Check every name an installed treadle plugin distribution registers "
        "against its kind's contract.",
    )
    parser.add_argument("distribution", help="the installed distribution (treadle-acme)")
    parser.add_argument(
        "--project",
        type=Path,
        help="its pyproject.toml or folder, for [tool.treadle.conformance] settings (default: "
        "the folder of an editable install, else the working directory)",
    )
    parser.add_argument(
        "--kind", action="append", choices=sorted(KINDS), help="only this kind (repeatable)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON record per name")
    args = parser.parse_args(argv)
    try:
        settings = find_settings(args.distribution, args.project)
        run = run_conformance(args.distribution, settings=settings, kinds=args.kind)
    except ValueError as err:
        print(f"python -m treadle.testing: {err}", file=sys.stderr)
        return 2
    if args.json:
        records = [
            {
                "kind": result.case.kind,
                "name": result.case.name,
                "provenance": result.case.provenance,
                "outcome": result.outcome,
                "seconds": round(result.seconds, 3),
                "passed": list(result.report.passed) if result.report else [],
                "skipped": [list(pair) for pair in result.report.skipped] if result.report else [],
                "message": result.message,
            }
            for result in run.results
        ]
        print(json.dumps(records, indent=2))
    else:
        print(run.table())
        for message in failure_messages(run.results):
            print(f"\nFAILED {message}")
    if not run.results:
        print(f"{args.distribution} registers nothing to check", file=sys.stderr)
        return 2
    return 0 if run.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
