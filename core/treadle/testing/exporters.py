"""Exporter conformance: the format's members, an artifact written, run back as a bundle runs
it, giving the model's outputs within a tolerance on the example inputs and on other batch sizes
and lengths; and the format's bundle loader standing alone.

Plugin authors run it on their format in their own test suite::

    from treadle.testing.exporters import check_bundle_loader, check_exporter

    def test_my_format_round_trips(tmp_path):
        report = check_exporter(MyExporter(), model, {"input_ids": ids}, tmp_path,
                                task_spec=task, variants=[{"input_ids": longer_ids}])
        assert report.details["verified"]  # False: the format cannot be run in this process

    def test_my_loader_runs_without_treadle(tmp_path):
        check_bundle_loader(MyExporter(), model, {"input_ids": ids}, tmp_path, task_spec=task)

Both raise :class:`~treadle.testing.report.ConformanceError` naming the rule broken, or return a
:class:`~treadle.testing.report.ConformanceReport`; ``details["max_abs_error"]`` maps each
input set checked (:func:`describe_inputs`) to the largest absolute difference found.

The rules of :func:`check_exporter`:

``members``
    ``artifact_name`` is a plain file name (``^[A-Za-z0-9][A-Za-z0-9._-]*$``), ``runtime`` a
    string, ``requirements`` a sequence of pip requirement lines, ``loader`` absent, ``None``
    or a :class:`~treadle.export.BundleLoader`.
``writes the artifact``
    ``export(request)`` returns having written ``request.path``.
``runs in process``
    The artifact runs through the loader (else ``load``), as a bundle verifies it. A format
    whose ``load`` raises ``NotImplementedError``, or that has neither, is recorded as not
    verified (the rule is skipped with the reason), exactly as a bundle records it.
``outputs match``
    The outputs have the model's shape and lie within the tolerance, on every input set.

The rules of :func:`check_bundle_loader` (skipped for a format without a loader):

``loader stands alone``
    Its source parses, has the function, and imports only the standard library, numpy and
    ``BundleLoader.imports``.
``loader runs without treadle``
    In a fresh interpreter where treadle and the loader's own package cannot be imported, it
    loads the artifact and predicts.
``loader outputs match``
    Those predictions have the model's shape and lie within the tolerance.
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
from treadle.export.errors import ExportError
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
from treadle.export.templates import SAFE_FILE_NAME
from treadle.testing.report import ConformanceReport, Rule, RuleRunner

if TYPE_CHECKING:
    from treadle.protocols import Exporter
    from treadle.task import TaskSpec

__all__ = [
    "EXPORTER_RULES",
    "LOADER_RULES",
    "RULES",
    "check_bundle_loader",
    "check_exporter",
    "describe_inputs",
]

#: The rules of :func:`check_exporter`.
EXPORTER_RULES = (
    Rule(
        "members",
        "artifact_name a plain file name, runtime a string, requirements pip requirement "
        "lines, loader None or a BundleLoader",
    ),
    Rule("writes the artifact", "export(request) writes request.path"),
    Rule(
        "runs in process",
        "the artifact runs through the loader or load(path), as a bundle verifies it "
        "(NotImplementedError: recorded as not verified)",
    ),
    Rule(
        "outputs match",
        "the artifact gives the model's outputs within the tolerance on the example and on "
        "other batch sizes and lengths",
    ),
)
#: The rules of :func:`check_bundle_loader`.
LOADER_RULES = (
    Rule(
        "loader stands alone",
        "the loader imports only the standard library, numpy and BundleLoader.imports",
    ),
    Rule(
        "loader runs without treadle",
        "in a fresh interpreter without treadle or its own package, the loader runs the artifact",
    ),
    Rule("loader outputs match", "the loader's predictions match the model's"),
)
#: Every rule of the export-format kit.
RULES = EXPORTER_RULES + LOADER_RULES

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
    rules: RuleRunner,
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
        request = ExportRequest(
            model=positional,
            example_inputs=inputs_for_tracing(example_inputs, dynamic_axes),
            path=path,
            input_names=tuple(example_inputs),
            output_names=(OUTPUT_NAME,),
            dynamic_axes=dynamic_axes,
            metadata=dict(metadata or {}),
        )
        try:
            exporter.export(request)
        except Exception as err:
            raise rules.error(
                "writes the artifact",
                f"export of {type(model).__name__} ({describe_inputs(example_inputs)}) raised "
                f"{type(err).__name__}: {err}",
            ) from err
        if not path.is_file():
            rules.fail("writes the artifact", f"export returned without writing {path.name}")
        if "writes the artifact" not in rules.passed:
            rules.passes("writes the artifact")
        yield positional, path
    finally:
        model.train(was_training)


def _compare(
    rules: RuleRunner,
    rule: str,
    actual: torch.Tensor,
    expected: torch.Tensor,
    what: str,
    rtol: float,
    atol: float,
) -> float:
    if actual.shape != expected.shape:
        rules.fail(
            rule, f"{what}: output shape {tuple(actual.shape)}, the model's {tuple(expected.shape)}"
        )
    actual, expected = actual.double(), expected.double()
    error = float((actual - expected).abs().max()) if expected.numel() else 0.0
    if not torch.allclose(actual, expected, rtol=rtol, atol=atol):
        rules.fail(
            rule,
            f"{what}: outputs differ from the model's by up to {error:.3g} "
            f"(rtol={rtol}, atol={atol})",
        )
    return error


def _subject(exporter: Exporter) -> str:
    return type(exporter).__qualname__


def _check_members(rules: RuleRunner, exporter: Exporter) -> None:
    from packaging.requirements import InvalidRequirement, Requirement

    from treadle.export.loaders import BundleLoader

    name = getattr(exporter, "artifact_name", None)
    if not isinstance(name, str) or not SAFE_FILE_NAME.match(name):
        rules.fail(
            "members",
            f"artifact_name is {name!r}; it must be a plain file name matching "
            f"{SAFE_FILE_NAME.pattern} (it becomes artifacts/<name> in a bundle)",
        )
    runtime = getattr(exporter, "runtime", None)
    if not isinstance(runtime, str):
        rules.fail("members", f"runtime is {runtime!r}; give a string ('' for none)")
    requirements = getattr(exporter, "requirements", None)
    if isinstance(requirements, str) or not isinstance(requirements, Sequence):
        rules.fail(
            "members",
            f"requirements is {requirements!r}; give a sequence of pip requirement lines "
            f"(('numpy>=1.24',), or () for none)",
        )
    for line in requirements:
        try:
            Requirement(line)
        except (InvalidRequirement, TypeError) as err:
            rules.fail("members", f"requirements holds {line!r}, no pip requirement: {err}")
    loader = getattr(exporter, "loader", None)
    if loader is not None and not isinstance(loader, BundleLoader):
        rules.fail(
            "members", f"loader is {loader!r}; give a treadle.export.BundleLoader or leave it out"
        )
    rules.passes("members")


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
) -> ConformanceReport:
    """Check the format's members, export ``model`` with ``exporter`` exactly as a bundle
    does, run the artifact as the bundle verifies it (through the exporter's ``loader``, else
    its ``load``) and compare its outputs with the model's on ``example_inputs`` and on each of
    ``variants`` (same names; other batch sizes or sequence lengths).

    :param task_spec: decides the dynamic axes (batch; sequence for text); batch only if None.
    :param metadata: what the bundle passes as ``metadata`` (a format such as ``pytorch``
        needs the model, task and training sections to rebuild the model).
    :returns: the report; ``details``: ``artifact`` (its path), ``verified`` (whether it ran
        here) and ``max_abs_error``, the largest absolute error per input set, keyed by
        :func:`describe_inputs` (empty when not verified).
    :raises ConformanceError: a rule is broken: the members, an export that raises or writes
        nothing (the cause chained), an output of another shape or beyond the tolerance (the
        message names the artifact, the inputs and the error).
    """
    rules = RuleRunner("exporters", _subject(exporter), RULES)
    _check_members(rules, exporter)
    errors: dict[str, float] = {}
    with _exported(rules, exporter, model, example_inputs, directory, task_spec, metadata) as done:
        positional, path = done
        rules.details["artifact"] = str(path)
        try:
            run = runner_for(exporter, path)
        except NotImplementedError as err:
            reason = f"not loadable here: {err}"
            rules.skip("runs in process", reason)
            rules.skip("outputs match", reason)
            rules.details.update(verified=False, max_abs_error=errors)
            return rules.report()
        except Exception as err:
            raise rules.error(
                "runs in process", f"loading {path.name} raised {type(err).__name__}: {err}"
            ) from err
        for inputs in [example_inputs, *variants]:
            described = describe_inputs(inputs)
            with torch.no_grad():
                expected = positional(*inputs.values())
                try:
                    actual = run(*inputs.values()).detach().cpu()
                except Exception as err:
                    raise rules.error(
                        "runs in process",
                        f"running {path.name} on {described} raised {type(err).__name__}: {err}",
                    ) from err
            errors[described] = _compare(
                rules, "outputs match", actual, expected, f"{path.name} on {described}", rtol, atol
            )
        rules.passes("runs in process")
        rules.passes("outputs match")
    rules.details.update(verified=True, max_abs_error=errors)
    return rules.report()


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
) -> ConformanceReport:
    """Check the exporter's bundle loader as a bundle's ``inference.py`` uses it: its source
    stands alone (the checks a bundle makes), and in a fresh interpreter where treadle and the
    loader's own package cannot be imported, it runs the exported artifact to the model's
    outputs on ``example_inputs`` and each of ``variants``.

    Arguments as :func:`check_exporter`; ``timeout`` bounds the interpreter's run in seconds.
    A format without a loader gets a report with the loader rules skipped.

    :returns: the report; ``details["max_abs_error"]``: the largest absolute error per input
        set, keyed by :func:`describe_inputs`.
    :raises ConformanceError: a loader whose source does not stand alone, that fails in the
        fresh interpreter (its stderr in the message), or whose outputs differ.
    """
    import numpy as np

    rules = RuleRunner("exporters", _subject(exporter), RULES)
    try:
        loader = loader_of(exporter)
    except ExportError as err:
        raise rules.error("members", str(err)) from err
    if loader is None:
        for rule in LOADER_RULES:
            rules.skip(rule.name, "no loader: bundles run the artifact only with treadle")
        return rules.report()
    try:
        source = check_loader_source(loader)
    except ExportError as err:
        raise rules.error("loader stands alone", str(err)) from err
    rules.passes("loader stands alone")
    directory = Path(directory)
    with _exported(rules, exporter, model, example_inputs, directory, task_spec, metadata) as done:
        positional, path = done
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
            rules.fail(
                "loader runs without treadle",
                f"loader {loader.module}.{loader.function} failed on {path.name} in a fresh "
                f"interpreter without treadle:\n{result.stderr[-4000:]}",
            )
        rules.passes("loader runs without treadle")
        errors: dict[str, float] = {}
        for index, inputs in enumerate(input_sets):
            with torch.no_grad():
                expected = positional(*inputs.values())
            actual = torch.from_numpy(np.load(exchange / f"output_{index:03d}.npy"))
            described = describe_inputs(inputs)
            what = f"{path.name} through {loader.file_name} on {described}"
            errors[described] = _compare(
                rules, "loader outputs match", actual, expected, what, rtol, atol
            )
        rules.passes("loader outputs match")
    rules.details["max_abs_error"] = errors
    return rules.report()
