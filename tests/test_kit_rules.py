"""Every rule of the conformance kit fails on a plugin that breaks it, and holds for one that
keeps the contract: one broken fixture per rule (tests/kit_fixtures.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from treadle.registry import KINDS
from treadle.testing import rules_of
from treadle.testing.exporters import EXPORTER_RULES, LOADER_RULES
from treadle.testing.report import ConformanceError

from . import kit_fixtures
from .kit_fixtures import BROKEN

CASES = sorted(BROKEN)


def test_every_rule_of_every_kind_has_a_broken_fixture() -> None:
    expected = {(kind, rule.name) for kind in KINDS for rule in rules_of(kind)}
    assert set(BROKEN) == expected


@pytest.mark.parametrize(("kind", "rule"), CASES, ids=[f"{k}:{r}" for k, r in CASES])
def test_the_rule_fails_on_a_plugin_that_breaks_it(
    kind: str, rule: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConformanceError) as caught:
        BROKEN[(kind, rule)](tmp_path, monkeypatch)
    assert (caught.value.kind, caught.value.rule) == (kind, rule), str(caught.value)
    assert f"fails '{rule}'" in str(caught.value)


# -- plugins that keep the contract pass every rule ------------------------------------------


def test_a_good_plugin_of_each_kind_passes_every_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import treadle_losses.plugin
    from treadle.config import TrainingConfigBuilder
    from treadle.testing import isolated_plugin_manager
    from treadle.testing.collators import check_collator
    from treadle.testing.commands import check_command
    from treadle.testing.datasets import check_dataset
    from treadle.testing.jobs import check_job_type
    from treadle.testing.loggers import check_logger
    from treadle.testing.losses import check_loss_strategy
    from treadle.testing.metrics import check_metric
    from treadle.testing.models import check_model_factory

    reports = [
        check_loss_strategy(kit_fixtures.GoodLoss, "classification"),
        check_collator(kit_fixtures.good_collator, list(kit_fixtures.TOKEN_SAMPLES)),
        check_metric(kit_fixtures.GoodAccuracy, "classification"),
        check_model_factory(
            kit_fixtures.good_model_factory,
            TrainingConfigBuilder.quick_prototype().build(),
            kit_fixtures.TABULAR,
            plugin_manager=isolated_plugin_manager(("losses", treadle_losses.plugin)),
        ),
        check_logger(
            kit_fixtures.GoodLogger, tmp_path / "run", read_steps=kit_fixtures.read_logged_steps
        ),
        check_job_type(
            kit_fixtures.GoodJob,
            tmp_path / "jobs",
            name="report",
            config={"days": 7},
            bad_config={"days": 0},
        ),
        check_command(kit_fixtures.GoodCommand(), name="greet", argv=["--name", "kit"]),
        check_dataset(kit_fixtures.GoodRows, name="rows"),
    ]
    for report in reports:
        assert report.skipped == (), report
        assert set(report.passed) == {rule.name for rule in rules_of(report.kind)}, report


def test_a_good_export_format_passes_every_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exporter = kit_fixtures.example_exporter(monkeypatch)()
    report = kit_fixtures._export(exporter, tmp_path / "a")
    loader = kit_fixtures._export(exporter, tmp_path / "b", loader=True)
    assert report.passed == tuple(rule.name for rule in EXPORTER_RULES)
    assert report.details["verified"] is True
    assert set(report.details["max_abs_error"]) == {"features (1, 4)", "features (3, 4)"}
    assert set(loader.passed) >= {rule.name for rule in LOADER_RULES}


def test_a_format_that_cannot_run_its_artifact_here_is_recorded_as_not_verified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """export.md's weights-only pattern: load raises NotImplementedError, the bundle records
    the artifact as not verified, and so does the kit, instead of letting it escape."""
    base = kit_fixtures.example_exporter(monkeypatch)

    class WeightsOnly(base):  # type: ignore[misc,valid-type]
        loader = None

        def load(self, path: Path) -> object:
            msg = "weights only: rebuild the model with acme_treadle.build"
            raise NotImplementedError(msg)

    report = kit_fixtures._export(WeightsOnly(), tmp_path)
    assert report.details["verified"] is False
    assert report.passed == ("members", "writes the artifact")
    assert [rule for rule, _ in report.skipped] == ["runs in process", "outputs match"]
    assert "weights only" in report.skipped[0][1]
    loader = kit_fixtures._export(WeightsOnly(), tmp_path / "loader", loader=True)
    assert [rule for rule, _ in loader.skipped] == [rule.name for rule in LOADER_RULES]
