"""Export bundles: layout, manifest, atomic publishing, partial bundles, X5 and inference.py.

These use small models of the test's own (a user's model, not a built-in) and the fast
formats; every format on every built-in model is in test_export_formats.py.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import attrs
import pytest
import torch
from torch import nn

import treadle_onnx.plugin
import treadle_torchscript.plugin
from treadle import hookimpl
from treadle.config import TrainingConfig
from treadle.errors import UnknownNameError
from treadle.export import (
    BundleLoader,
    ExportError,
    ExportRequest,
    create_export_bundle,
    read_manifest,
    sha256_of,
)
from treadle.export.inputs import derive_example_inputs
from treadle.export.publish import publish
from treadle.plugins import PluginManager, get_registry
from treadle.task import TaskSpec
from treadle.testing import isolated_plugin_manager
from treadle.testing.exporters import check_exporter
from treadle_torchscript.torchscript import TorchScriptExporter

VOCAB = 40
LENGTH = 12

# Runs a bundle script with treadle and its plugins unimportable: `import treadle` raises.
_NO_TREADLE = (
    "import runpy, sys\n"
    "for name in ('treadle', 'treadle_onnx', 'treadle_torchscript', 'treadle_models'):\n"
    "    sys.modules[name] = None\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


class TokenClassifier(nn.Module):
    """Mean of token embeddings over the attention mask, then a linear layer."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, 8)
        self.head = nn.Linear(8, num_classes)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **_: Any
    ) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        weights = attention_mask.unsqueeze(-1).float()
        pooled = (self.embedding(input_ids) * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return self.head(pooled)


class SignDependent(TokenClassifier):
    """Branches on a tensor's value: torch.export (and so ONNX) refuses it; tracing keeps one
    branch, which is right for the sample it was traced with."""

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **_: Any
    ) -> torch.Tensor:
        logits = super().forward(input_ids, attention_mask)
        if logits.sum() > 0:
            return logits * 2
        return logits


Export = Callable[..., Path]


@pytest.fixture
def export(
    tmp_path: Path, manager: PluginManager, task: TaskSpec, training_config: TrainingConfig
) -> Export:
    """``export(formats, **arguments)``: create_export_bundle of a new TokenClassifier with the
    test's task, training config and plugins into tmp_path; any argument can be given."""

    def run(formats: list[str], **arguments: Any) -> Path:
        arguments.setdefault("model", TokenClassifier())
        arguments.setdefault("config", {})
        arguments.setdefault("task_spec", task)
        arguments.setdefault("training_config", training_config)
        arguments.setdefault("output_dir", tmp_path)
        arguments.setdefault("plugin_manager", manager)
        return create_export_bundle(formats=formats, **arguments)

    return run


@pytest.fixture
def manager() -> PluginManager:
    return isolated_plugin_manager(
        ("onnx", treadle_onnx.plugin), ("torchscript", treadle_torchscript.plugin)
    )


@pytest.fixture
def task() -> TaskSpec:
    return TaskSpec.classification(
        "sentiment", num_classes=3, class_names=("neg", "neutral", "pos"), max_seq_len=LENGTH
    )


@pytest.fixture
def training_config() -> TrainingConfig:
    return TrainingConfig(vocab_size=VOCAB, max_seq_len=LENGTH, model_type="token_classifier")


def model_outputs(model: nn.Module, inputs: dict[str, list[Any]]) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**{name: torch.tensor(value) for name, value in inputs.items()})


