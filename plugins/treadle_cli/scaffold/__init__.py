"""Plugin packages from plain templates: what ``treadle plugin new`` writes.

The templates are files under ``templates/`` (package data), each named with a ``.tmpl``
suffix so that no tool takes them for the project's own code or configuration: ``base/`` is
every package's skeleton, and each kind has a folder with its modules and tests, plus
fragments joined into the skeleton (``plugin.py``: its registration hook; ``README.md``: its
section; ``conformance.toml``: its settings for the conformance run). Text is filled in with
:class:`string.Template` (``${package}``; ``$$`` for a dollar sign), which fails on a
placeholder it does not know, and path segments named ``PACKAGE`` become the package's name.

Plain templates rather than copier or cookiecutter: no dependency for one command, and the
output is checked file by file against ``examples/treadle-example-plugin``, which is rendered
from the same templates.
"""

from __future__ import annotations

import re
import string
import tomllib
from collections.abc import Iterator, Sequence
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

import attrs

__all__ = [
    "KIND_TEMPLATES",
    "KindTemplate",
    "PluginAnswers",
    "answers_for",
    "answers_from_project",
    "registered_names",
    "render",
    "write",
]

_SUFFIX = ".tmpl"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_PACKAGE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DISTRIBUTION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@attrs.frozen
class KindTemplate:
    """The template of one kind.

    :ivar key: its name on the command line (``loss``).
    :ivar registry: the registry it fills (``losses``).
    :ivar phrase: how the package's description names it (``a focal loss``).
    :ivar names: what it registers (``${...}`` placeholders allowed).
    """

    key: str
    registry: str
    phrase: str
    names: tuple[str, ...]


#: Every kind ``treadle plugin new --kinds`` takes, in the order a package lists them.
KIND_TEMPLATES: dict[str, KindTemplate] = {
    template.key: template
    for template in (
        KindTemplate("loss", "losses", "a focal loss", ("focal",)),
        KindTemplate("collator", "collators", "a tabular collator", ("tabular",)),
        KindTemplate("model", "models", "a tabular MLP model", ("tabular_mlp",)),
        KindTemplate("metric", "metrics", "a macro F1 metric", ("macro_f1",)),
        KindTemplate("logger", "loggers", "a CSV logger", ("csv",)),
        KindTemplate("exporter", "exporters", "a numpy export format", ("numpy_mlp",)),
        KindTemplate("dataset", "datasets", "a tabular data set", ("blobs",)),
        KindTemplate("job_type", "job_types", "a data set report job", ("dataset_report",)),
        KindTemplate("command", "commands", "an info command", ("${plugin}-info",)),
        KindTemplate("storage", "storage", "a shared-folder storage scheme", ("${scheme}",)),
    )
}

#: Kinds also accepted under their registry's name (``losses`` for ``loss``).
_ALIASES = {template.registry: key for key, template in KIND_TEMPLATES.items()}


@attrs.frozen
class PluginAnswers:
    """What a package is rendered from.

    :ivar name: the plugin's name: its entry-point name (``acme``).
    :ivar distribution: the distribution's name (``treadle-acme``).
    :ivar package: the import package (``treadle_acme``).
    :ivar version: the first version.
    :ivar kinds: the kinds it starts with, in :data:`KIND_TEMPLATES` order.
    """

    name: str
    distribution: str
    package: str
    version: str
    kinds: tuple[str, ...]


def answers_for(
    name: str,
    kinds: Sequence[str],
    *,
    distribution: str | None = None,
    package: str | None = None,
    version: str = "0.1.0",
) -> PluginAnswers:
    """Checked answers: ``treadle-<name>`` and ``treadle_<name>`` unless given.

    :raises ValueError: a name, package or distribution that cannot be one, or an unknown
        kind; the message lists the kinds.
    """
    if not _NAME.match(name):
        msg = f"plugin name {name!r}: use lowercase letters, digits and '_', from a letter"
        raise ValueError(msg)
    package = package or f"treadle_{name}"
    distribution = distribution or f"treadle-{name.replace('_', '-')}"
    if not _PACKAGE.match(package):
        msg = f"package {package!r} is no Python identifier"
        raise ValueError(msg)
    if not _DISTRIBUTION.match(distribution):
        msg = f"distribution {distribution!r} is no valid distribution name"
        raise ValueError(msg)
    chosen = []
    for kind in kinds:
        key = _ALIASES.get(kind, kind)
        if key not in KIND_TEMPLATES:
            msg = f"unknown kind {kind!r}; kinds: {', '.join(KIND_TEMPLATES)}"
            raise ValueError(msg)
        chosen.append(key)
    if not chosen:
        msg = f"choose at least one kind: {', '.join(KIND_TEMPLATES)}"
        raise ValueError(msg)
    ordered = tuple(key for key in KIND_TEMPLATES if key in chosen)
    return PluginAnswers(name, distribution, package, version, ordered)


