"""Data sets are plugins: a third party's, found through an entry point, does everything a
built-in does (listed with its provenance, named in a config, trained by ``treadle train``),
and registering data sets imports nothing heavy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import treadle_collators.plugin
import treadle_datasets.plugin
from treadle import hookimpl
from treadle.config import TrainingConfig
from treadle.data import (
    DataError,
    UniversalDataModule,
    dataset_info,
    list_datasets,
    load_named_dataset,
)
from treadle.errors import ConfigError, RegistrationError
from treadle.hookspecs import Register
from treadle.plugins import PluginManager, make_plugin_manager
from treadle.task import TaskSpec
from treadle.testing import isolated_plugin_manager

from .conftest import FakeDist
from .docs_examples import docs_examples

#: A third party's plugin module, as it would ship in its own distribution.
POEMS = """
from treadle import hookimpl

LINES = [
    "The woods are lovely, dark and deep,",
    "But I have promises to keep,",
    "And miles to go before I sleep,",
    "And miles to go before I sleep.",
] * 4


class Poems:
    description = "sixteen lines of a poem"
    task_types = ("language_modeling",)
    modalities = ("text",)
    source = "written out for this test"
    licence = "public domain"
    requirements = ()

    def default_task(self, training_config):
        from treadle.task import TaskSpec

        return TaskSpec.language_modeling("poems", max_seq_len=training_config.max_seq_len)

    def load(self, task_spec, *, tokenizer, validation_split, seed):
        from treadle.data import Record, datasets_from_records

        records = [Record(f"poems [line {i}]", {"text": line}) for i, line in enumerate(LINES)]
        return datasets_from_records(
            records, task_spec, tokenizer=tokenizer, validation_split=validation_split, seed=seed
        )


@hookimpl
def treadle_register_datasets(register):
    register("poems", Poems)
"""


def config(**values: Any) -> TrainingConfig:
    options: dict[str, Any] = {"vocab_size": 259, "max_seq_len": 16, "num_workers": 0}
    return TrainingConfig(**{**options, **values})


@pytest.fixture
def acme_site(fake_plugin_dist: FakeDist) -> Path:
    return fake_plugin_dist("acme-poems", "1.2.0", {"acme": "acme_poems"}, {"acme_poems": POEMS})


def test_a_third_party_data_set_is_found_listed_and_loaded_from_a_config(
    acme_site: Path,
) -> None:
    manager = make_plugin_manager()
    info = dataset_info("poems", manager)
    assert info.provider == "acme: acme-poems 1.2.0"
    assert info.task_types == ("language_modeling",)
    assert [item.name for item in list_datasets(manager)] == [
        "digits",
        "huggingface",
        "poems",
        "pydoc_topics",
    ]
    module = UniversalDataModule.from_training_config(
        config(dataset="poems", batch_size=4, validation_split=0.25), plugin_manager=manager
    )
    assert module.task_spec == TaskSpec.language_modeling("poems", max_seq_len=16)
    train_loader, val_loader = module.dataloaders()
    assert next(iter(train_loader))["input_ids"].shape == (4, 16)
    assert val_loader is not None
    with pytest.raises(ConfigError, match="set task = 'language_modeling'"):
        UniversalDataModule.from_training_config(
            config(dataset="poems", task="classification"), plugin_manager=manager
        )


def train_in_site(site: Path, epochs: int, overrides: dict[str, Any]) -> dict[str, Any]:
    """``treadle train --json`` in a subprocess that imports the plugins installed in ``site``,
    with ``overrides`` as ``--set`` values, run in ``site``'s folder (where its store lands);
    the run's JSON results."""
    command = [sys.executable, "-m", "treadle", "train", "--epochs", str(epochs), "--json"]
    for key, value in overrides.items():
        command += ["--set", f"{key}={json.dumps(value)}"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *sys.path])}
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=env,
        cwd=site.parent,  # the run registers its model in ./treadle.db
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results: dict[str, Any] = json.loads(done.stdout)
    return results


@pytest.mark.slow  # a subprocess that imports torch and trains
def test_treadle_train_trains_a_third_party_data_set_named_with_set(acme_site: Path) -> None:
    overrides = {
        "dataset": "poems",
        "max_seq_len": 16,
        "d_model": 16,
        "num_layers": 1,
        "num_heads": 2,
        "d_ff": 32,
        "batch_size": 4,
        "validation_split": 0.25,
        "num_workers": 0,
        "loggers": [],
        "experiment_location": None,
        "checkpoint_dir": str(acme_site.parent / "runs"),
        "max_train_samples": None,
        "max_val_samples": None,
    }
    assert "global_step" in train_in_site(acme_site, 1, overrides)


