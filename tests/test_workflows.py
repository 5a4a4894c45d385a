"""The API reference's five "Common Workflows" as the scripts in examples/: each keeps the
reference's code as written (checked line by line against a copy of it here), and each runs,
in its own process with its short settings, and leaves what the workflow promises."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

SCRIPTS = {
    1: EXAMPLES / "workflow_1_simple_training.py",
    2: EXAMPLES / "workflow_2_custom_loss.py",
    3: EXAMPLES / "workflow_3_model_registry.py",
    4: EXAMPLES / "workflow_4_export_bundle.py",
    5: EXAMPLES / "workflow_5_scheduled_retraining.py",
}

# The API reference's code of each workflow, copied from its "Common Workflows" section.
SPEC = {
    1: """
from utils.training.engine import Trainer
from utils.training.training_config import TrainingConfig, TrainingConfigBuilder
from utils.training.task_spec import TaskSpec

# 1. Create configuration
config = TrainingConfigBuilder.baseline().build()

# 2. Create task spec
task_spec = TaskSpec.language_modeling(name='wikitext')

# 3. Initialize trainer
trainer = Trainer(
    model=model,
    config=model_config,
    training_config=config,
    task_spec=task_spec
)

# 4. Train
results = trainer.train(train_data, val_data)

print(f"Best val loss: {results['best_val_loss']:.4f}")
""",
    2: """
from utils.training.engine import LossStrategyRegistry

# Register custom loss
registry = LossStrategyRegistry()

class CustomWeightedLoss:
    def __init__(self, class_weights):
        self.class_weights = class_weights

    def compute_loss(self, logits, labels, inputs=None):
        return F.cross_entropy(
            logits, labels,
            weight=self.class_weights,
            reduction='mean'
        )

    def validate_inputs(self, logits, labels):
        assert logits.ndim == 2
        assert labels.ndim == 1

registry.register('weighted-ce', CustomWeightedLoss(weights))

# Use in training
strategy = registry.get('weighted-ce')
""",
    3: """
from utils.training.model_registry import ModelRegistry

registry = ModelRegistry('models.db')

# After training
model_id = registry.register_model(
    name='transformer-gpt',
    version='1.0.0',
    checkpoint_path=checkpoint_path,
    task_type='language_modeling',
    metrics=results['final_metrics'],
    config_hash=hashlib.sha256(
        json.dumps(asdict(model_config)).encode()
    ).hexdigest()
)

# Promote to production
registry.promote_model(model_id, 'production')

# Load for inference
prod_model = registry.get_model(tag='production')
""",
    4: """
from utils.training.export_utilities import create_export_bundle

export_dir = create_export_bundle(
    model=model,
    config=model_config,
    task_spec=task_spec,
    training_config=config,
    formats=['onnx', 'torchscript']
)

# Deploy with Docker
import subprocess
subprocess.run(['docker', 'build', '-t', 'model:v1', export_dir])
subprocess.run(['docker', 'run', '-p', '8080:8080', 'model:v1'])
""",
    5: """
from utils.training.job_queue import JobManager, TrainingScheduler

manager = JobManager('jobs.db')
scheduler = TrainingScheduler('jobs.db')

# Schedule daily retraining
scheduler.create_schedule(
    name='daily-retrain',
    job_type='retraining',
    config={'training_config': config.to_dict()},
    schedule_expr='0 2 * * *'  # 2am daily
)

# Worker process
executor = JobExecutor(manager, worker_id='worker-1')
executor.run_worker(max_jobs=10)
""",
}

# The reference's module names and where the examples import the same names from
TREADLE_MODULES = {
    1: {"Trainer": "treadle.engine", "TrainingConfig": "treadle.config",
        "TrainingConfigBuilder": "treadle.config", "TaskSpec": "treadle.task"},
    2: {"LossStrategyRegistry": "treadle.losses"},
    3: {"ModelRegistry": "treadle.model_registry"},
    4: {"create_export_bundle": "treadle.export"},
    5: {"JobManager": "treadle.jobs", "TrainingScheduler": "treadle.jobs",
        "JobExecutor": "treadle.jobs"},
}  # fmt: skip


def _code_lines(text: str) -> list[str]:
    """Stripped lines that are code: no blank lines, comments or imports."""
    lines = (line.strip() for line in text.splitlines())
    return [
        line
        for line in lines
        if line and not line.startswith(("#", "import ", "from ")) and "mypy:" not in line
    ]


def _load(number: int) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"workflow_{number}", SCRIPTS[number])
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it runs
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


@pytest.mark.parametrize("number", sorted(SCRIPTS))
def test_the_example_keeps_the_references_code_as_written(number: int) -> None:
    """Every code line of the reference's workflow appears in the example, in order, unchanged
    (the example may put lines of its own between them)."""
    example = _code_lines(SCRIPTS[number].read_text(encoding="utf-8"))
    position = 0
    for line in _code_lines(SPEC[number]):
        try:
            position = example.index(line, position) + 1
        except ValueError:
            pytest.fail(f"{SCRIPTS[number].name} lacks the reference's line {line!r} (in order)")


@pytest.mark.parametrize("number", sorted(SCRIPTS))
def test_the_example_imports_the_references_names_from_treadle(number: int) -> None:
    source = SCRIPTS[number].read_text(encoding="utf-8")
    assert not re.search(r"^\s*(from|import) utils\b", source, re.MULTILINE)
    for name, module in TREADLE_MODULES[number].items():
        pattern = rf"^from {re.escape(module)} import [^\n]*\b{name}\b"
        assert re.search(pattern, source, re.MULTILINE), f"{name} is not imported from {module}"
        assert importlib.util.find_spec(module) is not None, f"no module {module}"


def _run(number: int, cwd: Path, *args: str) -> str:
    """Run example ``number`` with ``--small`` in ``cwd``; return its stdout."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, str(SCRIPTS[number]), "--small", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-5000:]}"
    return done.stdout


