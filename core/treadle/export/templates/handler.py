"""TorchServe handler for a treadle export bundle: ``handle(data, context)``, a module-level
entry point, so it needs nothing from the ``ts`` package at import.

torch-model-archiver puts this file, inference.py, manifest.json, the loaders and the artifacts
into one folder; the handler runs the artifact inference.py would choose, with its loader,
after checking its sha256 against the manifest (a changed artifact never serves). A
request body is JSON: ``{"input_ids": [[1, 2, 3]]}`` (the names of the manifest's signature);
the response is inference.py's prediction for it.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

_state: dict[str, Any] = {}


def _import_inference(model_dir: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("bundle_inference", model_dir / "inference.py")
    if spec is None or spec.loader is None:
        message = f"inference.py is missing from {model_dir}"
        raise RuntimeError(message)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _initialize(context: Any) -> None:
    model_dir = Path(context.system_properties.get("model_dir", Path(__file__).parent))
    inference = _import_inference(model_dir)
    manifest = inference.load_manifest(model_dir)
    name = inference.choose_format(manifest, None)
    inference.check_sha256(model_dir, name, manifest["artifacts"][name])
    _state.update(
        inference=inference,
        manifest=manifest,
        run=inference.load_runner(model_dir, name, manifest["artifacts"][name]),
    )


def _body(request: Any) -> Any:
    body = request
    if isinstance(request, dict):
        body = request.get("body") or request.get("data")
    if isinstance(body, bytes | bytearray):
        body = json.loads(body.decode("utf-8"))
    elif isinstance(body, str):
        body = json.loads(body)
    return body


def handle(data: Any, context: Any) -> list[Any] | None:
    """TorchServe's entry point: one response per request in the batch."""
    if not _state:
        _initialize(context)
    if data is None:
        return None
    inference = _state["inference"]
    manifest = _state["manifest"]
    responses = []
    for request in data:
        arrays = inference.input_arrays(manifest, _body(request))
        logits = _state["run"](arrays)
        responses.append(inference.predictions(manifest.get("task", {}), logits))
    return responses