class _Broken:
    description = "returns the wrong thing"
    task_types = ("language_modeling",)
    modalities = ("text",)
    source = "this test"
    licence = "none"
    requirements = ()

    def default_task(self, training_config: TrainingConfig) -> TaskSpec:
        return TaskSpec.language_modeling()

    def load(
        self, task_spec: TaskSpec, *, tokenizer: Any, validation_split: float, seed: int
    ) -> Any:
        return iter([])


class _BrokenPlugin:
    @hookimpl
    def treadle_register_datasets(self, register: Register) -> None:
        register("broken", _Broken)


def test_a_data_set_that_returns_no_datasets_is_named_in_the_error() -> None:
    manager = isolated_plugin_manager(("acme", _BrokenPlugin()))
    with pytest.raises(DataError, match=r"data set 'broken' returned list_iterator from load\(\)"):
        load_named_dataset("broken", plugin_manager=manager)


def test_options_a_data_set_does_not_take_are_refused_naming_its_options() -> None:
    manager = isolated_plugin_manager(("datasets", treadle_datasets.plugin))
    with pytest.raises(
        DataError, match=r"'pydoc_topics' takes no option 'revision'; its options: none"
    ):
        load_named_dataset("pydoc_topics", plugin_manager=manager, revision="main")


def test_a_data_set_missing_a_member_is_refused_at_registration_naming_the_plugin() -> None:
    class NoLoad:
        description = "no load method"
        task_types = ("language_modeling",)
        modalities = ("text",)
        source = "this test"
        licence = "none"
        requirements = ()

        def default_task(self, training_config: TrainingConfig) -> TaskSpec:
            return TaskSpec.language_modeling()

    class Plugin:
        @hookimpl
        def treadle_register_datasets(self, register: Register) -> None:
            register("noload", NoLoad)

    manager = isolated_plugin_manager(("acme", Plugin()))
    with pytest.raises(RegistrationError, match=r"Data set 'noload' from acme .* lacks load"):
        manager.registry("datasets").names()


def test_the_huggingface_data_set_has_no_task_of_its_own_in_a_config() -> None:
    manager: PluginManager = isolated_plugin_manager(
        ("collators", treadle_collators.plugin), ("datasets", treadle_datasets.plugin)
    )
    with pytest.raises(ConfigError, match=r"call UniversalDataModule.load_huggingface"):
        UniversalDataModule.from_training_config(config(dataset="huggingface"), manager)


def test_registering_data_sets_imports_neither_torch_nor_the_datas_libraries() -> None:
    probe = (
        "import json, sys\n"
        "import treadle_datasets.plugin\n"
        "from treadle.plugins import make_plugin_manager\n"
        "from treadle.data import list_datasets\n"
        "manager = make_plugin_manager(load_entry_points=False, disabled=(),\n"
        "    plugins=[('datasets', treadle_datasets.plugin)])\n"
        "names = [info.name for info in list_datasets(manager)]\n"
        "heavy = ['torch', 'sklearn', 'datasets', 'pyarrow', 'pandas']\n"
        "print(json.dumps([names, [m for m in heavy if m in sys.modules]]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    names, imported = json.loads(done.stdout)
    assert names == ["digits", "huggingface", "pydoc_topics"]
    assert imported == []


@pytest.mark.slow  # scikit-learn, and a subprocess that trains
def test_the_docs_third_party_data_set_is_listed_loaded_and_trained_by_treadle_train(
    fake_plugin_dist: FakeDist,
) -> None:
    pytest.importorskip("sklearn")
    (source,) = docs_examples("data.md", "tests/test_datasets_plugin.py")
    site = fake_plugin_dist("acme-iris", "0.1.0", {"acme_iris": "acme_iris"}, {"acme_iris": source})
    manager = make_plugin_manager()
    assert dataset_info("iris", manager).provider == "acme_iris: acme-iris 0.1.0"
    train, val = load_named_dataset("iris", plugin_manager=manager)
    assert (len(train), len(val)) == (135, 15)

    overrides = {
        "dataset": "iris",
        "task": "classification",
        "model_type": "mlp_classifier",
        "d_model": 32,
        "batch_size": 16,
        "learning_rate": 0.01,
        "loggers": [],
        "experiment_location": None,
        "checkpoint_dir": str(site.parent / "runs"),
        "max_train_samples": None,
        "max_val_samples": None,
    }
    results = train_in_site(site, 10, overrides)
    assert results["final_metrics"]["val_accuracy"] > 0.8