def _number(stdout: str, label: str) -> float:
    found = re.search(rf"^{re.escape(label)}: (\S+)$", stdout, re.MULTILINE)
    assert found, f"no line {label!r} in:\n{stdout}"
    return float(found.group(1))


@pytest.mark.slow
def test_workflow_1_simple_training(tmp_path: Path) -> None:
    stdout = _run(1, tmp_path)
    best = _number(stdout, "Best val loss")
    assert math.isfinite(best)
    assert best < math.log(259)  # better than a uniform guess over the byte vocabulary
    assert "of 10" in stdout  # the baseline preset's 10 epochs
    manifest = json.loads((tmp_path / "checkpoints" / "checkpoints.json").read_text())
    assert manifest  # the baseline preset's checkpoint_dir, relative to the working folder


@pytest.mark.slow
def test_workflow_2_custom_loss(tmp_path: Path) -> None:
    pytest.importorskip("sklearn", reason="the digits data set needs scikit-learn")
    stdout = _run(2, tmp_path)
    assert math.isfinite(_number(stdout, "weighted-ce of one sample"))
    assert math.isfinite(_number(stdout, "Best val loss"))
    assert 0.0 <= _number(stdout, "Validation accuracy") <= 1.0


@pytest.mark.slow
def test_workflow_3_model_registry(tmp_path: Path) -> None:
    from treadle.model_registry import ModelRegistry

    stdout = _run(3, tmp_path)
    assert "Production model writes:" in stdout
    with ModelRegistry(tmp_path / "models.db") as registry:
        entry = registry.get_model(tag="production")
    assert (entry.name, entry.version, entry.task_type) == (
        "transformer-gpt",
        "1.0.0",
        "language_modeling",
    )
    assert entry.tags == ("production",)
    expected = hashlib.sha256(json.dumps(asdict(_load(3).ModelConfig())).encode()).hexdigest()
    assert entry.config_hash == expected
    assert (tmp_path / entry.checkpoint_path).is_file()
    assert math.isfinite(entry.metrics["val_loss"])
    assert entry.model_size_mb > 0


@pytest.mark.slow
def test_workflows_1_2_3_one_after_another_in_one_folder_each_keep_their_own_run(
    tmp_path: Path,
) -> None:
    """Issue 13: the three share ``./checkpoints`` (each Trainer's checkpoint_dir); each new
    run gets its own folder, so workflow 3 registers its own checkpoint and loads it."""
    pytest.importorskip("sklearn", reason="workflow 2's digits need scikit-learn")
    for number in (1, 2):
        _run(number, tmp_path)
    stdout = _run(3, tmp_path)
    assert "Production model writes:" in stdout
    from treadle.model_registry import ModelRegistry

    with ModelRegistry(tmp_path / "models.db") as registry:
        entry = registry.get_model(tag="production")
    folders = sorted(path.name for path in tmp_path.iterdir() if path.name.startswith("checkp"))
    assert folders == ["checkpoints", "checkpoints-2", "checkpoints-3"]
    assert Path(tmp_path / entry.checkpoint_path).parent == tmp_path / "checkpoints-3"
    for folder in folders:
        run = json.loads((tmp_path / folder / "run.json").read_text())
        assert run["status"] == "completed"


@pytest.mark.slow
def test_workflow_4_export_bundle(tmp_path: Path) -> None:
    stdout = _run(4, tmp_path)
    (bundle,) = (tmp_path / "exports").iterdir()
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert sorted(manifest["artifacts"]) == ["onnx", "torchscript"]
    assert (bundle / "Dockerfile").is_file()
    assert "verified: 2 artifacts, 0 failed" in stdout
    assert f"Bundle: exports/{bundle.name} (complete)" in stdout


@pytest.mark.slow
def test_workflow_5_scheduled_retraining(tmp_path: Path) -> None:
    from treadle.jobs import JobManager, TrainingScheduler
    from treadle.model_registry import ModelRegistry

    stdout = _run(5, tmp_path)
    assert "started from the weights of model 1" in stdout
    with ModelRegistry(tmp_path / "jobs.db") as registry:
        first = registry.get_model(version="1.0.0", name="support-gpt")
        second = registry.get_model(version="1.0.1", name="support-gpt")
    assert first.parent_model_id is None
    assert second.parent_model_id == first.model_id
    scheduler = TrainingScheduler(tmp_path / "jobs.db")
    try:
        (schedule,) = scheduler.list_schedules()
    finally:
        scheduler.close()
    assert (schedule.name, schedule.job_type, schedule.schedule_expr) == (
        "daily-retrain",
        "retraining",
        "0 2 * * *",
    )
    manager = JobManager(tmp_path / "jobs.db")
    try:
        jobs = [manager.get_job(job_id) for job_id in (1, 2)]
    finally:
        manager.close()
    assert [(job.job_type, job.status, job.worker_id) for job in jobs] == [
        ("training", "completed", "worker-1"),
        ("retraining", "completed", "worker-1"),
    ]
