"""Workflow 5 of the API reference, "Scheduled Retraining", run with treadle.

The two blocks marked as the API reference's code in :func:`main` are that code as written;
only the import line differs (the reference uses ``JobExecutor`` without importing it; the
import line here names it). What the reference leaves to the reader is ``config``: made by
:func:`make_config`, a small GPT on the built-in ``pydoc_topics`` corpus whose registry and
experiment store are ``jobs.db`` too.

The schedule fires daily at 02:00 UTC. So that something happens now, the example adds two
things between the reference's blocks: a ``training`` job that registers the first version of
``support-gpt``, and the schedule triggered at once (as ``treadle schedule trigger`` does).
The worker runs both, each in a child process: the retraining starts from the first version's
weights and registers ``1.0.1`` with the first as its parent. ``run_worker(max_jobs=10)``
would then wait for more work; a watcher thread stops it once both jobs are finished (a real
worker runs until SIGTERM). Run it from a scratch folder: it writes ``jobs.db`` and ``runs/``
there::

    python examples/workflow_5_scheduled_retraining.py          # 2 epochs of 256 blocks a job
    python examples/workflow_5_scheduled_retraining.py --small  # 1 epoch of 32 blocks a job
    treadle registry lineage support-gpt:1.0.1 --location jobs.db   # then look at it

``TREADLE_EXAMPLE_SMALL=1`` in the environment does what ``--small`` does.
"""

from __future__ import annotations

import argparse
import os
import threading
from collections.abc import Sequence

from treadle.config import TrainingConfig, TrainingConfigBuilder

# The API reference's import, with treadle's module name (and JobExecutor, which it uses)
from treadle.jobs import JobExecutor, JobManager, TrainingScheduler
from treadle.model_registry import ModelRegistry


def is_small(argv_flag: bool) -> bool:
    """Whether to run the short version: ``--small`` or ``TREADLE_EXAMPLE_SMALL=1``."""
    return argv_flag or os.environ.get("TREADLE_EXAMPLE_SMALL", "") not in ("", "0")


def make_config(small: bool) -> TrainingConfig:
    """The training config the jobs train from: a small GPT on ``pydoc_topics``, registered
    as ``support-gpt`` in ``jobs.db``.

    :param small: 1 epoch of 32 training and 16 validation blocks instead of 2 of 256 and 64.
    """
    return (
        TrainingConfigBuilder.quick_prototype()
        .with_model(model_name="support-gpt", d_model=64, num_heads=4, d_ff=256, max_seq_len=64)
        .with_training(epochs=1 if small else 2, batch_size=8)
        .with_options(
            device="cpu",
            loggers=("jsonl",),
            run_name=None,  # each job names its run after its key
            registry_location="jobs.db",
            experiment_location="jobs.db",
            max_train_samples=32 if small else 256,
            max_val_samples=16 if small else 64,
        )
        .build()
    )


def stop_when_finished(executor: JobExecutor, job_ids: Sequence[int]) -> threading.Thread:
    """Start a thread that waits for ``job_ids`` to finish, then stops ``executor``."""

    def watch() -> None:
        manager = JobManager("jobs.db")  # its own connection: SQLite's stay in their thread
        try:
            for job_id in job_ids:
                manager.wait_job(job_id, poll_seconds=0.5)
        finally:
            manager.close()
            executor.stop("the example's jobs are finished")

    thread = threading.Thread(target=watch, name="stop-when-finished", daemon=True)
    thread.start()
    return thread


def main(argv: Sequence[str] | None = None) -> list[int]:
    """Run workflow 5; return the ids of the two models the jobs registered.

    :param argv: command-line arguments (default ``sys.argv[1:]``).
    :raises SystemExit: a job did not complete (its error is shown).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a few seconds' worth of data")
    args = parser.parse_args(argv)
    config = make_config(is_small(args.small))

    # fmt: off
    # -- the API reference's Workflow 5 ------------------------------------------------------

    manager = JobManager('jobs.db')
    scheduler = TrainingScheduler('jobs.db')

    # Schedule daily retraining
    scheduler.create_schedule(
        name='daily-retrain',
        job_type='retraining',
        config={'training_config': config.to_dict()},
        schedule_expr='0 2 * * *'  # 2am daily
    )

    # fmt: on
    # -- not in the reference: a first version to retrain, and the schedule fired now --------
    first = manager.submit_job("training", {"training_config": config.to_dict()}, priority=10)
    (schedule,) = scheduler.list_schedules()
    print(f"Schedule {schedule.name!r} next fires at {schedule.next_fire_at}; triggering it now")
    retrain = scheduler.trigger_schedule(schedule.schedule_id)
    # -- ...and the worker stopped once both are done, instead of waiting for more work
    # fmt: off

    # Worker process
    executor = JobExecutor(manager, worker_id='worker-1')
    watcher = stop_when_finished(executor, [first, retrain])
    executor.run_worker(max_jobs=10)

    # -- end of the API reference's code ---------------------------------------------------
    # fmt: on
    watcher.join()
    model_ids = []
    for job_id in (first, retrain):
        job = manager.get_job(job_id)
        if job.status != "completed":
            raise SystemExit(f"job {job_id} ({job.job_type}) {job.status}: {job.error_message}")
        result = job.result or {}
        model_ids.append(int(result["model_id"]))
        start = f" ({result['start']})" if "start" in result else ""
        print(
            f"Job {job_id} ({job.job_type}){start}: registered {result['model_name']} "
            f"{result['model_version']} as model {result['model_id']}, "
            f"best val loss {result['best_val_loss']:.4f}"
        )
    with ModelRegistry("jobs.db") as registry:
        lineage = registry.get_lineage(model_ids[1])
        parents = ", ".join(f"{m.name} {m.version}" for m in lineage.ancestors)
        print(f"Model {model_ids[1]} was retrained from: {parents}")
    manager.close()
    scheduler.close()
    return model_ids


if __name__ == "__main__":
    main()
