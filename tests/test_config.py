"""TrainingConfig and its builder: round trips, every validation error, presets, files."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from treadle.config import PRESETS, PluginsConfig, TrainingConfig, TrainingConfigBuilder
from treadle.config.reading import read_config_file
from treadle.errors import ConfigError

names = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**31), 2**31),
    st.text(max_size=8),
    st.floats(allow_nan=False, allow_infinity=False),
)

config_values = st.fixed_dictionaries(
    {},
    optional={
        "random_seed": st.integers(0, 2**32 - 1),
        "deterministic": st.booleans(),
        "learning_rate": st.floats(1e-8, 10.0),
        "batch_size": st.integers(1, 4096),
        "epochs": st.integers(1, 1000),
        "warmup_ratio": st.floats(0.0, 0.99),
        "weight_decay": st.floats(0.0, 1.0),
        "max_grad_norm": st.none() | st.floats(0.01, 100.0),
        "gradient_accumulation_steps": st.integers(1, 64),
        "early_stopping_patience": st.none() | st.integers(1, 50),
        "precision": st.sampled_from(["auto", "32-true", "16-mixed", "bf16-mixed"]),
        "scheduler": st.sampled_from(["linear", "cosine", "constant"]),
        # a run's folder name: letters, digits, '.', '_', '-' (issue 13)
        "run_name": st.none() | st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,19}", fullmatch=True),
        "notes": st.text(max_size=40),
        "loggers": st.lists(names, max_size=3).map(tuple),
        "adam_betas": st.tuples(st.floats(0.01, 0.99), st.floats(0.01, 0.999)),
        "save_every_minutes": st.none() | st.floats(0.1, 1000.0),
        "plugins": st.builds(
            PluginsConfig,
            disable=st.lists(names, max_size=3).map(tuple),
            options=st.dictionaries(names, st.dictionaries(names, json_scalars, max_size=3)),
        ),
    },
)


@settings(max_examples=150, deadline=None)
@given(values=config_values)
def test_to_dict_then_from_dict_gives_an_equal_config_through_json(values: dict[str, Any]) -> None:
    config = TrainingConfig(**values)
    through_json = json.loads(json.dumps(config.to_dict()))
    assert TrainingConfig.from_dict(through_json) == config


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_builds_a_valid_config(preset: str) -> None:
    config = TrainingConfigBuilder.from_preset(preset).build()
    config.validate()
    assert TrainingConfig.from_dict(config.to_dict()) == config


def test_presets_follow_the_spec_descriptions() -> None:
    assert TrainingConfigBuilder.quick_prototype().build().epochs == 3
    assert TrainingConfigBuilder.baseline().build().epochs == 10
    production = TrainingConfigBuilder.production().build()
    assert production.epochs == 20
    assert production.export_formats
    distributed = TrainingConfigBuilder.distributed().build()
    assert distributed.strategy == "ddp"
    assert distributed.devices == 4
    low = TrainingConfigBuilder.low_memory().build()
    assert (low.batch_size, low.gradient_accumulation_steps) == (2, 8)


def test_chaining_returns_new_builders_and_leaves_the_preset_unchanged() -> None:
    preset = TrainingConfigBuilder.baseline()
    before = preset.build()
    custom = (
        preset.with_training(epochs=30, batch_size=8)
        .with_optimizer(gradient_accumulation_steps=4)
        .with_logging(run_name="custom-baseline")
    )
    assert preset.build() == before
    config = custom.build()
    assert (config.epochs, config.batch_size, config.gradient_accumulation_steps) == (30, 8, 4)
    assert config.run_name == "custom-baseline"
    assert TrainingConfigBuilder.baseline().build() == before


def test_the_spec_builder_methods_accept_the_spec_parameters() -> None:
    config = (
        TrainingConfigBuilder()
        .with_model(
            model_name="custom-gpt",
            vocab_size=50257,
            d_model=768,
            num_layers=12,
            num_heads=12,
            d_ff=3072,
            max_seq_len=512,
        )
        .with_training(
            learning_rate=5e-5, batch_size=16, epochs=20, warmup_ratio=0.1, validation_split=0.1
        )
        .with_optimizer(weight_decay=0.01, max_grad_norm=1.0, gradient_accumulation_steps=4)
        .with_hardware(use_amp=True, compile_mode="default", devices=1, precision="bf16-mixed")
        .with_logging(wandb_project="my-project", run_name="exp-1", notes="Testing")
        .build()
    )
    assert config.model_name == "custom-gpt"
    assert config.precision == "bf16-mixed"


def test_builder_refuses_unknown_fields() -> None:
    with pytest.raises(TypeError, match="lerning_rate"):
        TrainingConfigBuilder().with_options(lerning_rate=1.0)


def test_an_intermediate_inconsistent_builder_is_fine_until_build() -> None:
    builder = TrainingConfigBuilder().with_options(
        gradient_norm_warning=5.0, gradient_norm_critical=1.0
    )
    with pytest.raises(ConfigError, match="must be >= 'gradient_norm_warning'"):
        builder.build()
    assert builder.with_options(gradient_norm_critical=6.0).build().gradient_norm_critical == 6.0


def test_model_sizes_that_fit_no_built_in_model_are_the_factorys_to_refuse() -> None:
    """Issue 18: a custom model_type takes any sizes; tiny_gpt's own factory checks its."""
    custom = TrainingConfig(model_type="custom", d_model=32, num_heads=12)
    assert (custom.d_model, custom.num_heads) == (32, 12)
    assert TrainingConfig(d_model=100, num_heads=3).d_model == 100  # tiny_gpt: its factory


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"learning_rate": 0.0}, "'learning_rate' must be > 0: 0.0"),
        ({"learning_rate": float("nan")}, "'learning_rate' must be a finite number"),
        ({"batch_size": 0}, "'batch_size' must be >= 1: 0"),
        ({"epochs": 0}, "'epochs' must be >= 1: 0"),
        ({"warmup_ratio": 1.0}, "'warmup_ratio' must lie in [0, 1)"),
        ({"validation_split": 0.0}, "'validation_split' must lie in (0, 1)"),
        ({"weight_decay": -0.1}, "'weight_decay' must be >= 0.0"),
        ({"max_grad_norm": -1.0}, "'max_grad_norm' must be > 0"),
        ({"gradient_accumulation_steps": 0}, "'gradient_accumulation_steps' must be >= 1"),
        ({"early_stopping_patience": 0}, "'early_stopping_patience' must be >= 1"),
        ({"monitor_mode": "up"}, "'monitor_mode' must be one of 'min', 'max'"),
        ({"precision": "fp8"}, "'precision' must be one of"),
        ({"strategy": "horovod"}, "'strategy' must be one of"),
        ({"optimizer": "lamb"}, "'optimizer' must be one of"),
        ({"scheduler": "step"}, "'scheduler' must be one of"),
        ({"compile_mode": "fast"}, "'compile_mode' must be one of"),
        ({"gradient_critical_action": "panic"}, "'gradient_critical_action' must be one of"),
        ({"random_seed": -1}, "'random_seed' must be >= 0"),
        ({"num_workers": -2}, "'num_workers' must be >= 0"),
        ({"dropout": 1.0}, "'dropout' must lie in [0, 1)"),
        ({"batch_size": "4"}, "'batch_size' must be int, got str"),
        ({"use_amp": "yes"}, "'use_amp' must be bool, got str"),
        ({"loggers": ("console", "")}, "'loggers' holds empty or padded names"),
        ({"keep_best_k": 0, "keep_last_n": 0}, "every checkpoint would be deleted"),
        ({"strategy": "ddp", "devices": 1}, "'strategy' 'ddp' needs 'devices' >= 2"),
        (
            {"gradient_norm_warning": 5.0, "gradient_norm_critical": 1.0},
            "'gradient_norm_critical' (1.0) must be >= 'gradient_norm_warning' (5.0)",
        ),
        ({"adam_betas": (0.9, 1.5)}, "'adam_betas' must both lie in (0, 1)"),
    ],
)
def test_each_invalid_value_is_refused_with_its_field_named(
    values: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        TrainingConfig(**values)
    assert expected in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_validate_lists_every_problem_not_just_the_first() -> None:
    with pytest.raises(ConfigError) as caught:
        TrainingConfig(batch_size=0, epochs=0, learning_rate=-1.0, precision="fp8")
    message = str(caught.value)
    assert "4 problems" in message
    for field in ("batch_size", "epochs", "learning_rate", "precision"):
        assert f"'{field}'" in message
    assert len(caught.value.problems) == 4


def test_evolve_is_validated_too() -> None:
    config = TrainingConfig()
    with pytest.raises(ConfigError, match="batch_size"):
        attrs.evolve(config, batch_size=0)


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    config = TrainingConfigBuilder.production().with_logging(run_name="prod-1").build()
    path = config.save(tmp_path / "experiments" / "my_config.json")
    assert TrainingConfig.load(path) == config


def test_save_without_a_path_writes_a_timestamped_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    first = TrainingConfig().save()
    second = TrainingConfig().save()
    assert first.name.startswith("training_config_")
    assert first != second
    assert TrainingConfig.load(first) == TrainingConfig()


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_an_unknown_key_is_named_with_the_closest_valid_one(tmp_path: Path) -> None:
    path = write(tmp_path, "c.json", '{"lerning_rate": 0.1}')
    with pytest.raises(ConfigError) as caught:
        TrainingConfig.load(path)
    message = str(caught.value)
    assert str(path) in message
    assert "unknown field 'lerning_rate' (did you mean 'learning_rate'?)" in message


def test_wrong_types_name_the_field_and_are_not_coerced(tmp_path: Path) -> None:
    path = write(tmp_path, "c.json", '{"batch_size": "4", "epochs": 2.5, "use_amp": 1}')
    with pytest.raises(ConfigError) as caught:
        TrainingConfig.load(path)
    message = str(caught.value)
    # issue 15: the field's path in words, not cattrs' "@ $.batch_size"
    assert "field 'batch_size': expected an integer, got str '4'" in message
    assert "field 'epochs': expected an integer, got float 2.5" in message
    assert "field 'use_amp': expected true or false, got int 1" in message
    assert "$" not in message


def test_nested_plugin_options_errors_give_the_path(tmp_path: Path) -> None:
    path = write(tmp_path, "c.json", '{"plugins": {"disable": [3], "requires": []}}')
    with pytest.raises(ConfigError) as caught:
        TrainingConfig.load(path)
    message = str(caught.value)
    assert "field 'plugins.disable[0]': expected a string, got int 3" in message
    assert "'requires' (did you mean 'require'?)" in message
    assert "$" not in message


def test_duplicate_keys_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "c.json", '{"epochs": 3, "epochs": 4}')
    with pytest.raises(ConfigError, match="duplicate key 'epochs'"):
        TrainingConfig.load(path)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_refused(tmp_path: Path, literal: str) -> None:
    path = write(tmp_path, "c.json", f'{{"learning_rate": {literal}}}')
    with pytest.raises(ConfigError, match="NaN and infinities are refused"):
        TrainingConfig.load(path)


