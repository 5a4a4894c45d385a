"""Store conformance: what every storage backend must do for the model registry and the
experiment store, checked through :class:`~treadle.model_registry.ModelRegistry` and
:class:`~treadle.experiments.ExperimentDB` on a location the backend serves.

A backend plugin runs every check against itself in its own test suite::

    import pytest
    from treadle.testing.stores import STORE_CHECKS

    @pytest.mark.parametrize("check", STORE_CHECKS, ids=lambda check: check.__name__)
    def test_my_backend_conforms(check, my_database_url, plugin_manager_with_my_plugin):
        check(my_database_url, plugin_manager_with_my_plugin)

Each check takes ``(location, plugin_manager)``, uses names of its own (a random suffix), so
one location may serve every check and may hold other data, and raises ``AssertionError``
saying what the backend got wrong. :func:`check_storage_backend` runs them all and returns a
:class:`~treadle.testing.report.ConformanceReport` (or raises
:class:`~treadle.testing.report.ConformanceError` naming the rule), as every kit does.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from treadle.errors import UnknownNameError
from treadle.experiments import ExperimentDB
from treadle.model_registry import ModelRegistry
from treadle.owner import current_owner, local_machine
from treadle.storage import (
    DuplicateModelError,
    ExperimentStore,
    MetricValues,
    ModelStore,
    RegistryError,
)
from treadle.testing.report import ConformanceReport, Rule, RuleRunner

if TYPE_CHECKING:
    from treadle.plugins import PluginManager

__all__ = [
    "EXPERIMENT_STORE_CHECKS",
    "MODEL_STORE_CHECKS",
    "RULES",
    "STORE_CHECKS",
    "check_storage_backend",
    "rule_of",
    "run_store_checks",
]

StoreCheck = Callable[[str, "PluginManager | None"], None]

#: Text a store must keep verbatim: quotes, SQL, slashes, ``../``, non-ASCII.
TRICKY_TEXT = (
    'it\'s "quoted"',
    "x'); DROP TABLE models; --",
    "val/loss",
    "../../etc/passwd",
    "naïve ✓ 模型",
    "%_*?",
)


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _raises(error: type[BaseException], call: Callable[[], object], what: str) -> BaseException:
    try:
        call()
    except error as caught:
        return caught
    except Exception as other:
        msg = f"{what}: expected {error.__name__}, got {type(other).__name__}: {other}"
        raise AssertionError(msg) from other
    msg = f"{what}: expected {error.__name__}, nothing was raised"
    raise AssertionError(msg)


def _register(registry: ModelRegistry, name: str, version: str, **extra: Any) -> int:
    options: dict[str, Any] = {
        "checkpoint_path": f"checkpoints/{name}-{version}.pt",
        "task_type": "classification",
        "metrics": {"val_loss": 0.5},
        "config_hash": "0" * 64,
        "model_size_mb": 1.5,
        "memory_req_gb": 0.25,
    }
    options.update(extra)
    return registry.register_model(name=name, version=version, **options)


# -- model registry ----------------------------------------------------------------------


def check_model_round_trip(location: str, plugin_manager: PluginManager | None = None) -> None:
    """Every field registered comes back as given, NaN and infinities included."""
    with ModelRegistry(location, plugin_manager=plugin_manager) as registry:
        assert isinstance(registry.store, ModelStore), "the models store lacks protocol members"
        name = _unique("round-trip")
        parent = _register(registry, name, "0.9.0")
        metrics = {"val_loss": 0.38, "perplexity": 1.46, "nan_metric": math.nan, "big": math.inf}
        model_id = _register(
            registry,
            name,
            "1.0.0",
            checkpoint_path="checkpoints/epoch_10.pt",
            task_type="language_modeling",
            metrics=metrics,
            config_hash="abc123",
            training_run_id=42,
            parent_model_id=parent,
            export_formats=["onnx", "torchscript"],
            status="experimental",
            tags=["staging"],
            job_key=_unique("job"),
            model_size_mb=12.5,
            memory_req_gb=0.75,
        )
        entry = registry.get_model(model_id=model_id)
        expected = {
            "model_id": model_id,
            "name": name,
            "version": "1.0.0",
            "checkpoint_path": "checkpoints/epoch_10.pt",
            "task_type": "language_modeling",
            "config_hash": "abc123",
            "training_run_id": 42,
            "parent_model_id": parent,
            "export_formats": ("onnx", "torchscript"),
            "model_size_mb": 12.5,
            "memory_req_gb": 0.75,
            "status": "experimental",
            "tags": ("staging",),
        }
        for field, value in expected.items():
            got = getattr(entry, field)
            assert got == value, f"{field}: stored {value!r}, read back {got!r}"
        assert set(entry.metrics) == set(metrics), f"metric names changed: {entry.metrics}"
        assert entry.metrics["val_loss"] == 0.38
        assert math.isnan(entry.metrics["nan_metric"]), "a NaN metric did not come back as NaN"
        assert entry.metrics["big"] == math.inf, "an infinite metric did not come back"
        assert entry.created_at, "created_at is empty"
        assert not entry.has_data_profile
        ids = {e.model_id for e in registry.store.find_models(name=name)}
        assert ids == {parent, model_id}, f"find_models(name=...) gave {ids}"


def check_duplicate_version_is_refused(
    location: str, plugin_manager: PluginManager | None = None
) -> None:
    """R1: registering ``(name, version)`` twice fails clearly; the first entry is intact."""
    with ModelRegistry(location, plugin_manager=plugin_manager) as registry:
        name = _unique("dup")
        first = _register(registry, name, "1.0.0", metrics={"val_loss": 0.1})
        before = registry.get_model(model_id=first)
        error = _raises(
            DuplicateModelError,
            lambda: _register(registry, name, "1.0.0", metrics={"val_loss": 9.9}),
            "second registration of one version",
        )
        assert name in str(error), f"the error does not name the model: {error}"
        assert "1.0.0" in str(error), f"the error does not name the version: {error}"
        assert registry.get_model(model_id=first) == before, "the first entry changed"
        assert len(registry.store.find_models(name=name)) == 1, "a second row was written"
        other = _register(registry, _unique("dup-other"), "1.0.0")
        assert other != first, "one version of two names must both register"


def check_job_key_registers_once(
    location: str, plugin_manager: PluginManager | None = None
) -> None:
    """A retried job (same ``job_key``) gets the first registration's id, nothing new."""
    with ModelRegistry(location, plugin_manager=plugin_manager) as registry:
        name, key = _unique("job"), _unique("job-key")
        first = _register(registry, name, "1.0.0", job_key=key)
        again = _register(registry, name, "1.0.1", job_key=key)
        assert again == first, f"the retry registered model {again}, not {first}"
        assert len(registry.store.find_models(name=name)) == 1
        assert registry.get_model(model_id=first).job_key == key


