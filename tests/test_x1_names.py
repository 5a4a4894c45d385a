"""RELIABILITY X1: a name with ``../``, slashes, NUL or thousands of characters, given for a
checkpoint, a model, an export bundle or a run, writes nothing outside the chosen root: it is
refused with treadle's error, or kept as text inside the root. (Model names in a registry are
in tests/test_storage.py, ``pytest -k x1``.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import treadle_torchscript.plugin
from treadle.config import TrainingConfig
from treadle.engine.checkpoints import CheckpointManager
from treadle.errors import ConfigError, TreadleError
from treadle.export import create_export_bundle, read_manifest
from treadle.run_setup import next_run_dir, resolve_config
from treadle.task import TaskSpec
from treadle.testing import isolated_plugin_manager

HOSTILE_NAMES = [
    "../escape",
    "../../escape",
    "a/../../escape",
    "/tmp/treadle-x1-absolute-escape",
    "x\x00../y",
    "n" * 5000,
    "sub/dir",
    "..",
]


def outside(tmp_path: Path, root: Path) -> set[Path]:
    """Every path under ``tmp_path`` but outside ``root``, plus the absolute target."""
    found = {path for path in tmp_path.rglob("*") if not path.is_relative_to(root)}
    absolute = Path("/tmp/treadle-x1-absolute-escape")
    return found | ({absolute} if absolute.exists() else set())


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(16, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, input_ids: torch.Tensor, **_: Any) -> torch.Tensor:
        return self.head(self.embedding(input_ids).mean(1))


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_x1_a_checkpoint_name_never_reaches_outside_the_run_folder(
    tmp_path: Path, name: str
) -> None:
    root = tmp_path / "root"
    manager = CheckpointManager(root / "run")
    manager.save_checkpoint(0, {}, Net(), None)
    before = outside(tmp_path, root)

    with pytest.raises(TreadleError):
        manager.load_checkpoint(name, Net())

    assert outside(tmp_path, root) == before


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_x1_a_model_name_and_version_make_a_bundle_inside_the_output_folder(
    tmp_path: Path, name: str
) -> None:
    root = tmp_path / "root"
    before = outside(tmp_path, root)

    bundle = create_export_bundle(
        Net(),
        {"name": name, "version": name},
        TaskSpec.classification("x1", num_classes=2, max_seq_len=4),
        TrainingConfig(vocab_size=16, max_seq_len=4, model_type="net"),
        output_dir=root / "exports",
        formats=["pytorch"],
        plugin_manager=isolated_plugin_manager(("torchscript", treadle_torchscript.plugin)),
    )

    assert bundle.parent == root / "exports"
    assert read_manifest(bundle)["status"] == "complete"
    assert outside(tmp_path, root) == before


@pytest.mark.parametrize("name", ["../escape", "a/../../escape", "/tmp/treadle-x1-run"])
def test_x1_a_run_name_is_refused_or_its_folder_lies_inside_the_root(
    tmp_path: Path, name: str
) -> None:
    root = tmp_path / "checkpoints"
    try:
        config = resolve_config(None, overrides={"run_name": name}).config
    except ConfigError:
        return
    run_dir = next_run_dir(root, config.run_name or "run", resume=False)
    assert run_dir.resolve().is_relative_to(root.resolve()), run_dir