def run_script(
    bundle: Path, *arguments: str, cwd: Path | None = None, missing: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """Run a bundle's inference.py as a user would: a clean environment, no PYTHONPATH, and
    treadle (and the ``missing`` modules) unimportable."""
    environment = {"PATH": os.environ.get("PATH", ""), "HOME": str(cwd or bundle)}
    code = _NO_TREADLE.replace("'treadle_models')", f"'treadle_models', *{missing!r})")
    return subprocess.run(
        [sys.executable, "-I", "-c", code, str(bundle / "inference.py"), *arguments],
        cwd=cwd or bundle,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_bundle_has_the_spec_layout_and_a_manifest_describing_it(
    tmp_path: Path, manager: PluginManager, task: TaskSpec, training_config: TrainingConfig
) -> None:
    model = TokenClassifier()
    bundle = create_export_bundle(
        model,
        SimpleNamespace(name="sentiment-mlp", d_model=8),
        task,
        training_config,
        output_dir=tmp_path / "exports",
        formats=["torchscript", "pytorch"],
        plugin_manager=manager,
    )

    assert bundle.parent == tmp_path / "exports"
    assert bundle.name.startswith("model_")
    for relative in (
        "artifacts/model.torchscript.pt",
        "artifacts/model.pytorch.pt",
        "configs/task_spec.json",
        "configs/training_config.json",
        "configs/torchserve_config.json",
        "inference.py",
        "handler.py",
        "config.properties",
        "README.md",
        "Dockerfile",
        "requirements.txt",
        "manifest.json",
    ):
        assert (bundle / relative).is_file(), relative
    manifest = read_manifest(bundle)
    assert manifest["status"] == "complete"
    assert manifest["errors"] == {}
    assert manifest["model"]["name"] == "sentiment-mlp"
    assert manifest["model"]["config"] == {"name": "sentiment-mlp", "d_model": 8}
    assert manifest["versions"]["torch"] == torch.__version__
    for artifact in manifest["artifacts"].values():
        assert sha256_of(bundle / artifact["file"]) == artifact["sha256"]
    assert manifest["artifacts"]["torchscript"]["verified"] is True
    # The sample's outputs are the model's own for the sample's inputs.
    expected = model_outputs(model, manifest["sample"]["inputs"])
    recorded = torch.tensor(manifest["sample"]["outputs"]["logits"])
    assert torch.allclose(recorded, expected)
    assert manifest["signature"]["inputs"] == [
        {"name": "input_ids", "dtype": "int64", "shape": ["batch", "sequence"]},
        {"name": "attention_mask", "dtype": "int64", "shape": ["batch", "sequence"]},
    ]
    assert manifest["signature"]["outputs"] == [
        {"name": "logits", "dtype": "float32", "shape": ["batch", 3]}
    ]
    assert TaskSpec.load(bundle / "configs" / "task_spec.json") == task
    assert TrainingConfig.load(bundle / "configs" / "training_config.json") == training_config
    served = json.loads((bundle / "configs" / "torchserve_config.json").read_text())
    assert served["serialized_file"] == "artifacts/model.torchscript.pt"
    assert "--serialized-file artifacts/model.torchscript.pt" in " ".join(
        (bundle / "Dockerfile").read_text().split()
    )
    assert "load_models=model.mar" in (bundle / "config.properties").read_text()
    assert "deprecated" in (bundle / "README.md").read_text()


def test_inference_script_predicts_without_treadle_and_matches_the_model(
    tmp_path: Path, manager: PluginManager, task: TaskSpec, training_config: TrainingConfig
) -> None:
    model = TokenClassifier()
    bundle = create_export_bundle(
        model, {}, task, training_config, tmp_path, ["torchscript"], plugin_manager=manager
    )
    manifest = read_manifest(bundle)

    result = run_script(bundle, "--output", str(tmp_path / "sample.json"))
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    produced = torch.tensor(json.loads((tmp_path / "sample.json").read_text())["logits"])
    expected = model_outputs(model, manifest["sample"]["inputs"])
    assert torch.allclose(produced, expected, atol=1e-5)
    assert printed["predictions"][0]["class_name"] == task.class_names[int(expected.argmax())]

    # Another batch size and length, from an input file.
    inputs = {
        "input_ids": torch.randint(0, VOCAB, (3, 5)).tolist(),
        "attention_mask": [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]],
    }
    (tmp_path / "inputs.json").write_text(json.dumps(inputs))
    result = run_script(
        bundle, "--input", str(tmp_path / "inputs.json"), "--output", str(tmp_path / "out.json")
    )
    assert result.returncode == 0, result.stderr
    produced = torch.tensor(json.loads((tmp_path / "out.json").read_text())["logits"])
    assert torch.allclose(produced, model_outputs(model, inputs), atol=1e-5)


def test_inference_script_names_a_missing_input(
    tmp_path: Path, manager: PluginManager, task: TaskSpec, training_config: TrainingConfig
) -> None:
    bundle = create_export_bundle(
        TokenClassifier(),
        {},
        task,
        training_config,
        tmp_path,
        ["torchscript"],
        plugin_manager=manager,
    )
    (tmp_path / "inputs.json").write_text(json.dumps({"input_ids": [[1, 2]]}))

    result = run_script(bundle, "--input", str(tmp_path / "inputs.json"))

    assert result.returncode == 2
    assert "attention_mask" in result.stderr


def test_verify_passes_on_a_fresh_bundle_and_fails_on_a_tampered_artifact(
    tmp_path: Path, manager: PluginManager, task: TaskSpec, training_config: TrainingConfig
) -> None:
    bundle = create_export_bundle(
        TokenClassifier(),
        {},
        task,
        training_config,
        tmp_path / "a",
        ["torchscript", "pytorch"],
        plugin_manager=manager,
    )
    result = run_script(bundle, "--verify")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok   torchscript" in result.stdout
    assert "ok   pytorch: sha256 matches; outputs not checked" in result.stdout

    # A flipped byte: the sha256 no longer matches.
    artifact = bundle / "artifacts" / "model.torchscript.pt"
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))
    result = run_script(bundle, "--verify")
    assert result.returncode == 1
    assert "FAIL torchscript: sha256" in result.stdout

    # Another model's artifact with its sha256 put into the manifest: the outputs differ.
    other = create_export_bundle(
        TokenClassifier(),
        {},
        task,
        training_config,
        tmp_path / "b",
        ["torchscript"],
        plugin_manager=manager,
    )
    artifact.write_bytes((other / "artifacts" / "model.torchscript.pt").read_bytes())
    manifest = read_manifest(bundle)
    manifest["artifacts"]["torchscript"]["sha256"] = sha256_of(artifact)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    result = run_script(bundle, "--verify")
    assert result.returncode == 1
    assert "FAIL torchscript: outputs differ" in result.stdout


