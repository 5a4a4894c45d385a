"""Discovery through the 'treadle' entry-point group, against distributions written to disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from tests.conftest import FakeDist
from treadle.config import PluginsConfig
from treadle.errors import PluginConflictError, PluginLoadError, UnknownNameError
from treadle.plugins import check_requirements, make_plugin_manager, plugin_manager_for

ACME = """
from treadle import hookimpl

class MeanLoss:
    def compute_loss(self, logits, labels, inputs=None):
        return (logits - labels).abs().mean()

    def validate_inputs(self, logits, labels):
        pass

@hookimpl
def treadle_register_losses(register):
    register("acme_mean", MeanLoss)
"""

BROKEN = """
import a_module_that_is_not_installed
"""

ORDER = """
from treadle import hookimpl
CALLS = []

@hookimpl
def treadle_register_losses(register):
    CALLS.append(__name__)
"""


def test_an_installed_plugin_is_found_with_its_distribution_and_version(
    fake_plugin_dist: FakeDist,
) -> None:
    fake_plugin_dist("acme-treadle", "1.2.0", {"acme": "acme_treadle"}, {"acme_treadle": ACME})
    manager = make_plugin_manager()
    infos = {info.name: info for info in manager.plugin_infos()}
    assert infos["acme"].distribution == "acme-treadle"
    assert infos["acme"].version == "1.2.0"
    assert infos["acme"].status == "loaded"
    entry = manager.registry("losses").entry("acme_mean")
    assert str(entry.provenance) == "acme: acme-treadle 1.2.0"


def test_x4_a_plugin_that_fails_to_import_stops_start_up_naming_it_and_the_fix(
    fake_plugin_dist: FakeDist,
) -> None:
    fake_plugin_dist(
        "broken-treadle", "0.1.0", {"broken": "broken_treadle"}, {"broken_treadle": BROKEN}
    )
    with pytest.raises(PluginLoadError) as caught:
        make_plugin_manager()
    message = str(caught.value)
    assert "Plugin 'broken'" in message
    assert "'broken_treadle'" in message
    assert "broken-treadle 0.1.0" in message
    assert "ModuleNotFoundError" in message
    assert "TREADLE_DISABLE_PLUGINS=broken" in message


def test_non_strict_discovery_records_a_broken_plugin_and_loads_the_rest(
    fake_plugin_dist: FakeDist,
) -> None:
    fake_plugin_dist(
        "broken-treadle", "0.1.0", {"broken": "broken_treadle"}, {"broken_treadle": BROKEN}
    )
    fake_plugin_dist("acme-treadle", "1.2.0", {"acme": "acme_treadle"}, {"acme_treadle": ACME})
    manager = make_plugin_manager(strict=False)
    infos = {info.name: info for info in manager.plugin_infos()}
    assert infos["broken"].status == "broken"
    assert "a_module_that_is_not_installed" in (infos["broken"].error or "")
    assert "acme_mean" in manager.registry("losses")


def test_x4_a_disabled_plugin_is_never_imported(
    fake_plugin_dist: FakeDist, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """RELIABILITY X4: plugin loading disabled imports nothing; an unknown name in the
    variable is one treadle warning listing the installed plugins (issue 14: it was a Python
    UserWarning with a source line)."""
    fake_plugin_dist(
        "broken-treadle", "0.1.0", {"broken": "broken_treadle"}, {"broken_treadle": BROKEN}
    )
    monkeypatch.setenv("TREADLE_DISABLE_PLUGINS", "broken, other")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        manager = make_plugin_manager()
    assert "broken_treadle" not in sys.modules
    infos = {info.name: info for info in manager.plugin_infos()}
    assert infos["broken"].status == "disabled"
    (record,) = [r for r in caplog.records if "Cannot disable" in r.getMessage()]
    assert record.levelname == "WARNING"
    assert record.name == "treadle.plugins"
    message = record.getMessage()
    assert message.startswith(
        "Cannot disable unknown plugin 'other' (TREADLE_DISABLE_PLUGINS or plugins.disable). "
        "Installed plugins: "
    )
    assert "broken, " in message
    assert "\n" not in message


def test_x4_an_unknown_name_to_disable_is_one_line_on_the_command_line(tmp_path: Path) -> None:
    """The command line shows the warning as one line: no source line, no Python category."""
    result = subprocess.run(
        [sys.executable, "-m", "treadle", "plugins"],
        env={**os.environ, "TREADLE_DISABLE_PLUGINS": "wandbb"},
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines == [
        "WARNING treadle.plugins: Cannot disable unknown plugin 'wandbb' (TREADLE_DISABLE_PLUGINS "
        "or plugins.disable). Did you mean 'wandb'? Installed plugins: "
        + ", ".join(sorted(info.name for info in make_plugin_manager().plugin_infos()))
        + "."
    ]


def test_a_lookup_whose_provider_is_disabled_says_so(fake_plugin_dist: FakeDist) -> None:
    fake_plugin_dist("acme-treadle", "1.2.0", {"acme": "acme_treadle"}, {"acme_treadle": ACME})
    manager = make_plugin_manager(disabled=["acme"])
    with pytest.raises(UnknownNameError, match="Disabled plugins, which may provide it: acme"):
        manager.registry("losses").get("acme_mean")


def test_two_distributions_claiming_one_plugin_name_is_an_error_naming_both(
    fake_plugin_dist: FakeDist,
) -> None:
    fake_plugin_dist("acme-treadle", "1.2.0", {"acme": "acme_treadle"}, {"acme_treadle": ACME})
    fake_plugin_dist("acme-fork", "9.0.0", {"acme": "acme_fork"}, {"acme_fork": ACME})
    with pytest.raises(PluginConflictError) as caught:
        make_plugin_manager()
    assert "acme-treadle 1.2.0" in str(caught.value)
    assert "acme-fork 9.0.0" in str(caught.value)


def test_entry_points_register_in_name_order(fake_plugin_dist: FakeDist) -> None:
    fake_plugin_dist(
        "order-treadle",
        "1.0",
        {"zeta": "order_zeta", "alpha": "order_alpha", "mid": "order_mid"},
        {"order_zeta": ORDER, "order_alpha": ORDER, "order_mid": ORDER},
    )
    manager = make_plugin_manager()
    ours = [name for name, _ in manager.list_name_plugin() if name in {"zeta", "alpha", "mid"}]
    assert ours == ["alpha", "mid", "zeta"]


def _run_cli(*args: str, env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **env_extra}
    return subprocess.run(
        [sys.executable, "-m", "treadle", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_cli_lists_a_broken_plugin_with_its_cause(
    fake_plugin_dist: FakeDist,
) -> None:
    site = fake_plugin_dist(
        "broken-treadle", "0.1.0", {"broken": "broken_treadle"}, {"broken_treadle": BROKEN}
    )
    fake_plugin_dist("acme-treadle", "1.2.0", {"acme": "acme_treadle"}, {"acme_treadle": ACME})
    env = {"PYTHONPATH": os.pathsep.join([str(site), *sys.path])}
    listing = _run_cli("plugins", "--json", env_extra=env)
    assert listing.returncode == 1, listing.stderr
    records = {record["name"]: record for record in json.loads(listing.stdout)}
    assert records["broken"]["status"] == "broken"
    assert records["acme"]["registers"] == {"losses": ["acme_mean"]}
    assert records["acme"]["hooks"] == ["treadle_register_losses"]

    text = _run_cli("plugins", env_extra=env)
    assert "broken is broken" in text.stdout

    hooks = _run_cli("plugins", "--hooks", env_extra=env)
    assert "treadle_register_losses: acme" in hooks.stdout


def test_plugins_command_succeeds_when_every_plugin_loads(tmp_path: Path) -> None:
    result = _run_cli("plugins", env_extra={})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("plugin")


def test_config_disable_leaves_a_plugin_out_for_that_run(fake_plugin_dist: FakeDist) -> None:
    fake_plugin_dist("acme-treadle", "1.2.0", {"acme": "acme_treadle"}, {"acme_treadle": ACME})
    manager = plugin_manager_for(PluginsConfig(disable=("acme",)))
    assert "acme_mean" not in manager.registry("losses")
    assert {info.name: info.status for info in manager.plugin_infos()}["acme"] == "disabled"


def test_required_plugins_must_be_installed_at_a_matching_version(
    fake_plugin_dist: FakeDist,
) -> None:
    fake_plugin_dist("acme-treadle", "1.2.0", {"acme": "acme_treadle"}, {"acme_treadle": ACME})
    check_requirements(["acme-treadle>=1.0"])
    with pytest.raises(PluginLoadError) as caught:
        check_requirements(["acme-treadle>=2.0", "treadle-focal>=0.2", "not a requirement!"])
    message = str(caught.value)
    assert "acme-treadle 1.2.0 is installed, not acme-treadle>=2.0" in message
    assert "treadle-focal is not installed" in message
    assert "'not a requirement!' is not a valid requirement" in message
    assert 'pip install "acme-treadle>=2.0"' in message


# -- TREADLE_PLUGINS: plugins for one process, as pytest's PYTEST_PLUGINS -------------------

PROCESS_PLUGIN = """
from treadle import hookimpl

