"""Conformance checks for job types, treadle's and any plugin's.

Call :func:`check_job_type` with the job type, a config it runs and, to prove it refuses what
cannot run before a worker claims it, a config it must refuse::

    from treadle.testing.jobs import check_job_type
    from acme_treadle.jobs import FeatureJob


    def test_feature_job_conforms(tmp_path):
        check_job_type(
            FeatureJob,
            tmp_path,
            name="features",
            config={"table": "sales", "days": 7},
            bad_config={"table": "sales", "days": -1},
        )

The check submits through a real :class:`~treadle.jobs.JobManager` on a SQLite queue in
``directory`` and runs the job in this process with the :class:`~treadle.jobs.JobContext` a
worker's child gets (a worker forks a child per attempt; the job code is the same). The rules:

``built``
    The registered object gives a job runner with ``run(context)`` (a class is built with no
    arguments, as workers build it).
``refuses bad config at submit``
    (with ``bad_config``) ``submit_job`` raises ``ConfigError`` from the job type's
    ``validate_config`` and queues nothing: a bad config never waits for a worker to fail.
``accepts its config``
    ``submit_job`` queues ``config``.
``result is JSON``
    ``run(context)`` returns a mapping the job store keeps: strings, finite numbers,
    booleans, None, lists and such mappings (``treadle.storage.check_json``).
``preload importable``
    (with ``preload``) it is a sequence of module names the fork server can import.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from treadle.testing.report import ConformanceReport, Rule, RuleRunner

if TYPE_CHECKING:
    from treadle.plugins import PluginManager

__all__ = ["RULES", "check_job_type"]

#: The rules :func:`check_job_type` enforces, in order.
RULES = (
    Rule("built", "the registered object gives a runner with run(context), built with no args"),
    Rule(
        "refuses bad config at submit",
        "submit_job raises ConfigError from validate_config and queues nothing",
    ),
    Rule("accepts its config", "submit_job queues the config it runs"),
    Rule("result is JSON", "run(context) returns JSON data the job store keeps"),
    Rule("preload importable", "preload names modules the fork server can import"),
)


def check_job_type(
    job_type: Any,
    directory: Path,
    *,
    name: str = "conformance",
    config: Mapping[str, Any] | None = None,
    bad_config: Mapping[str, Any] | None = None,
    run: bool = True,
    plugin_manager: PluginManager | None = None,
) -> ConformanceReport:
    """Run the rules above on ``job_type`` (as registered: a class or an instance).

    :param directory: where the queue (``jobs.db``) and the attempt's folder go.
    :param name: the job type's registered name: looked up in ``plugin_manager`` when it is
        registered there as ``job_type``; otherwise registered at runtime under it in a new
        manager with the installed plugins (the SQLite queue among them).
    :param config: a config the job type runs (default ``{}``).
    :param bad_config: a config ``validate_config`` must refuse; None skips that rule.
    :param run: whether to run the job (a training job trains; pass False to check only
        submission).
    :returns: the report; ``details["result"]`` is what ``run`` returned.
    :raises ConformanceError: a rule is broken; the message names it.
    """
    from treadle.errors import ConfigError, TreadleError
    from treadle.jobs import JobContext, JobManager
    from treadle.plugins import make_plugin_manager
    from treadle.storage import check_json

    subject = f"{name} ({getattr(job_type, '__qualname__', type(job_type).__qualname__)})"
    rules = RuleRunner("job_types", subject, RULES)
    config = dict(config or {})
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    manager = plugin_manager
    if (
        manager is None
        or name not in manager.registry("job_types")
        or (manager.registry("job_types").get(name) is not job_type)
    ):
        manager = make_plugin_manager()
        manager.registry("job_types").register(name, job_type, override=True)
    try:
        runner = manager.registry("job_types").create(name)
    except Exception as err:
        raise rules.error(
            "built", f"building it raised {type(err).__name__}: {err} (workers build it so)"
        ) from err
    if not callable(getattr(runner, "run", None)):
        rules.fail("built", f"{runner!r} has no run(context)")
    rules.passes("built")

    with JobManager(directory / "jobs.db", plugin_manager=manager) as jobs:
        if bad_config is None:
            rules.skip("refuses bad config at submit", "no bad_config given")
        else:
            if not callable(getattr(runner, "validate_config", None)):
                rules.fail(
                    "refuses bad config at submit",
                    "it has no validate_config(config), so a bad config is found only when a "
                    "worker runs the job; raise ConfigError there naming the field",
                )
            try:
                jobs.submit_job(name, dict(bad_config))
            except ConfigError:
                pass
            except Exception as err:
                raise rules.error(
                    "refuses bad config at submit",
                    f"submit_job({dict(bad_config)!r}) raised {type(err).__name__}: {err}; "
                    f"raise treadle.errors.ConfigError naming the field",
                ) from err
            else:
                rules.fail(
                    "refuses bad config at submit",
                    f"submit_job queued {dict(bad_config)!r}; validate_config must refuse it",
                )
            if jobs.list_jobs():
                rules.fail("refuses bad config at submit", "a refused config was queued")
            rules.passes("refuses bad config at submit")
        try:
            job_id = jobs.submit_job(name, config)
        except TreadleError as err:
            raise rules.error(
                "accepts its config",
                f"submit_job({config!r}) raised {type(err).__name__}: {err}",
            ) from err
        job = jobs.get_job(job_id)
        rules.passes("accepts its config")

    if not run:
        rules.skip("result is JSON", "run=False")
    else:
        output_dir = directory / f"job-{job_id}-attempt-1"
        output_dir.mkdir(exist_ok=True)
        context = JobContext(
            job_id=job_id,
            job_type=name,
            attempt=1,
            worker_id="conformance",
            config=job.config,
            output_dir=output_dir,
            store_location=str(directory / "jobs.db"),
            claimed_at=time.time(),
            plugin_manager=manager,
        )
        try:
            result = runner.run(context)
        except Exception as err:
            raise rules.error(
                "result is JSON",
                f"run(context) with {config!r} raised {type(err).__name__}: {err}",
            ) from err
        try:
            rules.details["result"] = check_json(result, "job result")
        except ConfigError as err:
            raise rules.error("result is JSON", str(err)) from err
        rules.passes("result is JSON")

    preload = getattr(runner, "preload", None)
    if preload is None:
        rules.skip("preload importable", "no preload")
    else:
        if isinstance(preload, str) or not isinstance(preload, Sequence):
            rules.fail("preload importable", f"preload is {preload!r}, not a tuple of modules")
        for module in preload:
            found = importlib.util.find_spec(module) if isinstance(module, str) else None
            if found is None:
                rules.fail("preload importable", f"preload names {module!r}, which is no module")
        rules.passes("preload importable")
    return rules.report()