def check_tags_move_atomically(location: str, plugin_manager: PluginManager | None = None) -> None:
    """A tag names one version of a model name; promoting moves it; names are separate."""
    with ModelRegistry(location, plugin_manager=plugin_manager) as registry:
        name, other_name = _unique("tag"), _unique("tag-other")
        tag = _unique("production")
        v1 = _register(registry, name, "1.0.0")
        v2 = _register(registry, name, "2.0.0")
        other = _register(registry, other_name, "1.0.0")
        registry.promote_model(v1, tag)
        assert registry.get_model(tag=tag).model_id == v1
        registry.promote_model(v2, tag)
        assert registry.get_model(tag=tag).model_id == v2, "the tag did not move"
        assert tag not in registry.get_model(model_id=v1).tags, "the old holder kept the tag"
        registry.promote_model(v2, tag)  # promoting the holder again changes nothing
        assert registry.get_model(model_id=v2).tags == (tag,)
        registry.promote_model(other, tag)
        assert registry.get_model(tag=tag, name=name).model_id == v2, "names share a tag slot"
        assert registry.get_model(tag=tag, name=other_name).model_id == other
        error = _raises(RegistryError, lambda: registry.get_model(tag=tag), "a tag two names hold")
        assert "name" in str(error), f"the error should ask for the name: {error}"
        assert registry.remove_tag(name, tag) == v2
        assert registry.get_model(tag=tag).model_id == other
        _raises(UnknownNameError, lambda: registry.get_model(tag=_unique("none")), "unknown tag")


