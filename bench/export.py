"""Export time per format against plain torch calls, where ONNX export time goes, and artifact
inference latency against eager PyTorch.

    .venv/bin/python bench/export.py [--models tiny_gpt,mlp_classifier,small_cnn]
                                     [--repeats 5] [--runs 50] [--batch 8] [--threads 1]
                                     [--cold] [--breakdown] [--json]

For each built-in model (built by its factory from the ``models`` registry, quick_prototype
sizes), after one warm-up export (torch._dynamo's first import is not counted):

- export time, the median of ``--repeats``: a whole ``create_export_bundle`` of each format
  alone (export, verification, the bundle's files, fsync), next to its baseline, the plain
  torch call a user would make for the same model and inputs, interleaved with it:
  ``torch.onnx.export(dynamo=True)`` for ``onnx``,
  ``torch.jit.trace`` + ``save`` for ``torchscript``, ``torch.export.export`` + ``save`` for
  ``torch_export``, ``torch.save(state_dict)`` for ``pytorch``; the ratio is treadle's time over
  the baseline's. The legacy TorchScript-based ``torch.onnx.export(dynamo=False)``, deprecated
  in torch 2.9+, is timed too, for reference: treadle does not use it.
- ``--cold``: the same ONNX export in a fresh interpreter, as ``treadle export`` pays it (the
  imports of torch._dynamo, onnx and onnxscript and torch's first ONNX registry included),
  treadle's bundle against plain ``torch.onnx.export``, each in its own process.
- ``--breakdown``: where a warm ``onnx`` bundle export spends its time (cProfile's cumulative
  time per phase: registry, capture, decompositions, translation, optimization, save,
  checker, verification), as shares; cProfile slows Python more than C, so read the shares,
  not the seconds.
- the median latency of one forward pass on the same batch through eager PyTorch (the
  baseline), onnxruntime, TorchScript and torch.export, with the ratio to eager. Every runtime
  gets the same thread count.

Numbers from a shared machine are noisy: read the ratios, check the load average printed with
them, and rerun before believing a small difference.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import logging
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from treadle.config import TrainingConfig, TrainingConfigBuilder
from treadle.export import PositionalModel, create_export_bundle, read_manifest
from treadle.export.artifacts import runner_for
from treadle.export.inputs import derive_example_inputs, dynamic_axes_for, inputs_for_tracing
from treadle.plugins import get_registry
from treadle.task import TaskSpec

FORMATS = ["onnx", "torchscript", "torch_export", "pytorch"]
#: cProfile entries (file suffix, function) whose cumulative time makes each ONNX phase.
ONNX_PHASES = {
    "registry (torchlib ops)": ("exporter/_registration.py", "from_torchlib"),
    "capture (torch.export)": ("torch/export/__init__.py", "export"),
    "decompositions": ("exporter/_core.py", "_prepare_exported_program_for_export"),
    "translation to ONNX": ("exporter/_core.py", "_exported_program_to_onnx_program"),
    "opset conversion": ("_framework_apis", "convert_version"),
    "onnxscript optimization": ("exporter/_onnx_program.py", "optimize"),
    "save": ("exporter/_onnx_program.py", "save"),
    "onnx.checker (full)": ("onnx/checker.py", "check_model"),
    "verification (onnxruntime)": ("treadle/export/artifacts.py", "_verify"),
}

_COLD_SCRIPT = """
import sys, tempfile, time
started = time.perf_counter()
import torch
from pathlib import Path
sys.path.insert(0, {bench!r})
from export import build, plain_onnx_export
from treadle.export import create_export_bundle
model, config, task = build({model_type!r})
imported = time.perf_counter()
with tempfile.TemporaryDirectory() as folder:
    if {treadle!r}:
        create_export_bundle(model, config, task, config, folder, ["onnx"])
    else:
        plain_onnx_export(model, task, config, Path(folder) / "model.onnx")
print(time.perf_counter() - imported)
"""


def _task(model_type: str, config: TrainingConfig) -> TaskSpec:
    if model_type == "small_cnn":
        return TaskSpec.vision_tiny()
    if model_type == "mlp_classifier":
        return TaskSpec.classification("topics", num_classes=4, max_seq_len=config.max_seq_len)
    return TaskSpec.language_modeling("lm", max_seq_len=config.max_seq_len)


def build(model_type: str) -> tuple[torch.nn.Module, TrainingConfig, TaskSpec]:
    """The built-in model at quick_prototype sizes, in eval mode, seeded."""
    config = TrainingConfigBuilder.quick_prototype().with_model(model_type=model_type).build()
    task = _task(model_type, config)
    torch.manual_seed(0)
    return get_registry("models").get(model_type)(config, task).eval(), config, task


def _trace_arguments(
    model: torch.nn.Module, task: TaskSpec, config: TrainingConfig
) -> tuple[PositionalModel, tuple[torch.Tensor, ...], list[str], dict[str, dict[int, str]]]:
    """What a user would hand torch for this model: the bundle's inputs and axes, no bundle."""
    inputs = derive_example_inputs(model, task, config.vocab_size, config.max_seq_len)
    positional = PositionalModel(model, tuple(inputs)).eval()
    with torch.no_grad():
        logits = positional(*inputs.values())
    axes = dynamic_axes_for(task, inputs, logits)
    return positional, inputs_for_tracing(inputs, axes), list(inputs), axes


