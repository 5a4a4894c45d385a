"""Discovery for real: pip installs the example third-party plugin; treadle finds and uses it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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
    assert example["version"] == "0.5.0"
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
assert str(entry.provenance) == "example: treadle-example-plugin 0.5.0", entry.provenance
report = check_loss_strategy(lambda: get_loss_strategy("focal", gamma=2.0), "classification")
assert report.details["accumulation"] == "num_items_in_batch", report
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


# Runs a bundle script as a user would: treadle and the example plugin unimportable.
_NO_TREADLE = (
    "import runpy, sys\n"
    "for name in ('treadle', 'treadle_example', 'treadle_onnx', 'treadle_torchscript'):\n"
    "    sys.modules[name] = None\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)

_EXPORT_NUMPY_MLP = """
import json, sys
from pathlib import Path
import torch
from torch import nn
from treadle.export import create_export_bundle, read_manifest
from treadle.plugins import get_registry
from treadle.task import TaskSpec
from treadle.testing.exporters import check_bundle_loader, check_exporter

class TabularMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Dropout(0.1), nn.Linear(16, 3))

    def forward(self, features):
        return self.layers(features)

out = Path(sys.argv[1])
torch.manual_seed(0)
model = TabularMLP().eval()
task = TaskSpec.classification("tabular", num_classes=3, class_names=("a", "b", "c"),
                               modality="tabular")
exporter = get_registry("exporters").create("numpy_mlp")
example = {"features": torch.randn(1, 4)}
variants = [{"features": torch.randn(5, 4)}]
check_exporter(exporter, model, example, out / "kit", task_spec=task, variants=variants)
check_bundle_loader(exporter, model, example, out / "loader", task_spec=task, variants=variants)
bundle = create_export_bundle(model, {}, task, {}, out / "exports", ["numpy_mlp", "pytorch"],
                              example_inputs=example)
rows = torch.randn(3, 4)
(out / "inputs.json").write_text(json.dumps({"features": rows.tolist()}))
with torch.no_grad():
    (out / "expected.json").write_text(json.dumps(model(rows).tolist()))
print(json.dumps({"bundle": str(bundle), "manifest": read_manifest(bundle)}))
"""


@pytest.mark.slow
def test_a_bundle_of_the_example_format_verifies_and_predicts_without_treadle(
    example_site: Path, tmp_path: Path
) -> None:
    exported = run_python(
        _EXPORT_NUMPY_MLP.replace("sys.argv[1]", repr(str(tmp_path))), example_site
    )
    assert exported.returncode == 0, exported.stderr
    result = json.loads(exported.stdout.splitlines()[-1])
    bundle, manifest = Path(result["bundle"]), result["manifest"]
    artifact = manifest["artifacts"]["numpy_mlp"]
    assert artifact["verified"] is True
    assert artifact["loader"]["file"] == "loaders/treadle_example.numpy_loader.py"
    assert (bundle / artifact["loader"]["file"]).is_file()

    def run_script(*arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-I", "-c", _NO_TREADLE, str(bundle / "inference.py"), *arguments],
            cwd=bundle,
            env={"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    verified = run_script("--verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "ok   numpy_mlp: sha256 matches; outputs within tolerance" in verified.stdout
    predicted = run_script("--input", str(tmp_path / "inputs.json"), "--output", "out.json")
    assert predicted.returncode == 0, predicted.stderr
    assert json.loads(predicted.stdout)["format"] == "numpy_mlp"
    produced = json.loads((bundle / "out.json").read_text())["logits"]
    expected = json.loads((tmp_path / "expected.json").read_text())
    assert torch.allclose(torch.tensor(produced), torch.tensor(expected), atol=1e-5)
