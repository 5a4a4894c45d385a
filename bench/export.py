"""Export time per format, and artifact inference latency against eager PyTorch.

    .venv/bin/python bench/export.py [--models tiny_gpt,mlp_classifier,small_cnn]
                                     [--repeats 5] [--runs 50] [--batch 8] [--threads 1]

For each built-in model (built by its factory from the ``models`` registry, quick_prototype
sizes): the median time to export each format (after one warm-up export, so torch._dynamo's
first import is not counted), then the median latency of one forward pass on the same batch
through eager PyTorch (the baseline), onnxruntime, TorchScript and torch.export, with the
ratio to eager. Every runtime gets the same thread count. Numbers from a shared machine are
noisy: read the ratios, and rerun before believing a small difference.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from treadle.config import TrainingConfig, TrainingConfigBuilder
from treadle.export import PositionalModel, create_export_bundle, read_manifest
from treadle.export.artifacts import runner_for
from treadle.plugins import get_registry
from treadle.task import TaskSpec

FORMATS = ["onnx", "torchscript", "torch_export", "pytorch"]


def _task(model_type: str, config: TrainingConfig) -> TaskSpec:
    if model_type == "small_cnn":
        return TaskSpec.vision_tiny()
    if model_type == "mlp_classifier":
        return TaskSpec.classification("topics", num_classes=4, max_seq_len=config.max_seq_len)
    return TaskSpec.language_modeling("lm", max_seq_len=config.max_seq_len)


def _batch(manifest: dict[str, Any], batch_size: int) -> list[torch.Tensor]:
    """The manifest's sample repeated to ``batch_size`` rows, in signature order."""
    tensors = []
    for spec in manifest["signature"]["inputs"]:
        sample = torch.tensor(manifest["sample"]["inputs"][spec["name"]])
        repeats = [batch_size] + [1] * (sample.dim() - 1)
        tensors.append(sample.repeat(*repeats).to(getattr(torch, spec["dtype"])))
    return tensors


def _median_ms(call: Callable[[], object], runs: int) -> float:
    for _ in range(3):
        call()
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1000


def _onnx_runner(path: Path, threads: int) -> Callable[[list[torch.Tensor]], object]:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [node.name for node in session.get_inputs()]
    return lambda tensors: session.run(
        None, {name: tensor.numpy() for name, tensor in zip(names, tensors, strict=True)}
    )


def bench_model(model_type: str, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    config = TrainingConfigBuilder.quick_prototype().with_model(model_type=model_type).build()
    task = _task(model_type, config)
    torch.manual_seed(0)
    model = get_registry("models").get(model_type)(config, task).eval()
    create_export_bundle(model, config, task, config, root / "warmup", FORMATS)

    export_seconds: dict[str, list[float]] = {name: [] for name in FORMATS}
    bundle = root
    for repeat in range(args.repeats):
        bundle = create_export_bundle(model, config, task, config, root / str(repeat), FORMATS)
        for name, artifact in read_manifest(bundle)["artifacts"].items():
            export_seconds[name].append(artifact["export_seconds"])
    manifest = read_manifest(bundle)
    tensors = _batch(manifest, args.batch)
    positional = PositionalModel(model, tuple(manifest["input_names"])).eval()
    exporters = get_registry("exporters")
    runners: dict[str, Callable[[], object]] = {}
    with torch.no_grad():
        runners["eager"] = lambda: positional(*tensors)
        run_onnx = _onnx_runner(bundle / "artifacts" / "model.onnx", args.threads)
        runners["onnxruntime"] = lambda: run_onnx(tensors)
        for name in ("torchscript", "torch_export"):
            artifact = bundle / manifest["artifacts"][name]["file"]
            loaded = runner_for(exporters.create(name), artifact)
            runners[name] = lambda run=loaded: run(*tensors)
        latency = {name: _median_ms(call, args.runs) for name, call in runners.items()}
    return {
        "model": model_type,
        "parameters": manifest["model"]["num_parameters"],
        "batch": [list(tensor.shape) for tensor in tensors],
        "export_s": {name: statistics.median(values) for name, values in export_seconds.items()},
        "latency_ms": latency,
        "ratio_to_eager": {name: value / latency["eager"] for name, value in latency.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny_gpt,mlp_classifier,small_cnn")
    parser.add_argument("--repeats", type=int, default=5, help="exports per model")
    parser.add_argument("--runs", type=int, default=50, help="timed forward passes")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for model_type in args.models.split(","):
            results.append(bench_model(model_type, args, Path(folder) / model_type))
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for result in results:
        print(f"\n{result['model']} ({result['parameters']:,} parameters), batch {result['batch']}")
        print("  export time, median of", args.repeats)
        for name, seconds in result["export_s"].items():
            print(f"    {name:<13} {seconds * 1000:8.1f} ms")
        print(f"  forward latency, median of {args.runs}, {args.threads} thread(s)")
        for name, milliseconds in result["latency_ms"].items():
            ratio = result["ratio_to_eager"][name]
            print(f"    {name:<13} {milliseconds:8.3f} ms   x{ratio:.2f} of eager")


if __name__ == "__main__":
    main()
