"""Every export format on every built-in model (tiny GPT, MLP classifier, small CNN): the
bundle's artifacts verified in a fresh process by its own inference.py, and each exporter's
round trip on several batch sizes and lengths."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from treadle.config import TrainingConfig, TrainingConfigBuilder
from treadle.export import create_export_bundle, derive_example_inputs, read_manifest
from treadle.plugins import get_registry
from treadle.task import TaskSpec
from treadle.testing.exporters import check_bundle_loader, check_exporter, describe_inputs

pytestmark = pytest.mark.slow

ALL_FORMATS = ["onnx", "torchscript", "torch_export", "pytorch"]
LENGTH = 16
CLASS_NAMES = ("world", "sports", "business", "sci/tech")

# Runs a bundle script with treadle and its plugins unimportable: `import treadle` raises.
_NO_TREADLE = (
    "import runpy, sys\n"
    "for name in ('treadle', 'treadle_onnx', 'treadle_torchscript', 'treadle_models'):\n"
    "    sys.modules[name] = None\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


def _config(model_type: str) -> TrainingConfig:
    return (
        TrainingConfigBuilder.quick_prototype()
        .with_model(
            model_type=model_type,
            model_name=model_type.replace("_", "-"),
            d_model=32,
            num_layers=1,
            num_heads=2,
            d_ff=64,
            max_seq_len=LENGTH,
        )
        .build()
    )


def _text_inputs(batch: int, length: int, vocab: int) -> dict[str, torch.Tensor]:
    input_ids = torch.randint(1, vocab, (batch, length))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, length // 2 :] = 0  # one padded row
    return {"input_ids": input_ids, "attention_mask": attention_mask}


CASES: dict[str, tuple[Callable[[], TaskSpec], Callable[[int, int], dict[str, torch.Tensor]]]] = {
    "tiny_gpt": (
        lambda: TaskSpec.language_modeling("lm", max_seq_len=LENGTH),
        lambda batch, length: _text_inputs(batch, length, 259),
    ),
    "mlp_classifier": (
        lambda: TaskSpec.classification(
            "topics", num_classes=4, class_names=CLASS_NAMES, max_seq_len=LENGTH
        ),
        lambda batch, length: _text_inputs(batch, length, 259),
    ),
    "small_cnn": (
        TaskSpec.vision_tiny,
        lambda batch, _: {"pixel_values": torch.randn(batch, 1, 8, 8)},
    ),
}


def _built_in(model_type: str) -> tuple[torch.nn.Module, TaskSpec, TrainingConfig]:
    make_task, _ = CASES[model_type]
    task = make_task()
    config = _config(model_type)
    torch.manual_seed(0)
    models = get_registry("models")
    model = models.get(model_type)(config, task)
    return model.eval(), task, config


def _variant_inputs(
    model: torch.nn.Module, model_type: str, task: TaskSpec
) -> list[dict[str, torch.Tensor]]:
    """Inputs with the names a bundle's sample has, at other batch sizes and lengths."""
    _, make_inputs = CASES[model_type]
    names = list(derive_example_inputs(model, task, vocab_size=259, max_seq_len=LENGTH))
    variants = [make_inputs(batch, length) for batch, length in ((1, 5), (3, LENGTH), (4, 9))]
    return [{name: variant[name] for name in names} for variant in variants]