HOSTILE = [
    "'; import os; os._exit(3) #",
    '"""\nimport os\nos._exit(4)\n"""',
    "{__import__('os')._exit(5)}",
    "back`tick` \\ and \x00 nul",
]


def test_x5_names_with_quotes_newlines_and_code_stay_literal_data(
    tmp_path: Path, manager: PluginManager, training_config: TrainingConfig
) -> None:
    task = TaskSpec.classification(
        "task\"'); os._exit(6)\n#", num_classes=4, class_names=HOSTILE, max_seq_len=LENGTH
    )
    model = TokenClassifier(num_classes=4)
    bundle = create_export_bundle(
        model,
        {"name": "model'''\"\"\"; raise SystemExit(7)"},
        task,
        training_config,
        tmp_path,
        ["torchscript"],
        plugin_manager=manager,
    )

    for script in ("inference.py", "handler.py"):
        source = (bundle / script).read_text()
        ast.parse(source)
        assert "_exit" not in source
        assert "SystemExit(7)" not in source
    for loader in (bundle / "loaders").iterdir():  # copied from the plugin, byte for byte
        source = loader.read_text()
        ast.parse(source)
        assert "_exit" not in source
        module = loader.name.removesuffix(".py")
        assert source == Path(importlib.util.find_spec(module).origin).read_text()
    for text_file in ("Dockerfile", "config.properties", "requirements.txt"):
        assert "_exit" not in (bundle / text_file).read_text()
    readme = (bundle / "README.md").read_text()
    assert json.dumps(task.name) in readme  # JSON-encoded, inside a code span
    assert "os._exit(6)\n" not in readme
    manifest = read_manifest(bundle)
    assert manifest["task"]["class_names"] == HOSTILE
    assert manifest["model"]["name"] == "model'''\"\"\"; raise SystemExit(7)"

    # Each hostile class name comes back verbatim: token i votes for class i.
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        for index in range(4):
            model.embedding.weight[index, index] = 1.0
            model.head.weight[index, index] = 10.0
    bundle = create_export_bundle(
        model,
        {},
        task,
        training_config,
        tmp_path / "votes",
        ["torchscript"],
        plugin_manager=manager,
    )
    inputs = {"input_ids": [[index] * 3 for index in range(4)], "attention_mask": [[1] * 3] * 4}
    (tmp_path / "inputs.json").write_text(json.dumps(inputs))
    result = run_script(bundle, "--input", str(tmp_path / "inputs.json"))
    assert result.returncode == 0, result.stderr
    predicted = [row["class_name"] for row in json.loads(result.stdout)["predictions"]]
    assert predicted == HOSTILE


def test_a_failing_format_leaves_a_partial_bundle_with_the_others(
    tmp_path: Path, manager: PluginManager, task: TaskSpec, training_config: TrainingConfig
) -> None:
    bundle = create_export_bundle(
        SignDependent(),
        {},
        task,
        training_config,
        tmp_path,
        ["torchscript", "torch_export", "pytorch"],
        plugin_manager=manager,
    )

    manifest = read_manifest(bundle)
    assert manifest["status"] == "partial"
    assert list(manifest["artifacts"]) == ["torchscript", "pytorch"]
    error = manifest["errors"]["torch_export"]
    assert error.startswith("export format 'torch_export' failed for SignDependent: ")
    assert "data" in error.lower()  # torch.export's cause: data-dependent control flow
    assert not (bundle / "artifacts" / "model.pt2").exists()
    assert "Formats that failed" in (bundle / "README.md").read_text()
    assert run_script(bundle, "--verify").returncode == 0


