"""``treadle export MODEL_REF``: references, checkpoints, and the registry entry's formats."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from treadle.cli import main
from treadle.config import TrainingConfig, TrainingConfigBuilder
from treadle.errors import ConfigError, TreadleError
from treadle.export import read_manifest
from treadle.model_loading import load_checkpoint_model, parse_model_ref
from treadle.plugins import get_registry
from treadle.task import TaskSpec

CLASS_NAMES = ("world", "sports", "business", "sci/tech")


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("42", {"model_id": 42}),
        ("transformer-gpt:1.0.0", {"name": "transformer-gpt", "version": "1.0.0"}),
        (":1.0.0", {"version": "1.0.0"}),
        ("@production", {"tag": "production"}),
    ],
)
def test_model_references_map_to_registry_lookups(
    reference: str, expected: dict[str, object]
) -> None:
    assert parse_model_ref(reference) == expected


@pytest.mark.parametrize("reference", ["", "gpt", "@", "a:b:c", "@pro@d"])
def test_a_malformed_model_reference_shows_the_accepted_forms(reference: str) -> None:
    with pytest.raises(ConfigError, match=r"ID \(42\), NAME:VERSION"):
        parse_model_ref(reference)


def _classifier_checkpoint(path: Path) -> tuple[torch.nn.Module, TrainingConfig, TaskSpec]:
    config = (
        TrainingConfigBuilder.quick_prototype()
        .with_model(model_type="mlp_classifier", d_model=16, d_ff=32, max_seq_len=8)
        .build()
    )
    task = TaskSpec.classification("topics", num_classes=4, class_names=CLASS_NAMES, max_seq_len=8)
    models = get_registry("models")
    model = models.get("mlp_classifier")(config, task)
    torch.save(
        {
            "model_state_dict": model.state_dict(),
            "training_config": config.to_dict(),
            "task_spec": task.to_dict(),
        },
        path,
    )
    return model.eval(), config, task


def test_a_checkpoint_rebuilds_its_model_with_the_registered_factory(tmp_path: Path) -> None:
    model, config, task = _classifier_checkpoint(tmp_path / "epoch_1.pt")

    rebuilt, rebuilt_config, rebuilt_task = load_checkpoint_model(tmp_path / "epoch_1.pt")

    assert (rebuilt_config, rebuilt_task) == (config, task)
    ids = torch.randint(0, config.vocab_size, (2, 8))
    with torch.no_grad():
        assert torch.equal(rebuilt(input_ids=ids), model(input_ids=ids))


def test_a_checkpoint_without_a_task_is_refused_naming_the_file(tmp_path: Path) -> None:
    torch.save({"model_state_dict": {}, "training_config": {}}, tmp_path / "bare.pt")

    with pytest.raises(TreadleError, match=r"bare\.pt holds no task spec"):
        load_checkpoint_model(tmp_path / "bare.pt")


def test_export_command_writes_a_bundle_and_records_its_formats(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_registry = pytest.importorskip("treadle.model_registry")
    _classifier_checkpoint(tmp_path / "epoch_1.pt")
    location = str(tmp_path / "models.db")
    registry = model_registry.ModelRegistry(location)
    model_id = registry.register_model(
        name="topics-mlp",
        version="1.0.0",
        checkpoint_path=str(tmp_path / "epoch_1.pt"),
        task_type="classification",
        metrics={"val_loss": 0.5},
        config_hash="abc123",
    )
    registry.promote_model(model_id, "production")

    status = main(
        [
            "export",
            "@production",
            "--formats",
            "torchscript,pytorch",
            "--output-dir",
            str(tmp_path / "exports"),
            "--registry",
            location,
        ]
    )

    assert status == 0
    bundle = Path(capsys.readouterr().out.strip())
    manifest = read_manifest(bundle)
    assert manifest["status"] == "complete"
    assert manifest["model"]["name"] == "topics-mlp"
    assert manifest["task"]["class_names"] == list(CLASS_NAMES)
    entry = model_registry.ModelRegistry(location).get_model(model_id=model_id)
    assert list(entry.export_formats) == ["torchscript", "pytorch"]


def test_export_command_names_a_missing_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_registry = pytest.importorskip("treadle.model_registry")
    location = str(tmp_path / "models.db")
    model_id = model_registry.ModelRegistry(location).register_model(
        name="gone",
        version="1.0.0",
        checkpoint_path=str(tmp_path / "missing.pt"),
        task_type="classification",
        metrics={},
        config_hash="abc",
    )

    status = main(["export", str(model_id), "--registry", location])

    assert status == 2
    assert "missing.pt of the registry entry does not exist" in capsys.readouterr().err


_EXPORT_TINY_GPT = """
import sys
from pathlib import Path
import torch
from treadle.cli import main
from treadle.config import TrainingConfigBuilder
from treadle.model_registry import ModelRegistry
from treadle.plugins import get_registry
from treadle.task import TaskSpec

folder = Path(sys.argv[1])
config = (
    TrainingConfigBuilder.quick_prototype()
    .with_model(model_type="tiny_gpt", d_model=32, num_layers=1, num_heads=2, d_ff=64)
    .build()
)
task = TaskSpec.language_modeling("lm", max_seq_len=config.max_seq_len)
model = get_registry("models").get("tiny_gpt")(config, task)
torch.save(
    {"model_state_dict": model.state_dict(), "training_config": config.to_dict(),
     "task_spec": task.to_dict()},
    folder / "epoch_1.pt",
)
ModelRegistry(str(folder / "models.db")).register_model(
    name="tiny-gpt", version="1.0.0", checkpoint_path=str(folder / "epoch_1.pt"),
    task_type="language_modeling", metrics={}, config_hash="abc",
)
raise SystemExit(main([*sys.argv[2:], "export", "tiny-gpt:1.0.0", "--registry",
                       str(folder / "models.db"), "--output-dir", str(folder / "exports")]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("verbosity", [[], ["-v"]])
def test_export_prints_a_short_summary_and_keeps_library_output_in_the_bundle(
    tmp_path: Path, verbosity: list[str]
) -> None:
    """Issue 15.4: ~70 lines of onnx_ir/onnxscript INFO, torchvision and FutureWarning noise
    go to the bundle's export.log; the terminal gets treadle's summary (all of it at -v)."""
    result = subprocess.run(
        [sys.executable, "-c", _EXPORT_TINY_GPT, str(tmp_path), *verbosity],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    (bundle,) = (tmp_path / "exports").iterdir()
    assert result.stdout.strip() == str(bundle)
    log = (bundle / "export.log").read_text()
    assert "torchvision is not installed" in log
    assert "INFO onnx" in log
    printed = (result.stdout + result.stderr).splitlines()
    if verbosity:
        assert "torchvision is not installed" in result.stderr
        assert len(printed) > 15
    else:
        assert len(printed) < 15, "\n".join(printed)
        assert "onnx" in result.stderr  # the summary names what was written
        assert "torchvision" not in result.stderr
        assert "Warning" not in result.stderr
