"""``treadle plugin new``: a package that installs, passes its own tests as written and is
listed by ``treadle plugins``; and the example plugin, rendered from the same templates."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from treadle.cli import main
from treadle_cli.scaffold import KIND_TEMPLATES, answers_for, answers_from_project, render

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "treadle-example-plugin"


def _files(folder: Path) -> dict[str, str]:
    """The package's own files: without build output and caches (``.ruff_cache``, ...)."""
    found = {}
    for path in sorted(folder.rglob("*")):
        parts = path.relative_to(folder).parts
        if not path.is_file() or any(
            part.startswith((".", "__pycache__"))
            or part.endswith(".egg-info")
            or part in ("build", "dist")
            for part in parts
        ):
            continue
        found["/".join(parts)] = path.read_text(encoding="utf-8")
    return found


def test_the_example_plugin_is_rendered_from_the_templates() -> None:
    """The example and the templates never drift: regenerate the example with
    ``treadle plugin new example --kinds loss,collator,exporter --distribution
    treadle-example-plugin --package treadle_example --version X.Y.Z --directory
    examples/treadle-example-plugin --force`` after changing a template."""
    answers = answers_from_project(EXAMPLE)
    assert answers.kinds == ("loss", "collator", "exporter")
    assert answers.package == "treadle_example"
    rendered = render(answers)
    on_disk = _files(EXAMPLE)
    assert sorted(on_disk) == sorted(rendered)
    for path, text in rendered.items():
        assert on_disk[path] == text, f"{path} differs from its template"


def test_plugin_new_writes_a_package_and_says_what_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)

    assert main(["plugin", "new", "acme", "--kinds", "loss,metrics,command"]) == 0

    out = capsys.readouterr().out
    assert out.startswith("wrote treadle-acme/ (")
    assert "loss focal; metric macro_f1; command acme-info" in out
    assert "pip install -e ." in out
    package = tmp_path / "treadle-acme"
    assert (package / "src" / "treadle_acme" / "macro_f1.py").is_file()
    assert 'acme = "treadle_acme.plugin"' in (package / "pyproject.toml").read_text()
    assert answers_from_project(package) == answers_for("acme", ["loss", "metric", "command"])


def test_plugin_new_refuses_a_folder_with_files_bad_names_and_unknown_kinds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "treadle-acme").mkdir()
    (tmp_path / "treadle-acme" / "notes.txt").write_text("mine")

    assert main(["plugin", "new", "acme"]) == 2
    assert "treadle-acme exists and is not empty" in capsys.readouterr().err
    assert main(["plugin", "new", "Acme"]) == 2
    assert "plugin name 'Acme'" in capsys.readouterr().err
    assert main(["plugin", "new", "acme2", "--kinds", "loss,lossy"]) == 2
    err = capsys.readouterr().err
    assert "unknown kind 'lossy'; kinds: loss, collator, model" in err
    assert (tmp_path / "treadle-acme" / "notes.txt").read_text() == "mine"


def test_every_kind_renders_to_code_ruff_accepts(tmp_path: Path) -> None:
    ruff = shutil.which("ruff") or shutil.which("ruff", path=str(Path(sys.executable).parent))
    if ruff is None:
        pytest.skip("ruff is not installed")
    for path, text in render(answers_for("acme", list(KIND_TEMPLATES))).items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    for command in ([ruff, "check", "."], [ruff, "format", "--check", "."]):
        done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr


def _environment_with_this_one(folder: Path) -> Path:
    """A virtual environment that sees this one's packages (treadle, torch, pytest, pip,
    setuptools) through a .pth file, and installs into its own site-packages: no index, no
    copies, under a second."""
    venv.EnvBuilder(with_pip=False).create(folder)
    python = folder / "bin" / "python"
    own = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    parent = sysconfig.get_paths()["purelib"]
    Path(own, "_treadle_parent.pth").write_text(f"import site; site.addsitedir({parent!r})\n")
    return python


@pytest.mark.slow  # pip install -e and the new package's own test run: about 30 s
def test_a_new_package_installs_passes_its_own_tests_and_is_listed(tmp_path: Path) -> None:
    python = _environment_with_this_one(tmp_path / "venv")
    package = tmp_path / "treadle-acme"
    assert main(["plugin", "new", "acme", "--kinds", ",".join(KIND_TEMPLATES),
                 "--directory", str(package)]) == 0  # fmt: skip
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "TREADLE_PLUGINS")
    }

    def run(*command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(python), *command],
            cwd=package,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )

    installed = run(
        "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "-e", "."
    )
    assert installed.returncode == 0, installed.stderr
    tested = run("-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "10 passed, 0 failed, 0 skipped" in tested.stdout  # the conformance table
    listed = run("-m", "treadle", "plugins", "--json")
    assert listed.returncode == 0, listed.stderr
    (acme,) = [record for record in json.loads(listed.stdout) if record["name"] == "acme"]
    assert (acme["distribution"], acme["version"], acme["status"]) == (
        "treadle-acme",
        "0.1.0",
        "loaded",
    )
    assert acme["registers"]["losses"] == ["focal"]
    assert acme["registers"]["commands"] == ["acme-info"]
