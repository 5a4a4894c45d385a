"""The documentation builds as a site with MkDocs in strict mode: no warnings, every page of
docs/ in the nav, every link between pages resolving."""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CONFIG = ROOT / "mkdocs.yml"

pytest.importorskip(
    "mkdocs", reason='the docs site needs MkDocs: pip install -c constraints.txt -e ".[docs]"'
)
yaml = pytest.importorskip("yaml", reason="MkDocs installs PyYAML; it is missing")


def _build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _nav_pages(nav: Any) -> list[str]:
    """Every page named in a MkDocs ``nav`` (nested lists of ``{title: page}``)."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [page for item in nav for page in _nav_pages(item)]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in _nav_pages(value)]
    return []


def _config() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    return data


@pytest.mark.slow
def test_the_site_builds_with_no_warnings(tmp_path: Path) -> None:
    done = _build(CONFIG, tmp_path / "site")
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "WARNING" not in output, output
    for page in _nav_pages(_config()["nav"]):
        assert (tmp_path / "site" / page.replace(".md", ".html")).is_file(), page


def test_every_page_in_docs_is_in_the_nav() -> None:
    pages = set(_nav_pages(_config()["nav"]))
    on_disk = {path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md")}
    assert sorted(on_disk - pages) == [], "pages missing from the nav in mkdocs.yml"
    assert sorted(pages - on_disk) == [], "nav entries without a page in docs/"


@pytest.mark.slow
def test_a_broken_link_fails_the_build(tmp_path: Path) -> None:
    """Strict mode really catches what it is there for: a link to a page that is not there."""
    docs = tmp_path / "docs"
    shutil.copytree(DOCS, docs)
    index = docs / "index.md"
    index.write_text(
        index.read_text(encoding="utf-8") + "\nSee [the missing page](no-such-page.md).\n",
        encoding="utf-8",
    )
    config = _config()
    config["docs_dir"] = str(docs)
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    done = _build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert done.returncode != 0
    assert "no-such-page.md" in done.stdout + done.stderr


def _resolve(path: str) -> object:
    """The object a dotted path names: the longest importable module prefix, then attributes."""
    parts = path.split(".")
    for split in range(len(parts), 0, -1):
        try:
            value: object = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[split:]:
            value = getattr(value, attribute)
        return value
    raise ModuleNotFoundError(path)


@pytest.mark.slow
def test_every_treadle_path_in_the_api_map_exists() -> None:
    """Each name the map gives in its "treadle" column imports: the map follows the code."""
    text = (DOCS / "api-map.md").read_text(encoding="utf-8")
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| `")]
    paths = [
        path
        for row in rows
        if len(row) >= 3
        for path in re.findall(r"`(treadle[a-z_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+)`", row[2])
    ]
    assert len(paths) > 60, "the map's table lost its rows"
    missing = []
    for path in paths:
        try:
            _resolve(path)
        except (ImportError, AttributeError) as err:
            missing.append(f"{path}: {err}")
    assert missing == []


def test_the_api_map_names_every_section_of_the_reference() -> None:
    """The names of the reference's index each have a row (the reference is not in this
    repository; its index is copied here)."""
    index = [
        "CheckpointManager",
        "LossStrategy",
        "GradientMonitor",
        "GradientAccumulator",
        "DataLoaderFactory",
        "TrainingLoop",
        "ValidationLoop",
        "MetricsEngine",
        "Trainer",
        "TrainingConfig",
        "TrainingConfigBuilder",
        "TaskSpec",
        "ModelRegistry",
        "JobManager",
        "TrainingScheduler",
        "create_export_bundle",
        "RetrainingTrigger",
        "UniversalDataModule",
        "CollatorRegistry",
        "MetricsTracker",
        "ExperimentDB",
        "set_random_seed",
    ]
    text = (DOCS / "api-map.md").read_text(encoding="utf-8")
    first_cells = {line.split(" | ")[0] for line in text.splitlines() if line.startswith("| `")}
    named = {name for cell in first_cells for name in re.findall(r"`(\w+)`", cell)}
    assert sorted(set(index) - named) == []


@pytest.mark.parametrize("page", ["plugins.md", "workflows.md"])
def test_the_python_blocks_of_the_guides_parse(page: str) -> None:
    import ast

    text = (DOCS / page).read_text(encoding="utf-8")
    blocks = re.findall(r"^```python\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    assert blocks
    for block in blocks:
        ast.parse(block)
