"""Exporter conformance: an artifact, loaded back as a bundle runs it, gives the model's outputs
within a tolerance, on the example inputs and on other batch sizes and lengths.

Plugin authors run it on their format in their own test suite::

    from treadle.testing.exporters import check_bundle_loader, check_exporter

    def test_my_format_round_trips(tmp_path):
        errors = check_exporter(MyExporter(), model, {"input_ids": ids}, tmp_path,
                                task_spec=task, variants=[{"input_ids": longer_ids}])
        assert errors  # one max-abs-error per input set checked

    def test_my_loader_runs_without_treadle(tmp_path):
        check_bundle_loader(MyExporter(), model, {"input_ids": ids}, tmp_path, task_spec=task)
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from treadle.export.artifacts import loader_of, runner_for
from treadle.export.inputs import (
    BATCH_AXIS,
    OUTPUT_NAME,
    PositionalModel,
    dynamic_axes_for,
    inputs_for_tracing,
)
from treadle.export.loaders import LOADERS_DIR, check_loader_source
from treadle.export.manifest import DEFAULT_TOLERANCE
from treadle.export.request import ExportRequest

if TYPE_CHECKING:
    from treadle.protocols import Exporter
    from treadle.task import TaskSpec

__all__ = ["check_bundle_loader", "check_exporter", "describe_inputs"]

# Runs a loader file as a bundle does, with treadle and the loader's own package unimportable.
_RUN_LOADER = """
import importlib.util, sys
from pathlib import Path
import numpy as np
loader_file, function, artifact, folder, blocked = sys.argv[1:6]
for name in blocked.split(","):
    sys.modules[name] = None
spec = importlib.util.spec_from_file_location("bundle_loader_under_test", loader_file)
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
predict = getattr(module, function)(Path(artifact))
for inputs in sorted(Path(folder).glob("inputs_*")):
    arrays = [np.load(path) for path in sorted(inputs.glob("*.npy"))]
    np.save(Path(folder) / ("output_" + inputs.name[len("inputs_"):]), np.asarray(predict(arrays)))
"""


def describe_inputs(inputs: Mapping[str, torch.Tensor]) -> str:
    """``"input_ids (3, 17), attention_mask (3, 17)"``: names and shapes, for messages."""
    return ", ".join(f"{name} {tuple(tensor.shape)}" for name, tensor in inputs.items())


@contextlib.contextmanager
def _exported(
    exporter: Exporter,
    model: torch.nn.Module,
    example_inputs: Mapping[str, torch.Tensor],
    directory: Path,
    task_spec: TaskSpec | None,
    metadata: Mapping[str, Any] | None,
) -> Iterator[tuple[PositionalModel, Path]]:
    """Export as a bundle does (the same request, the same dynamic axes), with the model in
    eval mode until the block ends; yields the positional model and the artifact's path."""
    was_training = model.training
    model.eval()
    try:
        positional = PositionalModel(model, tuple(example_inputs)).eval()
        with torch.no_grad():
            reference = positional(*example_inputs.values())
        if task_spec is not None:
            dynamic_axes = dynamic_axes_for(task_spec, example_inputs, reference)
        else:
            dynamic_axes = {name: {0: BATCH_AXIS} for name in [*example_inputs, OUTPUT_NAME]}
        Path(directory).mkdir(parents=True, exist_ok=True)
        path = Path(directory) / exporter.artifact_name
        exporter.export(
            ExportRequest(
                model=positional,
                example_inputs=inputs_for_tracing(example_inputs, dynamic_axes),
                path=path,
                input_names=tuple(example_inputs),
                output_names=(OUTPUT_NAME,),
                dynamic_axes=dynamic_axes,
                metadata=dict(metadata or {}),
            )
        )
        yield positional, path
    finally:
        model.train(was_training)


def _compare(
    actual: torch.Tensor, expected: torch.Tensor, what: str, rtol: float, atol: float
) -> float:
    if actual.shape != expected.shape:
        msg = f"{what}: output shape {tuple(actual.shape)}, the model's {tuple(expected.shape)}"
        raise AssertionError(msg)
    actual, expected = actual.double(), expected.double()
    error = float((actual - expected).abs().max()) if expected.numel() else 0.0
    if not torch.allclose(actual, expected, rtol=rtol, atol=atol):
        msg = (
            f"{what}: outputs differ from the model's by up to {error:.3g} "
            f"(rtol={rtol}, atol={atol})"
        )
        raise AssertionError(msg)
    return error