def plain_onnx_export(
    model: torch.nn.Module, task: TaskSpec, config: TrainingConfig, path: Path, dynamo: bool = True
) -> None:
    """``torch.onnx.export`` of the same model with the same inputs and axes, nothing else."""
    positional, inputs, names, axes = _trace_arguments(model, task, config)
    if dynamo:
        per_input = tuple(dict(axes.get(name, {})) for name in names)
        options: dict[str, Any] = {"dynamic_shapes": (per_input,), "external_data": False}
    else:
        dynamic_axes = {name: dict(axes[name]) for name in [*names, "logits"]}
        options = {"dynamic_axes": dynamic_axes, "opset_version": 18}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            positional,
            inputs,
            str(path),
            input_names=names,
            output_names=["logits"],
            dynamo=dynamo,
            verbose=False,
            **options,
        )


def _baselines(
    model: torch.nn.Module, task: TaskSpec, config: TrainingConfig, folder: Path
) -> dict[str, Callable[[], object]]:
    positional, inputs, names, axes = _trace_arguments(model, task, config)

    def torchscript() -> None:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(positional, inputs, check_trace=False)  # type: ignore[no-untyped-call]
            torch.jit.save(traced, str(folder / "plain.torchscript.pt"))

    def torch_export() -> None:
        shapes = tuple({axis: torch.export.Dim.DYNAMIC for axis in axes[name]} for name in names)
        program = torch.export.export(positional, inputs, dynamic_shapes=(shapes,))
        torch.export.save(program, str(folder / "plain.pt2"))

    return {
        "onnx": lambda: plain_onnx_export(model, task, config, folder / "plain.onnx"),
        "torchscript": torchscript,
        "torch_export": torch_export,
        "pytorch": lambda: torch.save(model.state_dict(), folder / "plain.pt"),
        "onnx legacy (dynamo=False)": lambda: plain_onnx_export(
            model, task, config, folder / "legacy.onnx", dynamo=False
        ),
    }


def _median_seconds(call: Callable[[], object], repeats: int) -> float:
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def _median_ms(call: Callable[[], object], runs: int) -> float:
    for _ in range(3):
        call()
    return _median_seconds(call, runs) * 1000


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


def _batch(manifest: dict[str, Any], batch_size: int) -> list[torch.Tensor]:
    """The manifest's sample repeated to ``batch_size`` rows, in signature order."""
    tensors = []
    for spec in manifest["signature"]["inputs"]:
        sample = torch.tensor(manifest["sample"]["inputs"][spec["name"]])
        repeats = [batch_size] + [1] * (sample.dim() - 1)
        tensors.append(sample.repeat(*repeats).to(getattr(torch, spec["dtype"])))
    return tensors


def onnx_breakdown(model_type: str, root: Path) -> dict[str, float]:
    """Shares of one warm ``onnx`` bundle export, by phase (see :data:`ONNX_PHASES`)."""
    model, config, task = build(model_type)
    create_export_bundle(model, config, task, config, root / "warm", ["onnx"])
    profile = cProfile.Profile()
    profile.enable()
    create_export_bundle(model, config, task, config, root / "profiled", ["onnx"])
    profile.disable()
    stats: dict[Any, Any] = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    total = max(
        cumulative
        for (file, _, function), (_, _, _, cumulative, _) in stats.items()
        if function == "create_export_bundle"
    )
    shares = {}
    for label, (file_suffix, name) in ONNX_PHASES.items():
        seconds = sum(
            cumulative
            for (file, _, function), (_, _, _, cumulative, _) in stats.items()
            if function == name and file_suffix in file.replace(os.sep, "/")
        )
        shares[label] = seconds / total
    shares["everything else"] = max(0.0, 1.0 - sum(shares.values()))
    return shares


def cold_onnx_seconds(model_type: str, *, treadle: bool) -> float:
    """One ONNX export in a fresh interpreter, after the model is built."""
    script = _COLD_SCRIPT.format(
        bench=str(Path(__file__).resolve().parent), model_type=model_type, treadle=treadle
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600, check=True
    )
    return float(result.stdout.strip().splitlines()[-1])