def check_retire(location: str, plugin_manager: PluginManager | None = None) -> None:
    """Retiring keeps the row, removes its tags; a retired model cannot be promoted."""
    with ModelRegistry(location, plugin_manager=plugin_manager) as registry:
        name, tag = _unique("retire"), _unique("prod")
        old = _register(registry, name, "1.0.0")
        new = _register(registry, name, "1.1.0")
        registry.promote_model(new, tag)
        registry.delete_model(new)
        entry = registry.get_model(model_id=new)
        assert entry.status == "retired", f"status after delete_model: {entry.status}"
        assert entry.tags == (), "a retired model kept its tags"
        _raises(RegistryError, lambda: registry.promote_model(new, tag), "promoting a retired")
        _raises(UnknownNameError, lambda: registry.get_model(tag=tag), "tag of retired model")
        assert registry.get_model(name=name).model_id == old, "by name: newest non-retired"
        registry.delete_model(old)
        _raises(UnknownNameError, lambda: registry.get_model(name=name), "all retired")
        _raises(UnknownNameError, lambda: registry.delete_model(10**12), "retire unknown id")


def check_lineage(location: str, plugin_manager: PluginManager | None = None) -> None:
    """Ancestors nearest first; descendants direct and indirect; an unknown parent refused."""
    with ModelRegistry(location, plugin_manager=plugin_manager) as registry:
        name = _unique("family")
        root = _register(registry, name, "1.0.0")
        child = _register(registry, name, "1.1.0", parent_model_id=root)
        sibling = _register(registry, name, "1.2.0", parent_model_id=root)
        grandchild = _register(registry, name, "2.0.0", parent_model_id=child)
        lineage = registry.get_lineage(grandchild)
        assert [e.model_id for e in lineage.ancestors] == [child, root], lineage.ancestors
        assert lineage.descendants == ()
        down = registry.get_lineage(root)
        assert [e.model_id for e in down.descendants] == [child, sibling, grandchild]
        assert down.ancestors == ()
        before = len(registry.store.find_models(name=name))
        _raises(
            UnknownNameError,
            lambda: _register(registry, name, "9.0.0", parent_model_id=10**12),
            "registering with an unknown parent",
        )
        assert len(registry.store.find_models(name=name)) == before, "a row was written"


def check_unknown_references(location: str, plugin_manager: PluginManager | None = None) -> None:
    """Unknown id, version or tag: ``UnknownNameError`` (a ``KeyError``) naming it."""
    with ModelRegistry(location, plugin_manager=plugin_manager) as registry:
        error = _raises(UnknownNameError, lambda: registry.get_model(model_id=10**12), "id")
        assert str(10**12) in str(error), f"the error does not name the id: {error}"
        name = _unique("refs")
        _register(registry, name, "1.0.0")
        _raises(UnknownNameError, lambda: registry.get_model(version="7.7.7", name=name), "ver")
        _raises(UnknownNameError, lambda: registry.promote_model(10**12, "x"), "promote")
        _raises(UnknownNameError, lambda: registry.compare_models([10**12]), "compare")
        _raises(UnknownNameError, lambda: registry.get_lineage(10**12), "lineage")


def check_text_kept_verbatim(location: str, plugin_manager: PluginManager | None = None) -> None:
    """X2: names, tags and metric names with quotes, SQL and slashes are plain text."""
    with ModelRegistry(location, plugin_manager=plugin_manager) as registry:
        suffix = _unique("")
        for index, text in enumerate(TRICKY_TEXT):
            name = text + suffix
            metrics = {text: float(index), f"{text}/2": 1.0}
            model_id = _register(registry, name, text, metrics=metrics)
            registry.promote_model(model_id, text)
            entry = registry.get_model(tag=text, name=name)
            assert (entry.name, entry.version) == (name, text), f"changed: {entry}"
            assert entry.tags == (text,), f"tag changed: {entry.tags}"
            assert entry.metrics == metrics, f"metrics changed: {entry.metrics}"
            assert registry.get_model(version=text, name=name).model_id == model_id


