"""The bundle's files besides its artifacts: configs, scripts, texts and the manifest."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from treadle.export import templates
from treadle.export.manifest import MANIFEST_FILE, jsonable

if TYPE_CHECKING:
    from treadle.protocols import Exporter
    from treadle.task import TaskSpec

__all__ = ["ARTIFACTS_DIR", "CONFIGS_DIR", "as_dict", "write_bundle_files"]

ARTIFACTS_DIR = "artifacts"
CONFIGS_DIR = "configs"
_BASE_REQUIREMENTS = ("numpy>=1.24",)


def as_dict(value: Any) -> tuple[Any, list[str]]:
    """JSON-ready data for a config: its ``to_dict()`` when it has one, else its fields;
    with the paths of what was left out (see :func:`~treadle.export.manifest.jsonable`)."""
    to_dict = getattr(value, "to_dict", None)
    return jsonable(to_dict() if callable(to_dict) else value)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_manifest(path: Path, manifest: Mapping[str, Any]) -> None:
    """Indented JSON, except the sample's nested lists, which stay on one line each
    (indented, a (1, 64, 259) output takes 16k lines)."""
    marker = f"@@sample-{secrets.token_hex(8)}@@"
    sample = manifest["sample"]
    text = json.dumps({**manifest, "sample": marker}, indent=2, ensure_ascii=False)
    compact_sample = json.dumps(sample, separators=(",", ":"), ensure_ascii=False)
    path.write_text(text.replace(json.dumps(marker), compact_sample) + "\n", encoding="utf-8")


def _merge_requirements(lines: Sequence[str]) -> list[str]:
    """One line per project, specifiers joined: pip refuses a project listed twice."""
    merged: dict[str, list[str]] = {}
    for line in lines:
        name = re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0]
        specifiers = merged.setdefault(name, [])
        for part in line[len(name) :].split(","):
            if part.strip() and part.strip() not in specifiers:
                specifiers.append(part.strip())
    return [name + ",".join(specifiers) for name, specifiers in merged.items()]


def write_bundle_files(
    staging: Path,
    manifest: dict[str, Any],
    exporters: Mapping[str, Exporter],
    task_spec: TaskSpec,
    training_config: Any,
    config: Any,
) -> None:
    """Write everything but the artifacts into ``staging``, the manifest last (a folder
    with a manifest is a finished bundle), and fsync it all."""
    artifacts = manifest["artifacts"]
    configs = staging / CONFIGS_DIR
    configs.mkdir()
    _write_json(configs / "task_spec.json", as_dict(task_spec)[0])
    _write_json(configs / "training_config.json", as_dict(training_config)[0])
    _write_json(configs / "model_config.json", jsonable(config)[0])
    _write_json(configs / "torchserve_config.json", templates.torchserve_config(artifacts))
    _write_json(staging / "sample_request.json", manifest["sample"]["inputs"])
    templates.copy_scripts(staging)
    (staging / "config.properties").write_text(
        templates.render_config_properties(), encoding="utf-8"
    )
    (staging / "Dockerfile").write_text(templates.render_dockerfile(artifacts), encoding="utf-8")
    requirements = list(_BASE_REQUIREMENTS)
    for name in artifacts:
        requirements.extend(exporters[name].requirements)
    (staging / "requirements.txt").write_text(
        templates.render_requirements(_merge_requirements(requirements)), encoding="utf-8"
    )
    (staging / "README.md").write_text(templates.render_readme(manifest), encoding="utf-8")
    _write_manifest(staging / MANIFEST_FILE, manifest)
