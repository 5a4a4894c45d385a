"""Hook implementations of the jobs plugin: registrations only, a few lines each.

Job types are registered as ``"module:Class"`` references, imported when a job of the type is
submitted or run, so ``treadle --help`` and ``treadle jobs list`` do not load them.
"""

from __future__ import annotations

from treadle import hookimpl
from treadle.hookspecs import Register


@hookimpl
def treadle_register_job_types(register: Register) -> None:
    register("training", "treadle_jobs.training:TrainingJob")
    register("evaluation", "treadle_jobs.evaluation:EvaluationJob")
    register("export", "treadle_jobs.export:ExportJob")
    register("retraining", "treadle_jobs.retraining:RetrainingJob")
    register("noop", "treadle_jobs.noop:NoopJob")