def check_model_frames(location: str, plugin_manager: PluginManager | None = None) -> None:
    """list_models and compare_models give DataFrames with metadata and metric columns."""
    with ModelRegistry(location, plugin_manager=plugin_manager) as registry:
        name = _unique("frame")
        a = _register(registry, name, "1.0.0", metrics={"val_loss": 0.5, "accuracy": 0.8})
        b = _register(registry, name, "1.1.0", metrics={"val_loss": 0.4, "version": 3.0})
        frame = registry.list_models(name=name)
        assert list(frame["model_id"]) == [b, a], "list_models is not newest first"
        for column in ("name", "version", "status", "tags", "created_at", "val_loss"):
            assert column in frame.columns, f"list_models lacks {column!r}"
        assert list(frame["version"]) == ["1.1.0", "1.0.0"], "a metric replaced a column"
        assert frame["metric:version"].iloc[0] == 3.0
        assert len(registry.list_models(limit=1)) == 1
        comparison = registry.compare_models([a, b])
        assert list(comparison["model_id"]) == [a, b], "compare_models lost the given order"
        assert list(comparison["val_loss"]) == [0.5, 0.4]
        assert math.isnan(comparison["accuracy"].iloc[1]), "a missing metric must be NaN"


def check_export_formats(location: str, plugin_manager: PluginManager | None = None) -> None:
    """Recorded export formats keep their order and appear once."""
    with ModelRegistry(location, plugin_manager=plugin_manager) as registry:
        model_id = _register(registry, _unique("export"), "1.0.0", export_formats=["onnx"])
        registry.add_export_formats(model_id, ["torchscript", "onnx", "pytorch"])
        formats = registry.get_model(model_id=model_id).export_formats
        assert formats == ("onnx", "torchscript", "pytorch"), formats


def check_data_profile(location: str, plugin_manager: PluginManager | None = None) -> None:
    """A registered data profile comes back equal, with ``has_data_profile`` set."""
    import numpy as np

    from treadle.engine.drift import build_profile

    profile = build_profile({"length": np.arange(50, dtype=float)}, bins=5)
    with ModelRegistry(location, plugin_manager=plugin_manager) as registry:
        model_id = _register(registry, _unique("profile"), "1.0.0", data_profile=profile)
        assert registry.get_model(model_id=model_id).has_data_profile
        assert registry.get_data_profile(model_id) == profile, "the profile changed"


# -- experiments -------------------------------------------------------------------------


def check_run_round_trip(location: str, plugin_manager: PluginManager | None = None) -> None:
    """A run's name, config, notes, status, error and summary come back as written."""
    with ExperimentDB(location, plugin_manager=plugin_manager) as db:
        assert isinstance(db.store, ExperimentStore), "the store lacks protocol members"
        name = _unique("run")
        config = {"learning_rate": 1e-4, "nested": {"layers": [1, 2]}, "flag": True, "x": None}
        run_id = db.log_run(name, config, notes=TRICKY_TEXT[1], run_dir="/runs/a")
        run = db.get_run(run_id)
        assert (run.run_name, run.config, run.notes) == (name, config, TRICKY_TEXT[1]), run
        assert (run.status, run.attempt, run.run_dir) == ("running", 1, "/runs/a"), run
        assert run.ended_at is None
        db.update_run(run_id, summary={"best_epoch": 3})
        db.update_run(run_id, status="failed", error="boom", summary={"stop_reason": "x"})
        run = db.get_run(run_id)
        assert (run.status, run.error) == ("failed", "boom"), run
        assert run.summary == {"best_epoch": 3, "stop_reason": "x"}, "summary not merged"
        assert run.ended_at, "a failed run has no ended_at"
        assert [r.run_id for r in db.find_runs(name=name)] == [run_id]
        assert [r.run_id for r in db.find_runs(run_dir="/runs/a", name=name)] == [run_id]
        _raises(UnknownNameError, lambda: db.get_run(10**12), "unknown run")
        _raises(UnknownNameError, lambda: db.log_metric(10**12, "x", 1.0), "metric of unknown")