def test_no_format_succeeding_raises_and_leaves_no_folder(
    tmp_path: Path, manager: PluginManager, task: TaskSpec, training_config: TrainingConfig
) -> None:
    with pytest.raises(ExportError, match="torch_export") as caught:
        create_export_bundle(
            SignDependent(),
            {},
            task,
            training_config,
            tmp_path,
            ["torch_export"],
            plugin_manager=manager,
        )

    assert set(caught.value.errors) == {"torch_export"}
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_format_is_refused_listing_the_registered_ones(
    tmp_path: Path, manager: PluginManager, task: TaskSpec, training_config: TrainingConfig
) -> None:
    with pytest.raises(UnknownNameError) as caught:
        create_export_bundle(
            TokenClassifier(),
            {},
            task,
            training_config,
            tmp_path,
            ["onnx", "onxx"],
            plugin_manager=manager,
        )

    message = str(caught.value)
    assert "'onxx'" in message
    for name in ("onnx", "pytorch", "torch_export", "torchscript"):
        assert name in message
    assert "Did you mean 'onnx'?" in message
    assert not tmp_path.exists() or list(tmp_path.iterdir()) == []


def test_publishing_never_overwrites_an_existing_bundle(tmp_path: Path) -> None:
    existing = tmp_path / "model_20250101_000000"
    existing.mkdir()
    (existing / "manifest.json").write_text("{}")
    staging = tmp_path / ".model_abc.tmp"
    staging.mkdir()
    (staging / "manifest.json").write_text('{"new": true}')

    published = publish(staging, tmp_path, "model_20250101_000000")

    assert published == tmp_path / "model_20250101_000000_2"
    assert (existing / "manifest.json").read_text() == "{}"
    assert json.loads((published / "manifest.json").read_text()) == {"new": True}
    assert not staging.exists()


def test_two_exports_in_a_row_give_two_bundles(
    tmp_path: Path, manager: PluginManager, task: TaskSpec, training_config: TrainingConfig
) -> None:
    model = TokenClassifier()
    first = create_export_bundle(
        model, {}, task, training_config, tmp_path, ["pytorch"], plugin_manager=manager
    )
    second = create_export_bundle(
        model, {}, task, training_config, tmp_path, ["pytorch"], plugin_manager=manager
    )

    assert first != second
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([first.name, second.name])


def test_example_inputs_follow_the_task(training_config: TrainingConfig) -> None:
    text = derive_example_inputs(
        TokenClassifier(),
        TaskSpec.language_modeling(max_seq_len=9),
        vocab_size=VOCAB,
        max_seq_len=64,
    )
    assert text["input_ids"].shape == (1, 9)
    assert text["input_ids"].dtype == torch.int64
    assert int(text["input_ids"].max()) < VOCAB
    assert torch.equal(text["attention_mask"], torch.ones(1, 9, dtype=torch.int64))

    class IdsOnly(nn.Module):
        def forward(self, input_ids: torch.Tensor, **_: Any) -> torch.Tensor:
            return input_ids.float()

    ids_only = derive_example_inputs(
        IdsOnly(), TaskSpec.language_modeling(max_seq_len=9), vocab_size=VOCAB, max_seq_len=64
    )
    assert list(ids_only) == ["input_ids"]
    vision = derive_example_inputs(IdsOnly(), TaskSpec.vision_tiny(), vocab_size=2, max_seq_len=1)
    assert vision["pixel_values"].shape == (1, 1, 8, 8)


def test_only_json_ready_config_fields_are_stored(
    tmp_path: Path, manager: PluginManager, task: TaskSpec, training_config: TrainingConfig
) -> None:
    config = SimpleNamespace(
        d_model=8, activation=nn.GELU(), ratio=float("nan"), layers={"sizes": (8, 4)}
    )
    bundle = create_export_bundle(
        TokenClassifier(),
        config,
        task,
        training_config,
        tmp_path,
        ["pytorch"],
        plugin_manager=manager,
    )

    model = read_manifest(bundle)["model"]
    assert model["config"] == {"d_model": 8, "layers": {"sizes": [8, 4]}}
    assert model["config_fields_not_stored"] == ["$.activation", "$.ratio"]
    assert model["class"].endswith("TokenClassifier")


class NumpyWeights:
    """A third party's format: every weight in one .npz. It registers without touching the
    core; inference.py cannot run it, so a bundle checks its sha256 only."""

    artifact_name = "weights.npz"
    runtime = ""
    requirements = ("numpy>=1.24",)

    def export(self, request: ExportRequest) -> None:
        import numpy

        weights = {k: v.numpy() for k, v in request.model.state_dict().items()}
        with request.path.open("wb") as handle:
            numpy.savez(handle, **weights)

    def load(self, path: Path) -> Any:
        msg = "weights only: load them into the model yourself"
        raise NotImplementedError(msg)


class NumpyPlugin:
    @hookimpl
    def treadle_register_exporters(self, register: Any) -> None:
        register("npz", NumpyWeights)