def test_toml_files_load_and_their_nan_is_refused(tmp_path: Path) -> None:
    good = write(tmp_path, "c.toml", 'epochs = 3\nrun_name = "t"\n[plugins]\ndisable = ["wandb"]\n')
    config = TrainingConfig.load(good)
    assert (config.epochs, config.plugins.disable) == (3, ("wandb",))
    bad = write(tmp_path, "bad.toml", "learning_rate = nan\n")
    with pytest.raises(ConfigError, match=r"bad.toml: learning_rate is nan; NaN and infinities"):
        TrainingConfig.load(bad)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", "Expecting value"), ("[1, 2]", "expected an object"), ("{", "Expecting")],
)
def test_malformed_files_are_refused_naming_the_file(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, "c.json", text)
    with pytest.raises(ConfigError, match=expected) as caught:
        TrainingConfig.load(path)
    assert str(path) in str(caught.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        TrainingConfig.load(tmp_path / "nope.json")


def test_config_hash_is_stable_and_sensitive() -> None:
    assert TrainingConfig().config_hash() == TrainingConfig().config_hash()
    assert TrainingConfig().config_hash() != TrainingConfig(epochs=11).config_hash()


# -- hostile and careless input (RELIABILITY X3, issues 14, 15 and 18) ---------------------------


def test_x3_plugins_given_as_a_mapping_is_read_or_refused_naming_the_field() -> None:
    """Issue 18: a dict where PluginsConfig belongs raised attrs' NotAnAttrsClassError."""
    config = TrainingConfig(plugins={"disable": ["wandb"], "options": {"wandb": {"mode": "x"}}})
    assert config.plugins == PluginsConfig(disable=("wandb",), options={"wandb": {"mode": "x"}})
    with pytest.raises(ConfigError, match=r"'plugins': .*unknown field 'disabel'"):
        TrainingConfig(plugins={"disabel": ["wandb"]})
    with pytest.raises(ConfigError, match=r"'plugins' must be PluginsConfig, got str"):
        TrainingConfig(plugins="wandb")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"loggers": "console"}, "field 'loggers': expected a list, got str 'console'"),
        ({"plugins": {"disable": "wandb"}}, "field 'plugins.disable': expected a list, got str"),
        ({"adam_betas": [0.9]}, "field 'adam_betas': expected a list of 2 items, got 1"),
    ],
)
def test_x3_a_string_where_a_list_belongs_is_refused_not_split_into_letters(
    data: dict[str, Any], expected: str
) -> None:
    """cattrs' own hook turned ``"console"`` into ``("c", "o", "n", ...)``."""
    with pytest.raises(ConfigError) as caught:
        TrainingConfig.from_dict(data)
    assert expected in str(caught.value)


