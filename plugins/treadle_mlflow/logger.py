"""The ``mlflow`` logger: one MLflow run per treadle run, its params, metrics and artifacts.

The run's config becomes the MLflow run's params (nested keys joined with ``.``) and a
``treadle/config.json`` artifact; every figure the run logs becomes a metric at its optimizer
step. At the end of the run, on request: the best checkpoint as an artifact, an export bundle
of the final model as an artifact, and a new version of a registered model in MLflow's model
registry.

One treadle run is one MLflow run. Its id is kept in ``run_dir/mlflow-run.json`` and in each
checkpoint (``plugin_state["mlflow"]``), so a resumed treadle run continues the same MLflow
run: status back to ``RUNNING``, tag ``treadle.attempt`` counting the attempts and
``treadle.resumed_at_step`` where the latest one began, its config as
``treadle/config-attempt-<n>.json`` (MLflow's params cannot change). Metrics the interrupted
attempt logged after its checkpoint stay in MLflow's history (it has no call that deletes a
value); the resumed attempt logs those steps again, later in time.

The step never waits on the tracking store: ``log_metrics`` appends a tuple, a writer thread
of the logger's own hands batches to a child process, and that process stores them with
``MlflowClient.log_batch`` (see :mod:`treadle.background` and
:mod:`treadle_mlflow.sender`), so MLflow's own Python never competes with the step for the
interpreter lock. Everything is stored before a checkpoint is written, and at the end.

Options (``plugins.options["mlflow"]``):

- ``tracking_uri``: the tracking store (default: MLflow's own, ``MLFLOW_TRACKING_URI`` or
  ``sqlite:///mlflow.db``); ``registry_uri`` likewise for the model registry.
- ``experiment``: the experiment's name (default ``MLFLOW_EXPERIMENT_NAME``, else
  ``treadle``), created when missing, with ``artifact_location`` when given.
- ``run_name`` (default: the config's ``run_name``, else the run folder's name), ``tags``.
- ``log_best_checkpoint``: log the best checkpoint under ``checkpoints/``.
- ``log_bundle``: export the final model (the config's ``export_formats``, else
  ``pytorch``) and log the bundle under ``bundle/``.
- ``register_as``: register the logged bundle (or, without one, the best checkpoint) as a new
  version of this registered model; switches ``log_bundle`` on when neither is asked for.

``mlflow`` is imported when the logger is built, at the start of the run, never at
``import treadle``.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from treadle import hookimpl
from treadle.background import BackgroundWriter
from treadle.errors import ConfigError, PluginLoadError
from treadle_mlflow.sender import MetricSender, Row

if TYPE_CHECKING:
    from treadle.config import TrainingConfig
    from treadle.protocols import TrainerView

__all__ = ["OPTION_KEYS", "PLUGIN_STATE_KEY", "RUN_FILE", "MlflowLogger", "flat_params"]

logger = logging.getLogger(__name__)

RUN_FILE = "mlflow-run.json"
PLUGIN_STATE_KEY = "mlflow"
OPTION_KEYS = frozenset(
    {
        "tracking_uri",
        "registry_uri",
        "experiment",
        "artifact_location",
        "run_name",
        "tags",
        "log_best_checkpoint",
        "log_bundle",
        "register_as",
    }
)
#: MLflow's limits per ``log_batch`` call and per param value (mlflow.utils.validation).
_PARAMS_PER_BATCH = 100
_PARAM_VALUE_LENGTH = 6000


def _import_mlflow() -> Any:
    try:
        import mlflow
    except ImportError as err:
        msg = f"The 'mlflow' logger needs MLflow: pip install \"treadle[mlflow]\" ({err})"
        raise PluginLoadError(msg) from err
    return mlflow


class MlflowLogger:
    """Sends a run's params, metrics and, on request, artifacts to an MLflow tracking store.

    :param training_config: gives the options above and the params.
    :param run_dir: the run's folder: the MLflow run id is kept there.
    :raises PluginLoadError: MLflow is not installed (with the pip command).
    :raises ConfigError: an unknown or invalid option.
    """

    def __init__(
        self, training_config: TrainingConfig | None = None, run_dir: Path | None = None
    ) -> None:
        self._mlflow = _import_mlflow()
        options: dict[str, Any] = {}
        if training_config is not None:
            options = training_config.plugins.options_for("mlflow", OPTION_KEYS)
        tags = options.get("tags", {})
        if not isinstance(tags, Mapping):
            msg = f"plugins.options.mlflow.tags must be a table of names to values: {tags!r}"
            raise ConfigError(msg)
        register_as = options.get("register_as")
        if register_as is not None and (not isinstance(register_as, str) or not register_as):
            msg = f"plugins.options.mlflow.register_as must be a model name: {register_as!r}"
            raise ConfigError(msg)
        self.training_config = training_config
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.tracking_uri = str(options.get("tracking_uri") or self._mlflow.get_tracking_uri())
        self.registry_uri = options.get("registry_uri")
        self.experiment_name = str(
            options.get("experiment") or _environment("MLFLOW_EXPERIMENT_NAME") or "treadle"
        )
        self.artifact_location = options.get("artifact_location")
        self.run_name = str(
            options.get("run_name")
            or (training_config.run_name if training_config is not None else None)
            or (self.run_dir.name if self.run_dir is not None else "treadle")
        )
        self.tags = {str(key): str(value) for key, value in tags.items()}
        self.log_best_checkpoint = bool(options.get("log_best_checkpoint", False))
        self.register_as: str | None = register_as
        self.log_bundle = bool(options.get("log_bundle", False)) or (
            register_as is not None and not self.log_best_checkpoint
        )
        self.client: Any = self._mlflow.MlflowClient(
            tracking_uri=self.tracking_uri, registry_uri=self.registry_uri
        )
        self.run_id: str | None = None
        self.attempt = 1
        self.status: str | None = None
        self.registered_version: str | None = None
        self._resume_run_id: str | None = None
        self._sender: MetricSender | None = None
        self._rows: BackgroundWriter[Row] = BackgroundWriter(self._write_rows, name="mlflow")
        self._closed = False

    # -- its run's lifecycle hooks (bound to that run only) ------------------------------

    @hookimpl
    def treadle_on_load_checkpoint(self, plugin_state: Mapping[str, Any]) -> None:
        state = plugin_state.get(PLUGIN_STATE_KEY)
        if isinstance(state, Mapping) and state.get("tracking_uri") == self.tracking_uri:
            run_id = state.get("run_id")
            self._resume_run_id = run_id if isinstance(run_id, str) else None

    @hookimpl
    def treadle_on_training_start(self, trainer: TrainerView) -> None:
        self.begin(global_step=trainer.global_step)

    @hookimpl
    def treadle_on_save_checkpoint(self, plugin_state: MutableMapping[str, Any]) -> None:
        self._rows.flush()  # what the run logged so far is stored before the checkpoint is
        plugin_state[PLUGIN_STATE_KEY] = {
            "run_id": self._ensure_run(),
            "tracking_uri": self.tracking_uri,
        }

    @hookimpl
    def treadle_on_exception(self, exception: BaseException) -> None:
        self._terminate("FAILED", note=f"{type(exception).__name__}: {exception}")

    @hookimpl
    def treadle_on_training_end(self, trainer: TrainerView, results: Mapping[str, Any]) -> None:
        self.finish(trainer, results)

    # -- the MLflow run ----------------------------------------------------------------------

    def begin(self, *, global_step: int) -> None:
        """Start the MLflow run, or continue this treadle run's one when it resumed
        (``global_step > 0``) and the store still has it."""
        if self.run_id is not None:
            return
        if global_step > 0:
            run_id = self._resume_run_id or self._run_file_id()
            if run_id is not None and self._continue(run_id, global_step):
                return
        self._ensure_run()

    def _continue(self, run_id: str, global_step: int) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            logger.warning(
                "mlflow: run %s is not in %s any more; starting a new run",
                run_id,
                self.tracking_uri,
            )
            return False
        self.run_id = run_id
        self.attempt = int(run.data.tags.get("treadle.attempt", "1")) + 1
        self.client.update_run(run_id, status="RUNNING")
        self.client.log_batch(
            run_id,
            tags=_tags(
                {
                    "treadle.attempt": str(self.attempt),
                    "treadle.resumed_at_step": str(global_step),
                }
            ),
        )
        if self.training_config is not None:
            self.client.log_dict(
                run_id,
                self.training_config.to_dict(),
                f"treadle/config-attempt-{self.attempt}.json",
            )
        logger.info(
            "mlflow: run %s continues at step %d (attempt %d)", run_id, global_step, self.attempt
        )
        return True

    def _ensure_run(self) -> str:
        if self.run_id is not None:
            return self.run_id
        experiment_id = self._experiment_id()
        tags = {"treadle.attempt": "1", **self.tags}
        if self.run_dir is not None:
            tags["treadle.run_dir"] = str(self.run_dir.resolve())
        if self.training_config is not None and self.training_config.notes:
            tags["mlflow.note.content"] = self.training_config.notes
        run = self.client.create_run(experiment_id, run_name=self.run_name, tags=tags)
        self.run_id = str(run.info.run_id)
        self._write_run_file()
        if self.training_config is not None:
            config = self.training_config.to_dict()
            params = _params(flat_params(config))
            for start in range(0, len(params), _PARAMS_PER_BATCH):
                self.client.log_batch(self.run_id, params=params[start : start + _PARAMS_PER_BATCH])
            self.client.log_dict(self.run_id, config, "treadle/config.json")
        return self.run_id

    def _experiment_id(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment_name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                msg = (
                    f"MLflow experiment {self.experiment_name!r} is deleted in "
                    f"{self.tracking_uri}: restore it, or name another with "
                    f"plugins.options.mlflow.experiment"
                )
                raise ConfigError(msg)
            return str(found.experiment_id)
        return str(
            self.client.create_experiment(
                self.experiment_name, artifact_location=self.artifact_location
            )
        )

    def _run_file_id(self) -> str | None:
        if self.run_dir is None:
            return None
        path = self.run_dir / RUN_FILE
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if isinstance(record, dict) and record.get("tracking_uri") == self.tracking_uri:
            run_id = record.get("run_id")
            return run_id if isinstance(run_id, str) else None
        return None

    def _write_run_file(self) -> None:
        if self.run_dir is None:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        record = {"run_id": self.run_id, "tracking_uri": self.tracking_uri}
        (self.run_dir / RUN_FILE).write_text(json.dumps(record) + "\n", encoding="utf-8")

    # -- the metric stream -------------------------------------------------------------------

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Buffer ``metrics`` at optimizer ``step`` (sent on the logger's thread)."""
        if self._closed:
            msg = f"The 'mlflow' logger of run {self.run_id} is closed; it takes no metrics."
            raise ValueError(msg)
        self._rows.append((step, int(time.time() * 1000), dict(metrics)))

    def _write_rows(self, rows: list[Row]) -> None:
        """On the writer thread: hand the rows to the sender process and wait until they
        are stored (the wait holds no lock the training thread needs)."""
        if self._sender is None:
            self._sender = MetricSender(self.tracking_uri, self._ensure_run())
        self._sender.send(rows)

    def flush(self) -> None:
        """Send every metric logged so far."""
        self._rows.flush()

    # -- the end -----------------------------------------------------------------------------

    def finish(self, trainer: TrainerView | None, results: Mapping[str, Any]) -> None:
        """Log what was asked (best checkpoint, bundle), register the model, and end the
        run ``FINISHED`` (``KILLED`` when SIGTERM stopped it)."""
        run_id = self._ensure_run()
        best = results.get("best_checkpoint")
        checkpoint_path: str | None = None
        if self.log_best_checkpoint and best:
            self.client.log_artifact(run_id, str(best), "checkpoints")
            checkpoint_path = f"checkpoints/{Path(str(best)).name}"
        bundle_path: str | None = None
        if self.log_bundle and trainer is not None:
            bundle = self._export(trainer)
            self.client.log_artifacts(run_id, str(bundle), "bundle")
            bundle_path = "bundle"
        if self.register_as is not None:
            source = bundle_path or checkpoint_path
            if source is None:
                logger.warning(
                    "mlflow: nothing was logged to register as %r (no best checkpoint)",
                    self.register_as,
                )
            else:
                self._register(run_id, source)
        stopped = results.get("stop_reason") == "SIGTERM"
        self._terminate("KILLED" if stopped else "FINISHED", force=True)

    def _export(self, trainer: TrainerView) -> Path:
        from treadle.export import create_export_bundle

        config = trainer.training_config
        formats = list(config.export_formats) or ["pytorch"]
        return create_export_bundle(
            trainer.model,
            None,
            trainer.task_spec,
            config,
            output_dir=(self.run_dir or Path.cwd()) / "mlflow-export",
            formats=formats,
        )

    def _register(self, run_id: str, artifact_path: str) -> None:
        from mlflow.exceptions import MlflowException

        registry: Any = self.client
        name = str(self.register_as)
        try:
            registry.create_registered_model(name)
        except MlflowException as err:
            if getattr(err, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
                raise
        run = self.client.get_run(run_id)
        version = registry.create_model_version(
            name,
            f"{run.info.artifact_uri}/{artifact_path}",
            run_id=run_id,
            tags={"treadle.artifact": artifact_path},
        )
        self.registered_version = str(version.version)
        logger.info(
            "mlflow: registered %s version %s from %s", name, version.version, artifact_path
        )

    def _terminate(self, status: str, *, note: str | None = None, force: bool = False) -> None:
        if self.run_id is None or (self.status is not None and not force):
            return
        try:
            self._rows.flush()
        finally:
            if note is not None:
                self.client.set_tag(self.run_id, "treadle.error", note[:5000])
            self.client.set_terminated(self.run_id, status=status)
            self.status = status

    def close(self) -> None:
        """Send what is buffered and end the run: ``FAILED`` when called while an exception
        is being handled, else ``FINISHED`` (the run's end may still add artifacts)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._rows.close()
        finally:
            if self._sender is not None:
                self._sender.close()
            handling = sys.exception()
            if handling is not None:
                self._terminate("FAILED", note=f"{type(handling).__name__}: {handling}")
            else:
                self._terminate("FINISHED")


def flat_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A config as MLflow params: nested keys joined with ``.``, values as text (lists as
    JSON), ``None`` as ``None``."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flat_params(value, prefix=f"{name}."))
        elif isinstance(value, str):
            flat[name] = value
        elif isinstance(value, float) and not math.isfinite(value):
            flat[name] = str(value)
        else:
            flat[name] = json.dumps(value, default=str)
    return flat


def _params(flat: Mapping[str, str]) -> list[Any]:
    from mlflow.entities import Param

    return [Param(name, value[:_PARAM_VALUE_LENGTH]) for name, value in flat.items()]


def _tags(tags: Mapping[str, str]) -> list[Any]:
    from mlflow.entities import RunTag

    return [RunTag(name, value) for name, value in tags.items()]


def _environment(name: str) -> str | None:
    import os

    return os.environ.get(name) or None