def test_a_third_party_format_is_written_and_checked_by_sha256(
    tmp_path: Path, task: TaskSpec, training_config: TrainingConfig
) -> None:
    manager = isolated_plugin_manager(
        ("torchscript", treadle_torchscript.plugin), ("numpy-weights", NumpyPlugin())
    )
    bundle = create_export_bundle(
        TokenClassifier(),
        {},
        task,
        training_config,
        tmp_path,
        ["torchscript", "npz"],
        plugin_manager=manager,
    )

    artifact = read_manifest(bundle)["artifacts"]["npz"]
    assert artifact["verified"] is False
    assert "weights only" in artifact["verification"]
    result = run_script(bundle, "--verify")
    assert result.returncode == 0, result.stdout
    assert "ok   npz: sha256 matches; outputs not checked" in result.stdout


def test_exporter_conformance_reports_each_shape_and_catches_a_mismatch(
    tmp_path: Path, task: TaskSpec
) -> None:
    model = TokenClassifier()
    example = {"input_ids": torch.randint(0, VOCAB, (1, LENGTH))}
    variants = [
        {"input_ids": torch.randint(0, VOCAB, (batch, length))}
        for batch, length in ((3, 4), (5, LENGTH))
    ]

    report = check_exporter(
        TorchScriptExporter(), model, example, tmp_path / "ok", task_spec=task, variants=variants
    )
    assert list(report.details["max_abs_error"]) == [
        "input_ids (1, 12)",
        "input_ids (3, 4)",
        "input_ids (5, 12)",
    ]

    class Drifting(TorchScriptExporter):
        def export(self, request: ExportRequest) -> None:
            bias = request.user_model.head.bias
            with torch.no_grad():
                bias.add_(1.0)
            try:
                super().export(request)
            finally:
                with torch.no_grad():
                    bias.sub_(1.0)

    (tmp_path / "bad").mkdir()
    with pytest.raises(AssertionError, match=r"model\.torchscript\.pt on input_ids \(1, 12\)"):
        check_exporter(Drifting(), model, example, tmp_path / "bad", task_spec=task)


_CALL_HANDLER = """
import json, sys, types
for name in ('treadle', 'treadle_onnx', 'treadle_torchscript', 'treadle_models'):
    sys.modules[name] = None
bundle = sys.argv[1]
sys.path.insert(0, bundle)
import handler
context = types.SimpleNamespace(system_properties={"model_dir": bundle})
body = open(sys.argv[2], "rb").read()
print(json.dumps(handler.handle([{"body": body}, {"data": body.decode()}], context)))
"""