def check_metrics_round_trip(location: str, plugin_manager: PluginManager | None = None) -> None:
    """Metric rows keep name, value (NaN too), epoch and step, ordered by step."""
    with ExperimentDB(location, plugin_manager=plugin_manager) as db:
        run_id = db.log_run(_unique("metrics"), {})
        db.log_metric(run_id, "val/loss", 0.38, epoch=5, step=50)
        db.log_metric(run_id, "train/loss", 0.42, epoch=5, step=40)
        db.log_metric(run_id, "val/loss", math.nan, epoch=6, step=60)
        tricky = db.log_run(_unique("tricky"), {})
        for text in TRICKY_TEXT:
            db.log_metric(tricky, text, 1.0)
        frame = db.get_metrics(run_id, names=["val/loss", "train/loss"])
        assert list(frame["name"]) == ["train/loss", "val/loss", "val/loss"], "not step order"
        assert list(frame["step"]) == [40, 50, 60]
        assert list(frame["epoch"]) == [5, 5, 6]
        assert frame["value"].iloc[1] == 0.38
        assert math.isnan(frame["value"].iloc[2]), "NaN did not come back as NaN"
        names = set(db.get_metrics(tricky)["name"])
        assert set(TRICKY_TEXT) <= names, f"names changed: {names}"
        assert not db.get_metrics(run_id)["superseded"].any()


def check_metrics_batch_is_atomic(
    location: str, plugin_manager: PluginManager | None = None
) -> None:
    """D2 at the protocol: a batch whose rows fail midway leaves none of its rows."""
    with ExperimentDB(location, plugin_manager=plugin_manager) as db:
        run_id = db.log_run(_unique("atomic"), {})

        def rows() -> Iterator[MetricValues]:
            for step in range(100):
                yield ("loss", 1.0, 0, step, 0.0)
            msg = "the writer died midway"
            raise RuntimeError(msg)

        _raises(RuntimeError, lambda: db.store.add_metrics(run_id, None, rows()), "batch")
        assert db.get_metrics(run_id).empty, "half a batch was written"
        assert db.store.add_metrics(run_id, None, [("loss", 1.0, 0, 0, 0.0)]) == 1


