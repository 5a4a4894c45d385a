"""A preset meets a config by one rule on every path (``train``, ``jobs submit``, ``schedule
add``): the defaults, then the preset (quick_prototype unless named), then the config's
fields; unknown fields are refused naming the key (issue 15.6)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.trainer_fixtures import needs_main_job
from treadle.cli import main
from treadle.run_setup import resolve_config

#: a tiny model, so that ``train --plan`` builds it in a moment
TINY = {"d_model": 32, "num_heads": 2, "d_ff": 64, "max_train_samples": 64, "max_val_samples": 16}
GIVEN = {"epochs": 1, "learning_rate": 0.002, **TINY}


@pytest.fixture
def location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)
    return str(tmp_path / "jobs.db")


def _out(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    status = main(list(argv))
    captured = capsys.readouterr()
    assert status == 0, captured.err
    return captured.out


def _resolved(preset: str | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """What ``treadle train --preset PRESET`` with these fields resolves, as a store keeps it
    (JSON: tuples become lists)."""
    resolved: dict[str, Any] = json.loads(
        json.dumps(resolve_config(preset, overrides=overrides).config.to_dict())
    )
    return resolved


def _stored_training_config(
    capsys: pytest.CaptureFixture[str], location: str, path: str, *flags: str
) -> dict[str, Any]:
    """Submit a training job (or add a schedule of one) with ``flags`` and read back the
    training config the store keeps."""
    if path == "jobs submit":
        job_id = _out(capsys, "jobs", "--location", location, "submit", "training", *flags)
        shown = _out(capsys, "jobs", "--location", location, "show", job_id.strip(), "--json")
        config: dict[str, Any] = json.loads(shown)["config"]["training_config"]
        return config
    _out(capsys, "schedule", "--location", location, "add", "nightly", "training", "@daily", *flags)
    (schedule,) = json.loads(_out(capsys, "schedule", "--location", location, "list", "--json"))
    config = schedule["config"]["training_config"]
    return config


@pytest.mark.parametrize("path", ["jobs submit", "schedule add"])
@pytest.mark.parametrize(
    ("preset", "field", "value"),
    [("quick_prototype", "num_layers", 2), ("low_memory", "gradient_accumulation_steps", 8)],
)
def test_the_config_overrides_the_preset_it_does_not_replace_it(
    location: str,
    capsys: pytest.CaptureFixture[str],
    path: str,
    preset: str,
    field: str,
    value: int,
) -> None:
    flags = ("--training-preset", preset, "--config", json.dumps({"training_config": GIVEN}))
    stored = _stored_training_config(capsys, location, path, *flags)
    assert stored == _resolved(preset, GIVEN)
    assert stored["epochs"] == 1, "the config's field wins"
    assert stored[field] == value, "the preset's other fields stay (not the defaults)"


@pytest.mark.parametrize("path", ["jobs submit", "schedule add"])
def test_a_config_file_meets_the_preset_by_the_same_rule(
    location: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], path: str
) -> None:
    config_file = tmp_path / "job.toml"
    config_file.write_text("[training_config]\nepochs = 1\nd_model = 32\n", encoding="utf-8")
    stored = _stored_training_config(
        capsys,
        location,
        path,
        "--training-preset",
        "quick_prototype",
        "--config-file",
        str(config_file),
    )
    assert stored == _resolved("quick_prototype", {"epochs": 1, "d_model": 32})


@pytest.mark.parametrize("path", ["jobs submit", "schedule add"])
def test_without_a_preset_the_config_lies_over_the_default_preset_as_in_train(
    location: str, capsys: pytest.CaptureFixture[str], path: str
) -> None:
    flags = ("--config", json.dumps({"training_config": {"epochs": 1}}))
    stored = _stored_training_config(capsys, location, path, *flags)
    assert stored == _resolved(None, {"epochs": 1})


@pytest.mark.parametrize("path", ["jobs submit", "schedule add"])
def test_an_unknown_training_config_key_is_refused_naming_it(
    location: str, capsys: pytest.CaptureFixture[str], path: str
) -> None:
    config = json.dumps({"training_config": {"epoks": 1}})
    argv = {
        "jobs submit": ["jobs", "--location", location, "submit", "training"],
        "schedule add": ["schedule", "--location", location, "add", "n", "training", "@daily"],
    }[path]
    status = main([*argv, "--training-preset", "quick_prototype", "--config", config])
    err = capsys.readouterr().err
    assert status == 2
    assert "epoks" in err
    assert not Path(location).exists(), "a refused config left a store behind"


@needs_main_job
def test_train_plan_lays_the_config_file_over_the_preset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_file = tmp_path / "run.json"
    config_file.write_text(json.dumps(GIVEN), encoding="utf-8")
    status = main(
        [
            "train",
            "--plan",
            "--preset",
            "quick_prototype",
            "--config",
            str(config_file),
            "--set",
            "experiment_location=null",
            "--run-dir",
            str(tmp_path / "run"),
        ]
    )
    out = capsys.readouterr().out
    assert status == 0
    expected = resolve_config("quick_prototype", overrides=GIVEN).config
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    assert rows["epochs"][:1] == ["1"]
    assert f"file {config_file}" in " ".join(rows["epochs"])
    assert rows["num_layers"][:1] == [str(expected.num_layers)]
    assert "preset quick_prototype" in " ".join(rows["num_layers"])
    config_file.write_text(json.dumps({"epoks": 1}), encoding="utf-8")
    assert (
        main(["train", "--plan", "--preset", "quick_prototype", "--config", str(config_file)]) == 2
    )
    assert "epoks" in capsys.readouterr().err
