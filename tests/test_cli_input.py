"""Hostile and careless input on the command line: one message naming the problem and exit
status 2, never a traceback, never a store created for a refused config (RELIABILITY X3 and
issue 14), and output that stays small whatever a config holds."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from treadle.cli import main
from treadle.store_values import MAX_JSON_BYTES, MAX_JSON_DEPTH


def _error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    status = main(list(argv))
    captured = capsys.readouterr()
    assert status == 2, captured
    assert "Traceback" not in captured.err
    return captured.err


DEEP_JSON = "[" * 100_000 + "]" * 100_000
DEEP_TOML = "a = " + "[" * 5_000 + "]" * 5_000 + "\n"


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("deep.json", '{"notes": ' + DEEP_JSON + "}"),
        ("deep.toml", DEEP_TOML),
        ("dotted.toml", ".".join(["a"] * 100_000) + " = 1\n"),
        ("shallow-enough.json", '{"notes": ' + "[" * 70 + "]" * 70 + "}"),
    ],
)
def test_x3_a_deeply_nested_config_file_is_one_message_naming_the_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, text: str
) -> None:
    """Issue 14: nesting gave a RecursionError traceback and exit 1 (a dotted TOML key of
    100,000 parts ran out of memory); the message names the file and MAX_JSON_DEPTH."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    started = time.monotonic()

    message = _error(capsys, "train", "--plan", "--config", str(path))

    assert time.monotonic() - started < 30
    assert message.startswith(f"treadle train: {path}: data nests deeper than {MAX_JSON_DEPTH}")
    assert "(MAX_JSON_DEPTH)" in message


def test_x3_a_config_file_over_the_size_limit_is_refused_without_reading_it_all(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "huge.json"
    with path.open("w", encoding="utf-8") as file:
        file.write('{"notes": "')
        file.write("x" * (MAX_JSON_BYTES + 10))
        file.write('"}')

    message = _error(capsys, "train", "--plan", "--config", str(path))

    assert f"{path} is larger than 4 MiB" in message
    assert "(MAX_JSON_BYTES)" in message


def test_plan_output_stays_small_and_fast_for_a_huge_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 14: a 50 MB ``notes`` took 66 s, 6.3 GB and wrote 2 GB (every row padded to the
    widest value). A 3 MiB one, under the size limit, now prints a cut cell that names its
    length: a few kilobytes in all, in seconds."""
    path = tmp_path / "notes.json"
    path.write_text(json.dumps({"notes": "x" * 3 * 2**20, "epochs": 1}), encoding="utf-8")
    started = time.monotonic()

    status = main(["train", "--plan", "--config", str(path)])

    elapsed = time.monotonic() - started
    out = capsys.readouterr().out
    assert status == 0
    assert len(out.encode()) < 64_000, "no row is padded to the huge value"
    assert "\u2026 (3,145,730 chars)" in out
    assert elapsed < 120, f"--plan took {elapsed:.0f} s"


def test_a_bad_config_file_is_named_once_with_the_field_in_words(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 15: ``treadle train: treadle train: invalid TrainingConfig: ... @ $`` had two
    prefixes and cattrs' path; now one prefix, the field by name and the file that set it."""
    path = tmp_path / "c.json"
    path.write_text('{"epochs": "x", "learning_rate": 0.1}', encoding="utf-8")

    message = _error(capsys, "train", "--plan", "--config", str(path), "--set", "batch_size=0")

    assert message == (
        f"treadle train: invalid TrainingConfig: field 'epochs': expected an integer, got "
        f"str 'x' (from file {path})\n"
    )
    message = _error(capsys, "train", "--plan", "--set", "batch_size=0")
    assert message == (
        "treadle train: invalid TrainingConfig: 'batch_size' must be >= 1: 0 (from flag --set)\n"
    )


@pytest.mark.parametrize("suffix", [".yaml", ".yml"])
def test_x3_a_yaml_config_is_refused_saying_which_formats_are_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], suffix: str
) -> None:
    path = tmp_path / f"c{suffix}"
    path.write_text("epochs: 3\nuse_amp: no\n", encoding="utf-8")

    message = _error(capsys, "train", "--plan", "--config", str(path))

    assert f"{path}: config files are read as JSON or TOML (.toml), not YAML" in message


@pytest.mark.parametrize(
    ("command", "config", "expected"),
    [
        ("jobs", '"x"', "--config: the job config must be a JSON object such as"),
        ("jobs", "[1, 2]", "not a list"),
        ("jobs", DEEP_JSON, f"--config: data nests deeper than {MAX_JSON_DEPTH} levels"),
        ("jobs", '{"a": {"a": 1, "a": 2}}', "--config: duplicate key 'a'"),
        ("jobs", '{"seconds": 1e999}', "--config: seconds is inf; NaN and infinities"),
        ("schedule", '"x"', "--config: the job config must be a JSON object such as"),
        ("schedule", "[1, 2]", "not a list"),
        ("schedule", DEEP_JSON, f"--config: data nests deeper than {MAX_JSON_DEPTH} levels"),
    ],
)
def test_x3_a_job_config_that_is_no_json_object_is_refused_before_any_store_is_opened(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, config: str, expected: str
) -> None:
    """Issue 14: ``--config '"x"'`` gave ``TypeError: 'str' object is not a mapping`` and
    exit 1, a deep one a RecursionError; the store was created before the config was read."""
    location = tmp_path / "jobs.db"
    action = ["submit", "noop"] if command == "jobs" else ["add", "nightly", "noop", "0 2 * * *"]

    message = _error(capsys, command, "--location", str(location), *action, "--config", config)

    assert expected in message
    assert message.startswith(f"treadle {command}: ")
    assert not location.exists(), "a refused config creates no store"


def test_x3_a_job_config_file_is_read_by_the_config_loaders_rules(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    location = tmp_path / "jobs.db"
    deep = tmp_path / "deep.json"
    deep.write_text(DEEP_JSON, encoding="utf-8")

    message = _error(
        capsys, "jobs", "--location", str(location), "submit", "noop", "--config-file", str(deep)
    )

    assert f"{deep}: data nests deeper than {MAX_JSON_DEPTH} levels" in message
    assert not location.exists()


def test_x3_a_set_value_nested_past_the_limit_names_the_limit_and_the_flag(
    capsys: pytest.CaptureFixture[str],
) -> None:
    deep = "[" * 70 + "]" * 70
    message = _error(capsys, "train", "--plan", "--set", f"notes={deep}")

    assert message.startswith(
        f"treadle train: invalid TrainingConfig: data nests deeper than {MAX_JSON_DEPTH} levels "
        f"at notes[0][0]"
    )
    assert message.endswith("(MAX_JSON_DEPTH): write flatter data (from flag --set)\n")