def _run_script(bundle: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    environment = {"PATH": os.environ.get("PATH", ""), "HOME": str(bundle)}
    return subprocess.run(
        [sys.executable, "-I", "-c", _NO_TREADLE, str(bundle / "inference.py"), *arguments],
        cwd=bundle,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _outputs(model: torch.nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
    with torch.no_grad():
        raw = model(**{name: torch.as_tensor(value) for name, value in inputs.items()})
    return raw if isinstance(raw, torch.Tensor) else raw["logits"]


@pytest.mark.parametrize("model_type", list(CASES))
def test_every_format_of_a_built_in_model_runs_from_its_bundle(
    model_type: str, tmp_path: Path
) -> None:
    model, task, config = _built_in(model_type)

    bundle = create_export_bundle(model, config, task, config, tmp_path, ALL_FORMATS)

    manifest = read_manifest(bundle)
    assert manifest["status"] == "complete", manifest["errors"]
    assert list(manifest["artifacts"]) == ALL_FORMATS
    for name, artifact in manifest["artifacts"].items():
        assert artifact["verified"] is True, (name, artifact)
        assert artifact["max_abs_error"] <= 1e-4
    # A fresh process, without treadle, reloads every artifact it can run and compares.
    verified = _run_script(bundle, "--verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    for name in ("onnx", "torchscript", "torch_export"):
        assert f"ok   {name}: sha256 matches; outputs within tolerance" in verified.stdout
    # Predictions for another batch size and length, through ONNX and TorchScript.
    inputs = {
        name: tensor.tolist()
        for name, tensor in _variant_inputs(model, model_type, task)[-1].items()
        if name in manifest["input_names"]
    }
    (tmp_path / "inputs.json").write_text(json.dumps(inputs))
    expected = _outputs(model, inputs)
    for name in ("onnx", "torchscript"):
        output = tmp_path / f"{name}.json"
        result = _run_script(
            bundle,
            "--format",
            name,
            "--input",
            str(tmp_path / "inputs.json"),
            "--output",
            str(output),
        )
        assert result.returncode == 0, result.stderr
        produced = torch.tensor(json.loads(output.read_text())["logits"])
        assert torch.allclose(produced, expected, rtol=1e-4, atol=1e-4), name
        if task.class_names:
            rows = json.loads(result.stdout)["predictions"]
            names = [task.class_names[int(i)] for i in expected.argmax(-1)]
            assert [row["class_name"] for row in rows] == names


@pytest.mark.parametrize("model_type", list(CASES))
@pytest.mark.parametrize("format_name", ALL_FORMATS)
def test_exporter_round_trip_matches_on_other_batch_sizes_and_lengths(
    model_type: str, format_name: str, tmp_path: Path
) -> None:
    model, task, config = _built_in(model_type)
    exporter = get_registry("exporters").create(format_name)
    variants = _variant_inputs(model, model_type, task)
    example = {name: tensor[:1] for name, tensor in variants[1].items()}
    metadata = {
        "model": {
            "class": f"{type(model).__module__}.{type(model).__qualname__}",
            "model_type": model_type,
        },
        "training_config": config.to_dict(),
        "task_spec": task.to_dict(),
    }

    report = check_exporter(
        exporter, model, example, tmp_path, task_spec=task, variants=variants, metadata=metadata
    )

    assert set(report.details["max_abs_error"]) == {
        describe_inputs(inputs) for inputs in [example, *variants]
    }


@pytest.mark.parametrize("format_name", ["onnx", "torchscript", "torch_export"])
def test_the_bundle_loader_runs_the_artifact_without_treadle_on_other_shapes(
    format_name: str, tmp_path: Path
) -> None:
    model, task, _ = _built_in("tiny_gpt")
    variants = _variant_inputs(model, "tiny_gpt", task)
    example = {name: tensor[:1] for name, tensor in variants[1].items()}

    report = check_bundle_loader(
        get_registry("exporters").create(format_name),
        model,
        example,
        tmp_path,
        task_spec=task,
        variants=variants,
    )

    assert set(report.details["max_abs_error"]) == {
        describe_inputs(inputs) for inputs in [example, *variants]
    }


def test_onnx_graph_has_named_dynamic_batch_and_sequence_axes(tmp_path: Path) -> None:
    import onnx

    model, task, config = _built_in("tiny_gpt")
    bundle = create_export_bundle(model, config, task, config, tmp_path, ["onnx"])

    graph = onnx.load(str(bundle / "artifacts" / "model.onnx")).graph
    onnx.checker.check_model(str(bundle / "artifacts" / "model.onnx"), full_check=True)
    dims = {
        value.name: [dim.dim_param or dim.dim_value for dim in value.type.tensor_type.shape.dim]
        for value in [*graph.input, *graph.output]
    }
    assert dims["input_ids"] == ["batch", "sequence"]
    assert dims["logits"][:2] == ["batch", "sequence"]