def test_x3_each_problem_names_the_file_or_flag_that_set_the_field(tmp_path: Path) -> None:
    """Issue 15: problems say where each value came from, in words, without cattrs' ``@ $``."""
    from treadle.run_setup import resolve_config

    path = write(tmp_path, "c.json", '{"epochs": "3", "keep_best_k": 0}')
    with pytest.raises(ConfigError) as caught:
        resolve_config(None, path, ["keep_last_n=0"], {"batch_size": 0})
    assert str(caught.value) == (
        f"invalid TrainingConfig: field 'epochs': expected an integer, got str '3' "
        f"(from file {path})"
    )
    with pytest.raises(ConfigError) as caught:
        resolve_config(None, path, ["epochs=3", "warmup_ratio=2.0"], {"batch_size": 0})
    message = str(caught.value)
    assert message.startswith("invalid TrainingConfig (2 problems):")
    assert "'batch_size' must be >= 1: 0 (from field batch_size)" in message
    assert "'warmup_ratio' must lie in [0, 1): 2.0 (from override)" in message
    assert "$" not in message
    with pytest.raises(ConfigError) as caught:
        resolve_config(None, path, ["keep_last_n=0", "epochs=3"])
    assert str(caught.value).endswith(
        f"keep at least one (keep_best_k from file {path}; keep_last_n from override)"
    )


