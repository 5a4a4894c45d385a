"""Hook implementations of the jobs plugin: registrations only, a few lines each."""

from __future__ import annotations

from treadle import hookimpl
from treadle.hookspecs import Register
from treadle_jobs.evaluation import EvaluationJob
from treadle_jobs.export import ExportJob
from treadle_jobs.noop import NoopJob
from treadle_jobs.retraining import RetrainingJob
from treadle_jobs.training import TrainingJob


@hookimpl
def treadle_register_job_types(register: Register) -> None:
    register("training", TrainingJob)
    register("evaluation", EvaluationJob)
    register("export", ExportJob)
    register("retraining", RetrainingJob)
    register("noop", NoopJob)