def call_handler(bundle: Path, request: Path) -> subprocess.CompletedProcess[str]:
    """The bundle's TorchServe handler answering ``request`` twice, treadle unimportable."""
    return subprocess.run(
        [sys.executable, "-I", "-c", _CALL_HANDLER, str(bundle), str(request)],
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(request.parent)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_torchserve_handler_answers_requests_without_treadle(
    tmp_path: Path, manager: PluginManager, task: TaskSpec, training_config: TrainingConfig
) -> None:
    model = TokenClassifier()
    bundle = create_export_bundle(
        model, {}, task, training_config, tmp_path, ["torchscript"], plugin_manager=manager
    )
    inputs = {"input_ids": [[1, 2, 3], [4, 5, 6]], "attention_mask": [[1, 1, 1], [1, 1, 0]]}
    (tmp_path / "request.json").write_text(json.dumps(inputs))

    result = call_handler(bundle, tmp_path / "request.json")

    assert result.returncode == 0, result.stderr
    expected = [task.class_names[int(i)] for i in model_outputs(model, inputs).argmax(-1)]
    responses = json.loads(result.stdout)
    assert len(responses) == 2
    for response in responses:
        assert [row["class_name"] for row in response] == expected


class LoaderImportingTreadle(TorchScriptExporter):
    """A format whose loader would need treadle inside the bundle."""

    artifact_name = "leaky.pt"
    loader = BundleLoader(module="acme_leaky_loader")


def test_a_loader_that_does_not_stand_alone_fails_its_format_naming_the_line(
    tmp_path: Path,
    export: Export,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "acme_leaky_loader.py").write_text(
        "import numpy\nfrom treadle.export import PositionalModel\n\ndef load(path):\n    ...\n"
    )
    monkeypatch.syspath_prepend(str(site))

    class LeakyPlugin:
        @hookimpl
        def treadle_register_exporters(self, register: Any) -> None:
            register("leaky", LoaderImportingTreadle)

    manager = isolated_plugin_manager(
        ("torchscript", treadle_torchscript.plugin), ("leaky", LeakyPlugin())
    )
    bundle = export(["torchscript", "leaky"], plugin_manager=manager)

    manifest = read_manifest(bundle)
    assert list(manifest["artifacts"]) == ["torchscript"]
    assert "imports 'treadle.export' (line 2)" in manifest["errors"]["leaky"]
    assert sorted(path.name for path in (bundle / "loaders").iterdir()) == [
        "treadle_torchscript.bundle_loader.py"
    ]


def test_each_artifact_names_its_loader_and_a_tampered_loader_never_runs(
    tmp_path: Path,
    export: Export,
) -> None:
    bundle = export(["torchscript", "torch_export", "pytorch"])
    manifest = read_manifest(bundle)
    loaders = {name: artifact["loader"] for name, artifact in manifest["artifacts"].items()}
    assert loaders["pytorch"] is None
    assert loaders["torchscript"]["file"] == loaders["torch_export"]["file"]
    assert loaders["torchscript"]["function"] == "load_torchscript"
    assert loaders["torch_export"]["function"] == "load_torch_export"
    assert loaders["torchscript"]["imports"] == ["torch"]
    loader_file = bundle / loaders["torchscript"]["file"]
    assert sha256_of(loader_file) == loaders["torchscript"]["sha256"]
    served = json.loads((bundle / "configs" / "torchserve_config.json").read_text())
    assert loaders["torchscript"]["file"] in served["extra_files"]

    # A loader edited after export: nothing runs it, and --verify says which.
    marker = tmp_path / "ran"
    loader_file.write_text(
        loader_file.read_text() + f"\nopen({str(marker)!r}, 'w').close()\n", encoding="utf-8"
    )
    predicted = run_script(bundle)
    assert predicted.returncode == 2
    assert "loader" in predicted.stderr
    assert "sha256" in predicted.stderr
    verified = run_script(bundle, "--verify")
    assert verified.returncode == 1
    assert "FAIL torchscript" in verified.stdout
    assert "FAIL torch_export" in verified.stdout
    assert not marker.exists()


def test_predicting_from_a_tampered_artifact_is_refused_unless_asked(
    tmp_path: Path,
    export: Export,
    manager: PluginManager,
    task: TaskSpec,
    training_config: TrainingConfig,
) -> None:
    """Issue 14.8: a changed artifact never predicts silently; --skip-checksum is explicit."""
    model = TokenClassifier()
    bundle = create_export_bundle(
        model, {}, task, training_config, tmp_path / "a", ["torchscript"], plugin_manager=manager
    )
    other = export(["torchscript"], output_dir=tmp_path / "b")
    artifact = bundle / "artifacts" / "model.torchscript.pt"
    artifact.write_bytes((other / "artifacts" / "model.torchscript.pt").read_bytes())

    refused = run_script(bundle)
    assert refused.returncode == 2
    assert refused.stdout == ""
    assert "artifacts/model.torchscript.pt (torchscript) does not match its sha256" in (
        refused.stderr
    )
    assert "--skip-checksum" in refused.stderr

    forced = run_script(bundle, "--skip-checksum", "--output", str(tmp_path / "out.json"))
    assert forced.returncode == 0, forced.stderr
    produced = torch.tensor(json.loads((tmp_path / "out.json").read_text())["logits"])
    expected = model_outputs(model, read_manifest(bundle)["sample"]["inputs"])
    assert not torch.allclose(produced, expected, atol=1e-5)  # the other model's answer


def test_the_torchserve_handler_refuses_a_tampered_artifact(
    tmp_path: Path,
    export: Export,
) -> None:
    bundle = export(["torchscript"])
    artifact = bundle / "artifacts" / "model.torchscript.pt"
    artifact.write_bytes(artifact.read_bytes() + b"\0")
    (tmp_path / "request.json").write_text(json.dumps({"input_ids": [[1, 2]]}))

    result = call_handler(bundle, tmp_path / "request.json")

    assert result.returncode != 0
    assert "does not match its sha256" in result.stderr


@pytest.mark.parametrize("below", ["", "sub/dir"])
def test_an_output_dir_that_is_or_lies_under_a_file_is_refused_naming_it(
    tmp_path: Path,
    export: Export,
    below: str,
) -> None:
    """Issue 14.7: ``--output-dir FILE`` is an ExportError naming the path, not a traceback."""
    existing = tmp_path / "exports"
    existing.write_text("not a folder")
    output_dir = existing / below if below else existing

    with pytest.raises(ExportError, match="output_dir") as caught:
        export(["torchscript"], output_dir=output_dir)

    assert repr(str(output_dir)) in str(caught.value)
    assert "file" in str(caught.value)
    assert existing.read_text() == "not a folder"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["exports"]


def test_the_pytorch_format_keeps_the_weights_of_a_model_its_factory_cannot_rebuild(
    export: Export,
    task: TaskSpec,
) -> None:
    """Issue 14.9: a hand-built classifier whose config names tiny_gpt (the default) for a
    classification task: the factory refuses, the weights stay, verified false with why."""
    model = TokenClassifier()
    bundle = export(
        ["pytorch"],
        model=model,
        training_config=TrainingConfig(vocab_size=VOCAB, max_seq_len=LENGTH),
    )

    manifest = read_manifest(bundle)
    assert manifest["status"] == "complete"
    artifact = manifest["artifacts"]["pytorch"]
    assert artifact["verified"] is False
    assert "factory 'tiny_gpt' cannot build a model from the recipe" in artifact["verification"]
    assert "TokenClassifier yourself" in artifact["verification"]
    weights = torch.load(bundle / artifact["file"], weights_only=True)["state_dict"]
    for key, value in model.state_dict().items():
        assert torch.equal(weights[key], value)


def test_the_pytorch_format_keeps_weights_that_do_not_fit_the_rebuilt_model(
    tmp_path: Path, manager: PluginManager
) -> None:
    """The recipe's factory builds the same class, with other sizes: weights kept, not
    verified, the mismatch said."""
    from treadle_models.mlp import MLPClassifier

    config = TrainingConfig(vocab_size=VOCAB, max_seq_len=LENGTH, model_type="mlp_classifier")
    task = TaskSpec.classification("topics", num_classes=3, max_seq_len=LENGTH)
    model = get_registry("models").get("mlp_classifier")(attrs.evolve(config, d_model=24), task)
    assert isinstance(model, MLPClassifier)

    bundle = create_export_bundle(
        model, {}, task, config, tmp_path, ["pytorch"], plugin_manager=manager
    )

    artifact = read_manifest(bundle)["artifacts"]["pytorch"]
    assert artifact["verified"] is False
    assert (
        "the weights do not fit the model factory 'mlp_classifier' builds"
        in (artifact["verification"])
    )


NOISE = [
    "noisy: print to stdout",
    "noisy: sys.stderr",
    "noisy: fd 2, as C++ writes",
    "noisy: libc printf",
    "noisy: a third-party logger",
    "noisy: a FutureWarning",
]


class NoisyTorchScript(TorchScriptExporter):
    """Writes as the export libraries do: print, stderr, raw fd 2, libc's stdout, a
    third-party logger whose handler writes to the process's stderr, a warning."""

    fail = False

    def export(self, request: ExportRequest) -> None:
        import ctypes
        import warnings

        print(NOISE[0])
        sys.stderr.write(NOISE[1] + "\n")
        os.write(2, (NOISE[2] + "\n").encode())
        ctypes.CDLL(None).printf((NOISE[3] + "\n").encode())
        logging.getLogger("acme.noisy").warning(NOISE[4])
        warnings.warn(NOISE[5], FutureWarning, stacklevel=1)
        if self.fail:
            msg = "the model has a layer this format cannot write"
            raise ValueError(msg)
        super().export(request)


class FailingNoisy(NoisyTorchScript):
    artifact_name = "failing.pt"
    fail = True


@pytest.fixture
def noisy_manager() -> Iterator[PluginManager]:
    class NoisyPlugin:
        @hookimpl
        def treadle_register_exporters(self, register: Any) -> None:
            register("noisy", NoisyTorchScript)
            register("failing", FailingNoisy)

    # A handler on the process's stderr (fd 2), as the CLI's logging.basicConfig has.
    handler = logging.StreamHandler(open(2, "w", closefd=False))  # noqa: SIM115
    third_party = logging.getLogger("acme.noisy")
    third_party.addHandler(handler)
    try:
        yield isolated_plugin_manager(
            ("torchscript", treadle_torchscript.plugin), ("noisy", NoisyPlugin())
        )
    finally:
        third_party.removeHandler(handler)


def test_library_output_goes_to_the_bundles_export_log_not_the_terminal(
    export: Export,
    noisy_manager: PluginManager,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Issue 15.4: what export libraries print, from Python or C, lands in export.log."""
    bundle = export(["noisy", "failing"], plugin_manager=noisy_manager)

    captured = capfd.readouterr()
    for line in NOISE:
        assert line not in captured.out + captured.err
    manifest = read_manifest(bundle)
    assert manifest["export_log"] == "export.log"
    log = (bundle / "export.log").read_text()
    for line in NOISE:
        assert log.count(line + "\n") == 2, line  # once per format, whole lines
    assert "== noisy: export and verification ==" in log
    assert "ValueError: the model has a layer this format cannot write" in log  # traceback


def test_a_failing_exporter_still_reports_its_error(
    export: Export,
    noisy_manager: PluginManager,
    caplog: pytest.LogCaptureFixture,
) -> None:
    export(["torchscript", "failing"], plugin_manager=noisy_manager)

    warned = [record for record in caplog.records if record.levelno == logging.WARNING]
    messages = [record.getMessage() for record in warned if record.name.startswith("treadle")]
    assert any(
        "export format 'failing' failed for TokenClassifier: ValueError: the model has a layer"
        in message
        for message in messages
    )


@pytest.mark.parametrize("asked_by", ["argument", "debug logging"])
def test_library_output_also_reaches_the_terminal_when_asked(
    export: Export,
    noisy_manager: PluginManager,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    asked_by: str,
) -> None:
    """At -v (DEBUG on treadle's export logger) or with show_library_output=True, the lines
    also reach stderr, as they come; the log keeps them too."""
    show = True if asked_by == "argument" else None
    if asked_by == "debug logging":
        caplog.set_level(logging.DEBUG, logger="treadle.export")
    bundle = export(["noisy"], plugin_manager=noisy_manager, show_library_output=show)

    terminal = capfd.readouterr().err
    for line in NOISE:
        assert line in terminal
        assert line in (bundle / "export.log").read_text()


def test_a_bundle_is_named_after_the_model_and_version_and_a_second_export_never_clobbers_it(
    tmp_path: Path,
    export: Export,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 15.9: a registry entry's bundle is ``<name>-<version>``; exporting that version
    again writes ``_2`` beside it, says so, and leaves the first byte for byte."""
    entry = {"name": "tiny-gpt", "version": "1.0.0", "model_id": 7}
    first = export(["pytorch"], config=entry)
    before = {path: path.read_bytes() for path in first.rglob("*") if path.is_file()}

    second = export(["pytorch"], config=entry)

    assert first == tmp_path / "tiny-gpt-1.0.0"
    assert second == tmp_path / "tiny-gpt-1.0.0_2"
    assert {path: path.read_bytes() for path in first.rglob("*") if path.is_file()} == before
    assert any(
        "tiny-gpt-1.0.0 already exists" in record.getMessage()
        and str(second) in record.getMessage()
        for record in caplog.records
        if record.levelno == logging.WARNING
    )
    named = export(["pytorch"], bundle_name="release candidate")
    assert named == tmp_path / "release-candidate"


HOSTILE_NAMES = [
    ("../../escaped", "1.0"),
    ("/etc/passwd", "../.."),
    ("a/b\\\\c", "1\x00evil"),
    ("..", "."),
    ("-rf", "--"),
    ("x" * 5000, "1.0.0"),
    ("名前 with spaces\nand newline", "v1"),
]


@pytest.mark.parametrize(("name", "version"), HOSTILE_NAMES)
def test_x1_a_hostile_model_name_or_version_never_leaves_the_output_root(
    tmp_path: Path,
    export: Export,
    name: str,
    version: str,
) -> None:
    root = tmp_path / "deep" / "exports"
    bundle = export(["pytorch"], config={"name": name, "version": version}, output_dir=root)

    assert bundle.parent == root
    assert bundle.resolve().parent == root.resolve()
    assert not bundle.name.startswith((".", "-"))
    assert len(bundle.name) <= 100
    assert sorted(path.name for path in tmp_path.rglob("*") if path.parent == tmp_path) == ["deep"]
    assert sorted(path.name for path in root.iterdir()) == [bundle.name]
    assert read_manifest(bundle)["model"]["name"] == name  # the name itself stays data


def test_two_long_names_that_share_a_prefix_get_two_bundles(
    export: Export,
) -> None:
    bundles = [
        export(["pytorch"], config={"name": "m" * 300 + suffix, "version": "1"})
        for suffix in ("a", "b")
    ]

    assert bundles[0].name != bundles[1].name
    assert not bundles[1].name.endswith("_2")


def test_without_a_formats_runtime_the_bundle_runs_another_and_says_what_is_missing(
    export: Export,
) -> None:
    bundle = export(["onnx", "torchscript"])

    chosen = run_script(bundle)
    assert chosen.returncode == 0, chosen.stderr
    assert json.loads(chosen.stdout)["format"] == "onnx"  # the highest loader priority
    fallback = run_script(bundle, missing=("onnxruntime",))
    assert fallback.returncode == 0, fallback.stderr
    assert json.loads(fallback.stdout)["format"] == "torchscript"
    asked = run_script(bundle, "--format", "onnx", missing=("onnxruntime",))
    assert asked.returncode == 2
    assert asked.stderr.startswith("inference.py: format 'onnx' needs onnxruntime: pip install")
    verified = run_script(bundle, "--verify", missing=("onnxruntime",))
    assert verified.returncode == 0, verified.stdout
    assert "ok   onnx: sha256 matches; outputs not checked: onnxruntime not installed" in (
        verified.stdout
    )


def test_a_runtime_error_on_bad_input_is_one_line_not_a_traceback(
    tmp_path: Path,
    export: Export,
) -> None:
    bundle = export(["torchscript"])
    inputs = {"input_ids": [[VOCAB + 1000, 1]], "attention_mask": [[1, 1]]}
    (tmp_path / "inputs.json").write_text(json.dumps(inputs))

    result = run_script(bundle, "--input", str(tmp_path / "inputs.json"))

    assert result.returncode == 2
    assert result.stderr.startswith("inference.py: running 'torchscript' failed: ")
    assert "Traceback (most recent call last)" not in result.stderr  # Python's, not torch's text