def bench_model(model_type: str, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    model, config, task = build(model_type)
    create_export_bundle(model, config, task, config, root / "warmup", FORMATS)
    baselines = _baselines(model, task, config, root)
    for call in baselines.values():
        call()  # warm-up, as the bundle had
    bundle_seconds: dict[str, list[float]] = {name: [] for name in FORMATS}
    plain_seconds: dict[str, list[float]] = {name: [] for name in baselines}
    # Interleaved, so that a change in the machine's load falls on both sides alike.
    for repeat in range(args.repeats):
        for name in FORMATS:
            started = time.perf_counter()
            create_export_bundle(model, config, task, config, root / f"{name}{repeat}", [name])
            bundle_seconds[name].append(time.perf_counter() - started)
        for name, call in baselines.items():
            plain_seconds[name].append(_median_seconds(call, 1))
    baseline_seconds = {name: statistics.median(values) for name, values in plain_seconds.items()}
    bundle = create_export_bundle(model, config, task, config, root / "all", FORMATS)
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
    result: dict[str, Any] = {
        "model": model_type,
        "parameters": manifest["model"]["num_parameters"],
        "batch": [list(tensor.shape) for tensor in tensors],
        "export_s": {name: statistics.median(values) for name, values in bundle_seconds.items()},
        "baseline_s": baseline_seconds,
        "latency_ms": latency,
        "ratio_to_eager": {name: value / latency["eager"] for name, value in latency.items()},
    }
    if args.cold:
        cold: dict[str, list[float]] = {"treadle bundle": [], "plain torch.onnx.export": []}
        for _ in range(args.cold_repeats):  # alternating, one fresh process each
            cold["treadle bundle"].append(cold_onnx_seconds(model_type, treadle=True))
            cold["plain torch.onnx.export"].append(cold_onnx_seconds(model_type, treadle=False))
        result["cold_onnx_s"] = {name: statistics.median(values) for name, values in cold.items()}
    if args.breakdown:
        result["onnx_breakdown"] = onnx_breakdown(model_type, root / "breakdown")
    return result


def _print(result: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"\n{result['model']} ({result['parameters']:,} parameters), batch {result['batch']}")
    print(
        f"  export time, median of {args.repeats}: a bundle of one format vs the plain torch call"
    )
    baselines = result["baseline_s"]
    for name, seconds in result["export_s"].items():
        base = baselines[name]
        print(
            f"    {name:<13} {seconds * 1000:8.1f} ms   plain {base * 1000:8.1f} ms   "
            f"x{seconds / base:.2f}"
        )
    legacy = baselines["onnx legacy (dynamo=False)"]
    print(f"    (reference: torch.onnx.export(dynamo=False), deprecated: {legacy * 1000:.1f} ms)")
    if "cold_onnx_s" in result:
        cold = result["cold_onnx_s"]
        print(f"  onnx in a fresh process, median of {args.cold_repeats} (imports included)")
        for name, seconds in cold.items():
            print(f"    {name:<24} {seconds:6.2f} s")
        ratio = cold["treadle bundle"] / cold["plain torch.onnx.export"]
        print(f"    ratio x{ratio:.2f}")
    if "onnx_breakdown" in result:
        print("  where a warm onnx bundle export goes (cProfile shares)")
        for label, share in result["onnx_breakdown"].items():
            print(f"    {label:<28} {share * 100:5.1f} %")
    print(f"  forward latency, median of {args.runs}, {args.threads} thread(s)")
    for name, milliseconds in result["latency_ms"].items():
        ratio = result["ratio_to_eager"][name]
        print(f"    {name:<13} {milliseconds:8.3f} ms   x{ratio:.2f} of eager")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--models", default="tiny_gpt,mlp_classifier,small_cnn")
    parser.add_argument("--repeats", type=int, default=5, help="exports per model")
    parser.add_argument("--runs", type=int, default=50, help="timed forward passes")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cold", action="store_true", help="time ONNX in fresh processes")
    parser.add_argument("--cold-repeats", type=int, default=3, help="fresh processes per side")
    parser.add_argument("--breakdown", action="store_true", help="ONNX time by phase")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for model_type in args.models.split(","):
            results.append(bench_model(model_type, args, Path(folder) / model_type))
    load = {"before": load_before, "after": os.getloadavg()[0]}
    if args.json:
        print(json.dumps({"load_average_1min": load, "results": results}, indent=2))
        return
    for result in results:
        _print(result, args)
    print(f"\nload average (1 min): {load['before']:.2f} before, {load['after']:.2f} after")


if __name__ == "__main__":
    main()