def check_resume_supersedes(location: str, plugin_manager: PluginManager | None = None) -> None:
    """A resumed attempt supersedes rows logged after its step; live rows appear once."""
    with ExperimentDB(location, plugin_manager=plugin_manager) as db:
        run_id = db.log_run(_unique("resume"), {})
        for step in range(1, 11):
            db.log_metric(run_id, "loss", 10.0 - step, epoch=(step - 1) // 5, step=step)
        db.update_run(run_id, status="failed", error="killed")
        attempt = db.resume_run(run_id, 6)
        assert attempt == 2, f"second attempt numbered {attempt}"
        run = db.get_run(run_id)
        assert (run.status, run.attempt, run.error) == ("running", 2, None), run
        for step in range(7, 11):
            db.log_metric(run_id, "loss", 100.0 + step, epoch=1, step=step)
        live = db.get_metrics(run_id)
        assert list(live["step"]) == list(range(1, 11)), f"live steps {list(live['step'])}"
        assert list(live["attempt"]) == [1] * 6 + [2] * 4
        everything = db.get_metrics(run_id, include_superseded=True)
        assert len(everything) == 14, "rows of the dead attempt were dropped"
        dead = everything[everything["superseded"]]
        assert sorted(dead["step"]) == [7, 8, 9, 10], f"superseded steps {list(dead['step'])}"
        assert set(dead["attempt"]) == {1}
        frame = db.compare_runs([run_id], ["loss"], reduce="min")
        assert frame["loss"].iloc[0] == 4.0, "min over live rows counts superseded rows"


def check_best_run(location: str, plugin_manager: PluginManager | None = None) -> None:
    """get_best_run: min or max over live values; NaN is never best."""
    with ExperimentDB(location, plugin_manager=plugin_manager) as db:
        metric = _unique("score")
        good = db.log_run(_unique("good"), {})
        nan = db.log_run(_unique("nan"), {})
        high = db.log_run(_unique("high"), {})
        db.log_metric(good, metric, 0.2, epoch=0)
        db.log_metric(good, metric, 0.1, epoch=1)
        db.log_metric(nan, metric, math.nan, epoch=0)
        db.log_metric(high, metric, 0.9, epoch=0)
        best = db.get_best_run(metric, mode="min")
        assert (best["run_id"], best["best_value"], best["epoch"]) == (good, 0.1, 1), best
        assert db.get_best_run(metric, mode="max")["run_id"] == high
        only_nan = _unique("only-nan")
        db.log_metric(nan, only_nan, math.nan)
        _raises(UnknownNameError, lambda: db.get_best_run(only_nan), "NaN-only metric")


def check_run_frames(location: str, plugin_manager: PluginManager | None = None) -> None:
    """list_runs, compare_runs and get_history give DataFrames."""
    with ExperimentDB(location, plugin_manager=plugin_manager) as db:
        name = _unique("frames")
        first = db.log_run(name, {})
        second = db.log_run(name, {}, status="completed")
        for epoch, (train, val) in enumerate([(1.0, 1.1), (0.5, 0.7)]):
            db.log_metrics(first, {"train_loss": train, "val_loss": val}, epoch=epoch, step=epoch)
        db.log_metric(second, "val_loss", 0.6, epoch=0)
        runs = db.list_runs(name=name)
        assert list(runs["run_id"]) == [second, first], "list_runs is not newest first"
        assert list(runs["status"]) == ["completed", "running"]
        comparison = db.compare_runs([first, second], ["val_loss", "train_loss"])
        assert list(comparison["val_loss"]) == [0.7, 0.6]
        assert comparison["train_loss"].iloc[0] == 0.5
        assert math.isnan(comparison["train_loss"].iloc[1]), "a missing metric must be NaN"
        history = db.get_history(first)
        assert list(history["epoch"]) == [0, 1]
        assert list(history["val_loss"]) == [1.1, 0.7]


def check_stores_share_a_location(
    location: str, plugin_manager: PluginManager | None = None
) -> None:
    """The model registry and the experiment store open side by side at one location."""
    with (
        ExperimentDB(location, plugin_manager=plugin_manager) as db,
        ModelRegistry(location, plugin_manager=plugin_manager) as registry,
    ):
        run_id = db.log_run(_unique("shared"), {})
        model_id = _register(registry, _unique("shared"), "1.0.0", training_run_id=run_id)
        assert registry.get_model(model_id=model_id).training_run_id == run_id
        assert db.get_run(run_id).run_id == run_id


def check_runs_that_died(location: str, plugin_manager: PluginManager | None = None) -> None:
    """A run records its owner and heartbeat. A ``running`` run whose owner's process is
    gone from this machine (a pid reused by another process counts as gone), or whose lease
    ran out, reads as ``died``; ``running`` finds only live ones; a heartbeat renews a lease
    and does nothing for an ended run or an earlier attempt."""
    with ExperimentDB(location, plugin_manager=plugin_manager) as db:
        name, me = _unique("owned"), current_owner()
        live = db.log_run(name, {}, owner=me, lease_seconds=600)
        # this process's pid, but another start time: the pid was reused, the owner is gone
        reused = db.log_run(name, {}, owner=attrs.evolve(me, token=f"{local_machine()}:0"))
        # on another machine: only its lease tells
        elsewhere = attrs.evolve(me, token="another-machine/1:5")
        expired = db.log_run(name, {}, owner=elsewhere, lease_seconds=0.05)
        unowned = db.log_run(name, {})
        time.sleep(0.3)
        statuses = {run.run_id: run.status for run in db.find_runs(name=name)}
        expected = {live: "running", reused: "died", expired: "died", unowned: "running"}
        assert statuses == expected, f"statuses {statuses}, expected {expected}"
        assert db.get_run(reused).status == "died"
        ids = [run.run_id for run in db.find_runs(name=name, status="died")]
        assert ids == [expired, reused], f"status='died' found {ids}"
        assert [r.run_id for r in db.find_runs(name=name, status="died", limit=1)] == [expired]
        ids = [run.run_id for run in db.find_runs(name=name, status="running")]
        assert ids == [unowned, live], f"status='running' found {ids}"
        run = db.get_run(live)
        assert (run.owner_pid, run.owner_host) == (me.pid, me.host), run
        assert run.owner_started_at == me.started_at, run
        assert run.heartbeat_at, f"no heartbeat recorded: {run}"
        assert db.heartbeat(expired, 1, 600), "a heartbeat of a running attempt"
        assert db.get_run(expired).status == "running", "a renewed lease is alive again"
        assert db.resume_run(reused, 0, owner=me) == 2
        assert db.get_run(reused).status == "running"
        assert not db.heartbeat(reused, 1, 600), "an earlier attempt's heartbeat counted"
        db.update_run(live, status="interrupted")
        run = db.get_run(live)
        assert run.status == "interrupted", run
        assert run.ended_at, f"an interrupted run has no ended_at: {run}"
        assert not db.heartbeat(live, 1, 600), "a heartbeat revived an ended run"
        db.update_run(unowned, status="died")
        assert db.get_run(unowned).status == "died", "a stored 'died' is kept"


MODEL_STORE_CHECKS: list[StoreCheck] = [
    check_model_round_trip,
    check_duplicate_version_is_refused,
    check_job_key_registers_once,
    check_tags_move_atomically,
    check_retire,
    check_lineage,
    check_unknown_references,
    check_text_kept_verbatim,
    check_model_frames,
    check_export_formats,
    check_data_profile,
]
EXPERIMENT_STORE_CHECKS: list[StoreCheck] = [
    check_run_round_trip,
    check_metrics_round_trip,
    check_metrics_batch_is_atomic,
    check_resume_supersedes,
    check_best_run,
    check_run_frames,
    check_runs_that_died,
]
STORE_CHECKS: list[StoreCheck] = [
    *MODEL_STORE_CHECKS,
    *EXPERIMENT_STORE_CHECKS,
    check_stores_share_a_location,
]


def rule_of(check: StoreCheck) -> Rule:
    """The rule a store check enforces: ``check_tags_move_atomically`` is ``tags move
    atomically``, summarized by its docstring's first sentence."""
    name = check.__name__.removeprefix("check_").replace("_", " ")
    summary = (check.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
    return Rule(name, " ".join(summary.split()))


#: The rules :func:`check_storage_backend` enforces, one per check of :data:`STORE_CHECKS`.
RULES = tuple(rule_of(check) for check in STORE_CHECKS)


def check_storage_backend(
    location: str,
    plugin_manager: PluginManager | None = None,
    checks: Sequence[StoreCheck] = STORE_CHECKS,
) -> ConformanceReport:
    """Run every check of ``checks`` (default :data:`STORE_CHECKS`) on ``location`` (a URL of
    the backend's scheme), stopping at the first failure: a broken assertion, or an error
    the store raised where the contract expects none.

    :returns: the report; ``details["location"]`` is the location checked.
    :raises ConformanceError: a rule is broken; the message names it and the location.
    """
    rules = RuleRunner("storage", location, RULES)
    for check in checks:
        rule = rule_of(check).name
        try:
            check(location, plugin_manager)
        except AssertionError as error:
            raise rules.error(rule, str(error) or repr(error)) from error
        except Exception as error:  # a store that raises where the contract expects no error
            raise rules.error(rule, f"{type(error).__name__}: {error}") from error
        rules.passes(rule)
    rules.details["location"] = location
    return rules.report()


def run_store_checks(
    location: str, plugin_manager: PluginManager | None = None
) -> ConformanceReport:
    """:func:`check_storage_backend` under its first name."""
    return check_storage_backend(location, plugin_manager)
