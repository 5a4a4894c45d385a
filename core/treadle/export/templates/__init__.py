"""The files an export bundle carries besides its artifacts, kept as data.

``inference.py`` and ``handler.py`` beside this module are copied verbatim: they read every
name (model, task, classes) from ``manifest.json`` at run time, so nothing a user named is
ever spliced into code. The texts below take only artifact file names (checked against
:data:`SAFE_FILE_NAME`) and JSON-encoded values.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "HANDLER_FILE",
    "INFERENCE_FILE",
    "SAFE_FILE_NAME",
    "SERVED_MODEL_NAME",
    "copy_scripts",
    "render_config_properties",
    "render_dockerfile",
    "render_readme",
    "render_requirements",
    "serving_artifact",
    "torchserve_config",
]

INFERENCE_FILE = "inference.py"
HANDLER_FILE = "handler.py"
#: What TorchServe calls the model; fixed, so no user-given name reaches its config.
SERVED_MODEL_NAME = "model"
#: Artifact and loader file names that may appear in the Dockerfile and config.properties.
SAFE_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

_TORCHSERVE_PROPERTIES = {
    "inference_address": "http://0.0.0.0:8080",
    "management_address": "http://0.0.0.0:8081",
    "metrics_address": "http://0.0.0.0:8082",
    "model_store": "/home/model-server/model-store",
    "load_models": f"{SERVED_MODEL_NAME}.mar",
    "default_workers_per_model": "1",
    "disable_token_authorization": "true",
}

_DOCKERFILE = """\
# Serves this bundle with TorchServe: inference on port 8080, management on 8081.
#   docker build -t model:v1 . && docker run -p 8080:8080 model:v1
#   curl -X POST http://localhost:8080/predictions/{model} -H 'Content-Type: application/json' \\
#        -d @sample_request.json
FROM pytorch/torchserve:latest-cpu
USER root
WORKDIR /home/model-server/bundle
COPY . .
RUN pip install --no-cache-dir -r requirements.txt \\
 && mkdir -p /home/model-server/model-store \\
 && {archiver} \\
 && chown -R model-server /home/model-server/model-store
USER model-server
EXPOSE 8080 8081
CMD ["torchserve", "--start", "--foreground", "--ts-config", \\
     "/home/model-server/bundle/config.properties"]
"""

_README = """\
# Export bundle

Written by treadle {treadle_version} with torch {torch_version} on {created_at}.
Status: **{status}**.

| field | value (JSON) |
|---|---|
| model name | `{model_name}` |
| task | `{task_name}` ({task_type}, {modality}) |
| classes | {class_count} |

## Artifacts

| format | file | sha256 | how it runs |
|---|---|---|---|
{artifact_rows}
{failed_section}{torchscript_note}
`manifest.json` holds each artifact's sha256, the input and output signature, a sample input
and the outputs the model gave for it. `configs/` holds the task, the training config and the
TorchServe settings as JSON. `loaders/` holds the code that runs each artifact, and
`export.log` what the export libraries printed while writing them.

## Predict

```sh
pip install -r requirements.txt
python inference.py                       # the manifest's sample input
python inference.py --input inputs.json   # {{"<input name>": [[...]]}}, names as in manifest.json
python inference.py --format onnx --output outputs.json
```

Before predicting, `inference.py` checks the artifact's sha256 against `manifest.json` and
refuses a changed file (`--skip-checksum` runs it anyway).

## Verify the bundle wherever it was copied

```sh
python inference.py --verify
```

checks every artifact's sha256 and runs the sample through each artifact a runtime here can
run, comparing with the recorded outputs (tolerance rtol={rtol}, atol={atol}); it exits
non-zero on any mismatch.

## Serve with Docker (TorchServe)

```sh
docker build -t model:v1 .
docker run -p 8080:8080 -p 8081:8081 model:v1
curl -X POST http://localhost:8080/predictions/{served_name} \\
     -H 'Content-Type: application/json' -d '{{"<input name>": [[...]]}}'
```

## Serve with TorchServe directly

```sh
pip install torchserve torch-model-archiver -r requirements.txt
mkdir -p model-store
{archiver}
torchserve --start --ts-config config.properties --model-store model-store
```

`handler.py` is a module-level TorchServe handler that runs the artifact `inference.py`
would choose; `config.properties` is TorchServe's own configuration.
"""

_TORCHSCRIPT_NOTE = """
**TorchScript is deprecated.** torch {torch_version} warns that `torch.jit.trace` and
`torch.jit.load` are deprecated. The TorchScript artifact still loads and runs here; for new
deployments prefer the `torch_export` format (an ExportedProgram saved with `torch.export.save`,
loaded with `torch.export.load`): `create_export_bundle(..., formats=[..., "torch_export"])` or
`treadle export MODEL --formats torch_export`.
"""

_NO_LOADER = "no standalone loader: sha256 checked only"


def copy_scripts(destination: Path) -> list[Path]:
    """Copy inference.py and handler.py, verbatim, into ``destination``."""
    written = []
    for name in (INFERENCE_FILE, HANDLER_FILE):
        source = resources.files(__name__).joinpath(name)
        target = destination / name
        target.write_bytes(source.read_bytes())
        written.append(target)
    return written


def serving_artifact(artifacts: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The format TorchServe serves: among those with a loader, the one of the highest
    loader priority, the first on a tie (as inference.py chooses); None when none has one."""
    runnable = [name for name, artifact in artifacts.items() if artifact.get("loader")]
    if not runnable:
        return None
    return max(runnable, key=lambda name: artifacts[name]["loader"]["priority"])