@pytest.mark.parametrize(
    "data",
    [
        {"plugins": {"options": {"x": {"y": json.loads("[" * 200 + "]" * 200)}}}},
        {"notes": json.loads("[" * 900 + "]" * 900)},
    ],
)
def test_x3_data_nesting_past_the_limit_is_refused_however_it_arrives(data: Any) -> None:
    with pytest.raises(ConfigError, match=r"nests deeper than 64 levels .*\(MAX_JSON_DEPTH\)"):
        TrainingConfig.from_dict(data)


def test_x3_a_long_value_in_a_message_is_cut() -> None:
    with pytest.raises(ConfigError) as caught:
        TrainingConfig.from_dict({"epochs": "9" * 1_000_000})
    assert len(str(caught.value)) < 300


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("c.toml", ".".join(["a"] * 100_000) + " = 1\n", "the dotted key a.a.a"),
        ("c.toml", "[" + ".".join(["t"] * 70) + "]\nx = 1\n", "the dotted key t.t.t"),
        ("c.toml", "a = " + "[" * 3000 + "]" * 3000 + "\n", "(MAX_JSON_DEPTH)"),
        ("c.json", '{"a": ' + "[" * 65 + "]" * 65 + "}", "at a[0][0][0]"),
        ("c.json", "[" * 100_000, "(MAX_JSON_DEPTH)"),
    ],
)
def test_x3_deep_files_are_refused_naming_the_file_and_the_limit(
    tmp_path: Path, name: str, content: str, expected: str
) -> None:
    path = write(tmp_path, name, content)
    started = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        read_config_file(path)
    assert time.monotonic() - started < 10
    message = str(caught.value)
    assert message.startswith(f"{path}: data nests deeper than 64 levels")
    assert expected in message


def test_x3_dots_in_toml_strings_and_comments_are_no_keys(tmp_path: Path) -> None:
    dots = ".".join(["v"] * 100)
    path = write(
        tmp_path, "c.toml", f'notes = "{dots}"\n# {dots}\nrun_name = \'{dots}\'\n"a.b" = 1\n'
    )
    assert read_config_file(path)["notes"] == dots


def test_x3_a_non_utf8_file_is_named_with_the_byte_offset(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_bytes('{"notes": "caf\u00e9"}'.encode("cp1252"))
    with pytest.raises(ConfigError, match=r"c.json: not UTF-8 text \(byte 0xe9 at byte offset 14"):
        read_config_file(path)


def test_x3_a_large_integer_and_an_overflowing_float_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="has 5000 digits"):
        read_config_file(write(tmp_path, "a.json", '{"epochs": ' + "9" * 5000 + "}"))
    with pytest.raises(ConfigError, match=r"learning_rate is inf; NaN and infinities"):
        read_config_file(write(tmp_path, "b.json", '{"learning_rate": 1e999}'))