def check_exporter(
    exporter: Exporter,
    model: torch.nn.Module,
    example_inputs: Mapping[str, torch.Tensor],
    directory: Path,
    *,
    task_spec: TaskSpec | None = None,
    variants: Sequence[Mapping[str, torch.Tensor]] = (),
    rtol: float = DEFAULT_TOLERANCE["rtol"],
    atol: float = DEFAULT_TOLERANCE["atol"],
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """Export ``model`` with ``exporter`` exactly as a bundle does, run the artifact as the
    bundle verifies it (through the exporter's ``loader``, else its ``load``) and compare its
    outputs with the model's on ``example_inputs`` and on each of ``variants`` (same names;
    other batch sizes or sequence lengths).

    :param task_spec: decides the dynamic axes (batch; sequence for text); batch only if None.
    :param metadata: what the bundle passes as ``metadata`` (a format such as ``pytorch``
        needs the model, task and training sections to rebuild the model).
    :returns: the largest absolute error per input set, keyed by :func:`describe_inputs`.
    :raises AssertionError: an output differs beyond the tolerance or has another shape; the
        message names the artifact, the inputs and the error.
    :raises NotImplementedError: nothing can run the artifact in this process.
    """
    with _exported(exporter, model, example_inputs, directory, task_spec, metadata) as exported:
        positional, path = exported
        run = runner_for(exporter, path)
        errors: dict[str, float] = {}
        for inputs in [example_inputs, *variants]:
            with torch.no_grad():
                expected = positional(*inputs.values())
                actual = run(*inputs.values()).detach().cpu()
            described = describe_inputs(inputs)
            errors[described] = _compare(
                actual, expected, f"{path.name} on {described}", rtol, atol
            )
        return errors


def check_bundle_loader(
    exporter: Exporter,
    model: torch.nn.Module,
    example_inputs: Mapping[str, torch.Tensor],
    directory: Path,
    *,
    task_spec: TaskSpec | None = None,
    variants: Sequence[Mapping[str, torch.Tensor]] = (),
    rtol: float = DEFAULT_TOLERANCE["rtol"],
    atol: float = DEFAULT_TOLERANCE["atol"],
    metadata: Mapping[str, Any] | None = None,
    timeout: float = 300.0,
) -> dict[str, float]:
    """Check the exporter's bundle loader as a bundle's ``inference.py`` uses it: its source
    stands alone (the checks a bundle makes), and in a fresh interpreter where treadle and the
    loader's own package cannot be imported, it runs the exported artifact to the model's
    outputs on ``example_inputs`` and each of ``variants``.

    Arguments as :func:`check_exporter`; ``timeout`` bounds the interpreter's run in seconds.

    :returns: the largest absolute error per input set, keyed by :func:`describe_inputs`.
    :raises AssertionError: no loader, a loader that fails in the fresh interpreter (its
        stderr in the message), or outputs beyond the tolerance.
    :raises ExportError: the loader's source does not stand alone.
    """
    import numpy as np

    loader = loader_of(exporter)
    if loader is None:
        msg = f"{type(exporter).__name__} has no loader: a bundle cannot run its artifact"
        raise AssertionError(msg)
    source = check_loader_source(loader)
    directory = Path(directory)
    with _exported(exporter, model, example_inputs, directory, task_spec, metadata) as exported:
        positional, path = exported
        loader_file = directory / LOADERS_DIR / loader.file_name
        loader_file.parent.mkdir(exist_ok=True)
        loader_file.write_text(source, encoding="utf-8")
        exchange = directory / "loader-check"
        exchange.mkdir(exist_ok=True)
        input_sets = [example_inputs, *variants]
        for index, inputs in enumerate(input_sets):
            folder = exchange / f"inputs_{index:03d}"
            folder.mkdir(exist_ok=True)
            for position, tensor in enumerate(inputs.values()):
                np.save(folder / f"{position:03d}.npy", tensor.detach().cpu().numpy())
        blocked = ",".join(dict.fromkeys(["treadle", loader.module.split(".")[0]]))
        arguments = [str(loader_file), loader.function, str(path), str(exchange), blocked]
        result = subprocess.run(
            [sys.executable, "-I", "-c", _RUN_LOADER, *arguments],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            msg = (
                f"loader {loader.module}.{loader.function} failed on {path.name} in a fresh "
                f"interpreter without treadle:\n{result.stderr[-4000:]}"
            )
            raise AssertionError(msg)
        errors: dict[str, float] = {}
        for index, inputs in enumerate(input_sets):
            with torch.no_grad():
                expected = positional(*inputs.values())
            actual = torch.from_numpy(np.load(exchange / f"output_{index:03d}.npy"))
            described = describe_inputs(inputs)
            what = f"{path.name} through {loader.file_name} on {described}"
            errors[described] = _compare(actual, expected, what, rtol, atol)
        return errors