class Counter:
    def __init__(self):
        self.seen = []

    @hookimpl
    def treadle_on_training_start(self, trainer):
        self.seen.append(trainer)

counter = Counter()

@hookimpl
def treadle_register_losses(register):
    register("from_env", "acme_env_plugin:MeanLoss")

class MeanLoss:
    def compute_loss(self, logits, labels, inputs=None):
        return (logits - labels).abs().mean()

    def validate_inputs(self, logits, labels):
        pass
"""


@pytest.fixture
def env_plugin_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "acme_env_plugin.py").write_text(PROCESS_PLUGIN, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "acme_env_plugin", raising=False)
    return "acme_env_plugin"


def test_treadle_plugins_loads_modules_and_objects_after_the_entry_points(
    env_plugin_module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TREADLE_PLUGINS", f"{env_plugin_module}, {env_plugin_module}:counter")
    manager = make_plugin_manager()
    infos = {info.name: info for info in manager.plugin_infos()}
    assert infos[env_plugin_module].status == "registered"
    assert infos[f"{env_plugin_module}:counter"].target == f"{env_plugin_module}:counter"
    assert manager.hooks_of(f"{env_plugin_module}:counter") == ["treadle_on_training_start"]
    assert manager.registry("losses").entry("from_env").provenance.plugin == env_plugin_module
    assert make_plugin_manager(load_entry_points=False).get_plugin(env_plugin_module) is None


def test_a_treadle_plugins_entry_that_fails_stops_start_up_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TREADLE_PLUGINS", "acme_not_installed:plugin")
    with pytest.raises(PluginLoadError) as caught:
        make_plugin_manager()
    message = str(caught.value)
    assert "'acme_not_installed:plugin' named in TREADLE_PLUGINS failed to load" in message
    assert "ModuleNotFoundError" in message
    manager = make_plugin_manager(strict=False)
    infos = {info.name: info for info in manager.plugin_infos()}
    assert infos["acme_not_installed:plugin"].status == "broken"
