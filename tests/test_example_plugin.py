"""Discovery for real: pip installs the example third-party plugin; treadle finds and uses it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "treadle-example-plugin"


@pytest.fixture(scope="session")
def example_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("example-site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-index",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(EXAMPLE),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return target


def run_python(code: str, site: Path) -> subprocess.CompletedProcess[str]:
    # a subprocess: sys.modules and metadata caches would leak between tests otherwise
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


@pytest.mark.slow
def test_treadle_plugins_lists_the_installed_example_with_its_version(example_site: Path) -> None:
    result = run_python(
        "from treadle.cli import main; raise SystemExit(main(['plugins', '--json']))", example_site
    )
    assert result.returncode == 0, result.stderr
    records = {record["name"]: record for record in json.loads(result.stdout)}
    example = records["example"]
    assert example["distribution"] == "treadle-example-plugin"
    assert example["version"] == "0.4.0"
    assert example["status"] == "loaded"
    assert example["registers"]["losses"] == ["focal"]
    assert example["registers"]["collators"] == ["tabular"]


@pytest.mark.slow
def test_the_example_focal_loss_is_found_by_name_and_trains(example_site: Path) -> None:
    code = """
import torch
from treadle.collators import CollatorRegistry
from treadle.losses import LossStrategyRegistry, get_loss_strategy
from treadle.testing.collators import check_collator
from treadle.testing.losses import check_loss_strategy

entry = LossStrategyRegistry().entry("focal")
assert str(entry.provenance) == "example: treadle-example-plugin 0.4.0", entry.provenance
report = check_loss_strategy(lambda: get_loss_strategy("focal", gamma=2.0), "classification")
assert report.accumulation == "num_items_in_batch", report
collate = CollatorRegistry().get("tabular")
torch.manual_seed(0)
x = torch.randn(64, 4)
y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
rows = [{"features": x[i].tolist(), "label": int(y[i])} for i in range(64)]
check_collator(collate, rows[:5])
loader = torch.utils.data.DataLoader(rows, batch_size=16, collate_fn=collate)
loss_fn = get_loss_strategy("focal", gamma=2.0)
model = torch.nn.Linear(4, 3)
optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
losses = []
for _ in range(10):
    for batch in loader:
        optimizer.zero_grad()
        loss = loss_fn.compute_loss(model(batch["features"]), batch["labels"])
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
assert losses[-1] < 0.6 * losses[0], losses
print("ok")
"""
    result = run_python(code, example_site)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
