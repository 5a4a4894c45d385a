"""bench/gpu_check.py on its CPU path: every CUDA check the machine cannot run is skipped with
its reason, and the ones it can run (fp32 and bf16 next to a hand-written loop) pass."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"


@pytest.mark.slow
def test_gpu_check_cpu_path_matches_a_hand_written_loop() -> None:
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    lines = completed.stdout.splitlines()
    compared = [line for line in lines if "losses max |difference|" in line]
    # two shapes, fp32 and bf16 each, with identical losses on CPU
    assert len(compared) == 4, completed.stdout
    assert all("[ok]" in line and "max |difference| 0 " in line for line in compared)
    skipped = {line.split(":")[0].strip() for line in lines if "[skip]" in line}
    assert "[skip] DDP over NCCL" in skipped
    assert "[skip] GradScaler skips an inf step" in skipped
    assert lines[-1].startswith("4 passed, 0 failed")