def _loader_files(artifacts: Mapping[str, Mapping[str, Any]]) -> list[str]:
    files = [artifact["loader"]["file"] for artifact in artifacts.values() if artifact["loader"]]
    return list(dict.fromkeys(files))


def _archiver_arguments(artifacts: Mapping[str, Mapping[str, Any]]) -> list[str]:
    served = serving_artifact(artifacts) or next(iter(artifacts))
    extra = [INFERENCE_FILE, "manifest.json", *_loader_files(artifacts)] + [
        artifact["file"] for name, artifact in artifacts.items() if name != served
    ]
    return [
        "torch-model-archiver",
        "--model-name",
        SERVED_MODEL_NAME,
        "--version",
        "1.0",
        "--handler",
        HANDLER_FILE,
        "--serialized-file",
        str(artifacts[served]["file"]),
        "--extra-files",
        ",".join(extra),
        "--export-path",
        str(_TORCHSERVE_PROPERTIES["model_store"]),
    ]


def _check_file_names(artifacts: Mapping[str, Mapping[str, Any]]) -> None:
    for name, artifact in artifacts.items():
        loader = [artifact["loader"]["file"]] if artifact["loader"] else []
        for file in [artifact["file"], *loader]:
            if not SAFE_FILE_NAME.match(Path(file).name):
                msg = f"file name {file!r} of format {name!r} is not safe"
                raise ValueError(msg)


def torchserve_config(artifacts: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """``configs/torchserve_config.json``: the archive's parts and TorchServe's properties."""
    _check_file_names(artifacts)
    served = serving_artifact(artifacts)
    arguments = _archiver_arguments(artifacts)
    return {
        "model_name": SERVED_MODEL_NAME,
        "handler": HANDLER_FILE,
        "serialized_file": artifacts[served]["file"] if served else None,
        "extra_files": arguments[arguments.index("--extra-files") + 1].split(","),
        "archiver_command": arguments,
        "config_properties": dict(_TORCHSERVE_PROPERTIES),
    }


def render_config_properties() -> str:
    """TorchServe's ``config.properties`` (Java properties)."""
    return "".join(f"{key}={value}\n" for key, value in _TORCHSERVE_PROPERTIES.items())


def render_dockerfile(artifacts: Mapping[str, Mapping[str, Any]]) -> str:
    """A Dockerfile that archives the bundle's own artifacts and serves them with TorchServe."""
    _check_file_names(artifacts)
    archiver = shlex.join(_archiver_arguments(artifacts)).replace(" --", " \\\n      --")
    return _DOCKERFILE.format(model=SERVED_MODEL_NAME, archiver=archiver)


def render_requirements(lines: Sequence[str]) -> str:
    """requirements.txt: the given lines, deduplicated, sorted."""
    return "".join(f"{line}\n" for line in sorted(set(lines)))


def _json(value: Any) -> str:
    # JSON-encoded and with backticks escaped: a name can't end its code span or add lines.
    return json.dumps(value, ensure_ascii=True).replace("`", "\\u0060")


def _how_it_runs(artifact: Mapping[str, Any]) -> str:
    loader = artifact["loader"]
    if not loader:
        return _NO_LOADER
    runtime = f"`{_json(artifact['runtime'])}`" if artifact["runtime"] else "its loader"
    return f"{runtime} via `{loader['file']}`"


def render_readme(manifest: Mapping[str, Any]) -> str:
    """README.md for the bundle described by ``manifest``; names appear JSON-encoded."""
    artifacts = manifest["artifacts"]
    rows = "\n".join(
        f"| {name} | `{artifact['file']}` | `{artifact['sha256'][:16]}…` | "
        f"{_how_it_runs(artifact)} |"
        for name, artifact in artifacts.items()
    )
    failed = ""
    if manifest["errors"]:
        failed = "\n## Formats that failed\n\n" + "".join(
            f"- {name}: {_json(error)}\n" for name, error in manifest["errors"].items()
        )
    torch_version = manifest["versions"]["torch"]
    note = (
        _TORCHSCRIPT_NOTE.format(torch_version=torch_version)
        if any(artifact["runtime"] == "torchscript" for artifact in artifacts.values())
        else ""
    )
    task = manifest["task"]
    class_names = task.get("class_names")
    return _README.format(
        treadle_version=manifest["versions"]["treadle"],
        torch_version=torch_version,
        created_at=manifest["created_at"],
        status=manifest["status"],
        model_name=_json(manifest["model"]["name"]),
        task_name=_json(task["name"]),
        task_type=_json(task["task_type"]),
        modality=_json(task["modality"]),
        class_count=len(class_names) if class_names else "-",
        artifact_rows=rows,
        failed_section=failed,
        torchscript_note=note,
        rtol=manifest["tolerance"]["rtol"],
        atol=manifest["tolerance"]["atol"],
        served_name=SERVED_MODEL_NAME,
        archiver=shlex.join(_archiver_arguments(artifacts)),
    )