def answers_from_project(folder: Path) -> PluginAnswers:
    """The answers a package made by :func:`write` was rendered from, read from its
    ``pyproject.toml`` (the project's name and version, its ``treadle`` entry point and
    ``[tool.treadle.scaffold] kinds``).

    :raises ValueError: the folder holds no such package.
    """
    path = Path(folder) / "pyproject.toml"
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    project = data.get("project", {})
    entry_points = project.get("entry-points", {}).get("treadle", {})
    kinds = data.get("tool", {}).get("treadle", {}).get("scaffold", {}).get("kinds")
    if len(entry_points) != 1 or kinds is None:
        msg = f"{path} was not written by treadle plugin new (no [tool.treadle.scaffold])"
        raise ValueError(msg)
    ((name, target),) = entry_points.items()
    return answers_for(
        name,
        kinds,
        distribution=project["name"],
        package=target.split(".")[0],
        version=project["version"],
    )


def _templates() -> Traversable:
    return files(__name__) / "templates"


def _walk(folder: Traversable, prefix: str = "") -> Iterator[tuple[str, Traversable]]:
    for item in sorted(folder.iterdir(), key=lambda item: item.name):
        if item.name == "__pycache__":
            continue
        path = f"{prefix}{item.name}"
        if item.is_dir():
            yield from _walk(item, f"{path}/")
        else:
            yield path, item


def _fragment(kind: str, name: str) -> str:
    item = _templates() / kind / f"{name}{_SUFFIX}"
    return item.read_text(encoding="utf-8") if item.is_file() else ""


def _join(phrases: Sequence[str]) -> str:
    if len(phrases) == 1:
        return phrases[0]
    return f"{', '.join(phrases[:-1])} and {phrases[-1]}"


def registered_names(answers: PluginAnswers) -> dict[str, list[str]]:
    """What the package registers, by kind: ``{"loss": ["focal"], "command": ["acme-info"]}``."""
    values = _names(answers)
    return {
        kind: [string.Template(name).substitute(values) for name in KIND_TEMPLATES[kind].names]
        for kind in answers.kinds
    }


def _names(answers: PluginAnswers) -> dict[str, str]:
    return {
        "plugin": answers.name,
        "package": answers.package,
        "scheme": f"{answers.name.replace('_', '-')}-shared",
        "environment": f"{answers.name.upper()}_STORE_ROOT",
    }


def _variables(answers: PluginAnswers) -> dict[str, str]:
    templates = [KIND_TEMPLATES[kind] for kind in answers.kinds]
    description = f"A treadle plugin: {_join([template.phrase for template in templates])}."
    dependencies = ['"treadle>=0.1"', '"torch>=2.2"']
    if "exporter" in answers.kinds:
        dependencies.append('"numpy>=1.24"')
    values = {
        **_names(answers),
        "distribution": answers.distribution,
        "version": answers.version,
        "description": description,
        "dependencies": ", ".join(dependencies),
        "kinds": ", ".join(f'"{kind}"' for kind in answers.kinds),
        "job_dataset": "blobs" if "dataset" in answers.kinds else "pydoc_topics",
    }

    def fill(text: str) -> str:
        return string.Template(text).substitute(values)

    # each fragment is joined after the blank lines that separate it from what precedes it
    values["hooks"] = "".join(
        "\n\n\n" + fill(_fragment(kind, "plugin.py")).strip("\n") for kind in answers.kinds
    )
    values["sections"] = fill("".join(_fragment(kind, "README.md") for kind in answers.kinds))
    values["conformance"] = "".join(
        "\n\n" + fill(text).strip("\n")
        for text in (_fragment(kind, "conformance.toml") for kind in answers.kinds)
        if text
    )
    values["registered"] = "\n".join(
        f'    assert "{name}" in plugin_manager.registry("{KIND_TEMPLATES[kind].registry}")'
        for kind, names in registered_names(answers).items()
        for name in names
    )
    return values


def render(answers: PluginAnswers) -> dict[str, str]:
    """Every file of the package: relative path to text."""
    values = _variables(answers)
    rendered: dict[str, str] = {}
    for folder in ("base", *answers.kinds):
        for path, item in _walk(_templates() / folder):
            if folder != "base" and "/" not in path:
                continue  # the kind's fragments, joined into the skeleton above
            parts = path.removesuffix(_SUFFIX).split("/")
            target = "/".join(answers.package if part == "PACKAGE" else part for part in parts)
            text = item.read_text(encoding="utf-8")
            rendered[target] = string.Template(text).substitute(values) if text else ""
    return dict(sorted(rendered.items()))


def write(answers: PluginAnswers, folder: Path, *, force: bool = False) -> list[Path]:
    """Write the package into ``folder``; returns the files written.

    :param force: write over files of the same names (others are left alone).
    :raises FileExistsError: ``folder`` holds files and ``force`` is false.
    """
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()) and not force:
        msg = f"{folder} exists and is not empty; choose another --directory, or --force"
        raise FileExistsError(msg)
    written = []
    for relative, text in render(answers).items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
