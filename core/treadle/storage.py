"""Stores and where they live: the store protocols, their records, and ``open_store(location)``.

treadle keeps three kinds of store: the model registry (``"models"``), the experiment runs and
their metrics (``"experiments"``) and the job queue (``"jobs"``). A location is a plain path or
``sqlite:///path`` (the SQLite plugin) or any ``scheme://...`` a plugin registers through
``treadle_register_storage``; all three kinds may share one location. :class:`ModelRegistry
<treadle.model_registry.ModelRegistry>` and :class:`ExperimentDB
<treadle.experiments.ExperimentDB>` are built on these protocols, and
:mod:`treadle.testing.stores` checks a backend against them.
"""

from __future__ import annotations

import builtins
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, overload, runtime_checkable

import attrs

from treadle.errors import StorageError, TreadleError, UnknownNameError
from treadle.store_values import (
    MAX_JSON_BYTES,
    MAX_JSON_DEPTH,
    check_json,
    check_name,
    check_text,
    decode_metrics,
    encode_metrics,
)

if TYPE_CHECKING:
    from treadle.jobs.records import AttemptOutcome, Claim, HeartbeatReply, Job, Schedule
    from treadle.owner import ProcessOwner
    from treadle.plugins import PluginManager

__all__ = [
    "Row",
    "json_list",
    "model_entry_from_row",
    "run_record_from_row",
    "DEFAULT_LOCATION",
    "MODEL_STATUSES",
    "ENDED_RUN_STATUSES",
    "RUN_STATUSES",
    "STORE_KINDS",
    "DuplicateModelError",
    "ExperimentStore",
    "JobStore",
    "MetricRow",
    "MetricValues",
    "ModelRegistryEntry",
    "ModelStore",
    "NewModel",
    "RegistryError",
    "RunRecord",
    "MAX_JSON_BYTES",
    "MAX_JSON_DEPTH",
    "check_json",
    "check_name",
    "check_text",
    "decode_metrics",
    "encode_metrics",
    "open_store",
    "scheme_of",
    "utc_now",
]

DEFAULT_LOCATION = "treadle.db"
STORE_KINDS = ("models", "experiments", "jobs")
MODEL_STATUSES = ("active", "retired", "experimental")
#: ``interrupted``: stopped by SIGINT or SIGTERM after saving (resumable); ``died``: its
#: process ended without a word (``kill -9``, a lost machine), which stores report by reading
#: the owner and heartbeat of a run still marked ``running``
RUN_STATUSES = ("running", "completed", "failed", "interrupted", "died")
#: the statuses that stamp ``ended_at``
ENDED_RUN_STATUSES = ("completed", "failed", "interrupted", "died")

StoreKind = Literal["models", "experiments", "jobs"]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


class RegistryError(TreadleError, ValueError):
    """The registry cannot do what was asked in the model's present state (promoting a retired
    model, an ambiguous tag); the message names the model and the fix."""


class DuplicateModelError(RegistryError):
    """A model version of this name is registered already; the first entry is unchanged."""


def utc_now() -> str:
    """Now as ISO 8601 in UTC with milliseconds: the timestamps stores write."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Row(Protocol):
    """A database row read by column name: ``sqlite3.Row``, psycopg's dict rows."""

    def __getitem__(self, key: str, /) -> Any: ...


def json_list(text: str) -> tuple[str, ...]:
    """A JSON array of strings, as stores keep tags and export formats."""
    return () if text == "[]" else tuple(json.loads(text))


def model_entry_from_row(row: Row, tags: Iterable[str]) -> ModelRegistryEntry:
    """A registry entry from a row of a backend's ``models`` query (the columns every backend
    selects under the entry's field names); ``tags`` as the backend aggregates them."""
    return ModelRegistryEntry(
        model_id=row["model_id"],
        name=row["name"],
        version=row["version"],
        checkpoint_path=row["checkpoint_path"],
        task_type=row["task_type"],
        config_hash=row["config_hash"],
        training_run_id=row["training_run_id"],
        parent_model_id=row["parent_model_id"],
        created_at=row["created_at"],
        metrics=decode_metrics(json.loads(row["metrics"])),
        export_formats=json_list(row["export_formats"]),
        model_size_mb=float(row["model_size_mb"]),
        memory_req_gb=float(row["memory_req_gb"]),
        status=row["status"],
        tags=tuple(sorted(tags)),
        job_key=row["job_key"],
        has_data_profile=bool(row["has_data_profile"]),
    )


def _optional(row: Row, key: str) -> Any:
    try:
        return row[key]
    except (KeyError, IndexError):  # a backend's table without the owner's columns
        return None


def run_record_from_row(row: Row) -> RunRecord:
    """A run from a row of a backend's ``runs`` table (as stored: a ``running`` run whose
    owner is gone is still ``running`` here; the store reports it ``died``)."""
    heartbeat = _optional(row, "heartbeat_at")
    return RunRecord(
        run_id=row["run_id"],
        run_name=row["run_name"],
        status=row["status"],
        config=json.loads(row["config"]),
        notes=row["notes"],
        run_dir=row["run_dir"],
        created_at=row["created_at"],
        ended_at=row["ended_at"],
        error=row["error"],
        attempt=row["attempt"],
        summary=json.loads(row["summary"]),
        owner_pid=_optional(row, "owner_pid"),
        owner_host=_optional(row, "owner_host"),
        owner_started_at=_optional(row, "owner_started_at"),
        heartbeat_at=None
        if heartbeat is None
        else datetime.fromtimestamp(float(heartbeat), UTC).isoformat(timespec="seconds"),
    )


def scheme_of(location: str | Path) -> str:
    """The URL scheme that picks a location's backend: ``sqlite`` for a plain path."""
    match = _SCHEME.match(str(location))
    return match.group(1).lower() if match else "sqlite"


# -- records -----------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class ModelRegistryEntry:
    """One registered model version, as :meth:`ModelRegistry.get_model
    <treadle.model_registry.ModelRegistry.get_model>` returns it.

    :ivar model_id: unique in its registry, assigned on registration.
    :ivar name: the model's name (``transformer-v1``); with ``version`` unique.
    :ivar version: its version (semantic versions such as ``1.0.0`` are usual).
    :ivar checkpoint_path: the checkpoint file, as registered.
    :ivar task_type: ``language_modeling``, ``classification``, ...
    :ivar config_hash: SHA-256 of the training config.
    :ivar training_run_id: the run in the experiment store that produced it, if any.
    :ivar parent_model_id: the model it was fine-tuned or retrained from, if any.
    :ivar created_at: ISO 8601, UTC.
    :ivar metrics: name to value.
    :ivar export_formats: formats exported so far, in order (``onnx``, ``torchscript``).
    :ivar model_size_mb: the checkpoint file's size in MiB.
    :ivar memory_req_gb: estimated GPU memory to serve it, in GiB (see
        :func:`~treadle.model_registry.estimate_memory_gb`).
    :ivar status: ``active``, ``retired`` or ``experimental``.
    :ivar tags: tags this version holds (``production``); a tag names one version of a model
        name at a time.
    :ivar job_key: the job that registered it (``job-42``), if a job did.
    :ivar has_data_profile: whether a training-data profile is stored with it.
    """

    model_id: int
    name: str
    version: str
    checkpoint_path: str
    task_type: str
    config_hash: str
    training_run_id: int | None
    parent_model_id: int | None
    created_at: str
    metrics: dict[str, float] = attrs.field(hash=False)
    export_formats: tuple[str, ...]
    model_size_mb: float
    memory_req_gb: float
    status: str
    tags: tuple[str, ...]
    job_key: str | None = None
    has_data_profile: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (lists for the tuples)."""
        data = attrs.asdict(self, recurse=False)
        data["metrics"] = dict(self.metrics)
        data["export_formats"] = list(self.export_formats)
        data["tags"] = list(self.tags)
        return data


@attrs.frozen(kw_only=True)
class NewModel:
    """What :meth:`ModelStore.add_model` stores: an entry before it has an id, with the
    registration's tags, job key and data profile (JSON data or ``None``)."""

    name: str
    version: str
    checkpoint_path: str
    task_type: str
    config_hash: str
    training_run_id: int | None
    parent_model_id: int | None
    created_at: str
    metrics: dict[str, Any] = attrs.field(hash=False)
    export_formats: tuple[str, ...]
    model_size_mb: float
    memory_req_gb: float
    status: str
    tags: tuple[str, ...] = ()
    job_key: str | None = None
    data_profile: dict[str, Any] | None = attrs.field(default=None, hash=False)


@attrs.frozen(kw_only=True)
class RunRecord:
    """One experiment run.

    :ivar status: one of :data:`RUN_STATUSES`; ``died`` for a run still marked ``running``
        whose process is gone (its pid no longer runs on this machine, or its heartbeat is
        older than its lease).
    :ivar attempt: how many times the run was started; a resume starts a new attempt.
    :ivar summary: what the run reported at its end (``best_checkpoint``, ``best_val_loss``,
        ``stop_reason``, ...).
    :ivar owner_pid: the process of its latest attempt (``None`` when it recorded none).
    :ivar owner_host: that process's host.
    :ivar owner_started_at: when that attempt started, ISO 8601.
    :ivar heartbeat_at: its last heartbeat, ISO 8601 (``None`` without one).
    """

    run_id: int
    run_name: str
    status: str
    config: dict[str, Any] = attrs.field(hash=False)
    notes: str
    run_dir: str | None
    created_at: str
    ended_at: str | None
    error: str | None
    attempt: int
    summary: dict[str, Any] = attrs.field(hash=False)
    owner_pid: int | None = None
    owner_host: str | None = None
    owner_started_at: str | None = None
    heartbeat_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        return attrs.asdict(self, recurse=False)


@attrs.frozen(kw_only=True)
class MetricRow:
    """One logged value. ``value`` is NaN for a NaN logged (stores keep it as NULL);
    ``superseded`` marks a row of an attempt that died after a resumed attempt re-logged its
    step; ``logged_at`` is seconds since the epoch."""

    run_id: int
    attempt: int
    name: str
    value: float
    epoch: int | None
    step: int | None
    logged_at: float
    superseded: bool


#: A metric to insert: ``(name, value or None for NaN, epoch, step, logged_at)``.
MetricValues = tuple[str, float | None, int | None, int | None, float]


# -- protocols ---------------------------------------------------------------------------


@runtime_checkable
class ModelStore(Protocol):
    """Where the model registry keeps its entries. Every write is one transaction: a crash
    leaves a registration whole or absent."""

    location: str

    def add_model(self, model: NewModel) -> tuple[int, bool]:
        """Store ``model`` with its tags; returns ``(model_id, created)``.

        A ``job_key`` already stored returns that model's id and ``created=False``, writing
        nothing (a retried job registers once).

        :raises DuplicateModelError: ``(name, version)`` is taken; nothing is written.
        :raises UnknownNameError: ``parent_model_id`` names no model.
        """
        ...

    def get_model(self, model_id: int) -> ModelRegistryEntry:
        """:raises UnknownNameError: no model has this id."""
        ...

    def find_models(
        self,
        *,
        name: str | None = None,
        version: str | None = None,
        tag: str | None = None,
        status: str | None = None,
        model_ids: Sequence[int] | None = None,
        limit: int | None = None,
    ) -> builtins.list[ModelRegistryEntry]:
        """Entries matching every given filter, newest (highest id) first."""
        ...

    def set_tag(self, model_id: int, tag: str) -> int | None:
        """Point ``tag`` of the model's name at ``model_id``, atomically (readers see the old
        holder or the new one, never none or two); returns the previous holder's id.

        :raises UnknownNameError: no model has this id.
        :raises RegistryError: the model is retired.
        """
        ...

    def remove_tag(self, name: str, tag: str) -> int | None:
        """Remove ``tag`` from model ``name``; returns the id that held it, or ``None``."""
        ...

    def set_status(self, model_id: int, status: str) -> builtins.list[str]:
        """Set the status; retiring also removes the model's tags, which are returned.

        :raises UnknownNameError: no model has this id.
        """
        ...

    def add_export_formats(self, model_id: int, formats: Sequence[str]) -> None:
        """Append formats not yet recorded, keeping their order."""
        ...

    def get_data_profile(self, model_id: int) -> dict[str, Any] | None:
        """The training-data profile stored with the model (JSON data), or ``None``."""
        ...

    def ancestors(self, model_id: int) -> builtins.list[ModelRegistryEntry]:
        """Parent, grandparent, ... of ``model_id``, nearest first."""
        ...

    def descendants(self, model_id: int) -> builtins.list[ModelRegistryEntry]:
        """Every model derived from ``model_id``, directly or not, by id."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class ExperimentStore(Protocol):
    """Where experiment runs and their metrics live."""

    location: str

    def create_run(
        self,
        *,
        run_name: str,
        config: Mapping[str, Any],
        notes: str,
        run_dir: str | None,
        status: str,
        owner: ProcessOwner | None = None,
        lease_seconds: float | None = None,
    ) -> int:
        """Store a new run (attempt 1); returns its id. With an ``owner``, the run records it
        and a heartbeat now, its lease running ``lease_seconds`` (see :meth:`heartbeat`)."""
        ...

    def start_attempt(
        self,
        run_id: int,
        resume_step: int | None,
        owner: ProcessOwner | None = None,
        lease_seconds: float | None = None,
    ) -> int:
        """Start the next attempt of a run resumed at optimizer step ``resume_step``: rows of
        earlier attempts logged after that step are marked superseded (the new attempt logs
        those steps again), status goes back to ``running`` (with ``owner`` and a heartbeat,
        as :meth:`create_run`); returns the attempt number. ``None``: nothing is superseded.

        :raises UnknownNameError: no run has this id.
        """
        ...

    def heartbeat(self, run_id: int, attempt: int, lease_seconds: float) -> bool:
        """Mark attempt ``attempt`` of a running run alive now, for ``lease_seconds`` more:
        a ``running`` run whose lease ran out is reported ``died``. Returns ``False`` (and
        changes nothing) when the run is no longer running or another attempt took over."""
        ...

    def add_metrics(self, run_id: int, attempt: int | None, rows: Iterable[MetricValues]) -> int:
        """Insert ``rows`` in one transaction (all or none); ``attempt=None`` is the run's
        current attempt. Returns the number of rows.

        :raises UnknownNameError: no run has this id.
        """
        ...

    def update_run(
        self,
        run_id: int,
        *,
        status: str | None = None,
        error: str | None = None,
        summary: Mapping[str, Any] | None = None,
    ) -> None:
        """Set the status (those of :data:`ENDED_RUN_STATUSES` also set ``ended_at``), the
        error text, and merge ``summary`` into the stored one.

        :raises UnknownNameError: no run has this id.
        """
        ...

    def get_run(self, run_id: int) -> RunRecord:
        """:raises UnknownNameError: no run has this id."""
        ...

    def find_runs(
        self,
        *,
        name: str | None = None,
        status: str | None = None,
        run_dir: str | None = None,
        run_ids: Sequence[int] | None = None,
        limit: int | None = None,
    ) -> builtins.list[RunRecord]:
        """Runs matching every given filter, newest first."""
        ...

    def get_metrics(
        self,
        run_ids: Sequence[int],
        *,
        names: Sequence[str] | None = None,
        include_superseded: bool = False,
    ) -> builtins.list[MetricRow]:
        """Rows of the runs, by run, then step and epoch (``None`` first), then insertion."""
        ...

    def metric_names(self, run_ids: Sequence[int] | None = None) -> builtins.list[str]:
        """Names with at least one live row (in the given runs), sorted."""
        ...

    def best_values(
        self, metric: str, mode: str, limit: int
    ) -> builtins.list[tuple[int, float, int | None, int | None]]:
        """The best live value of ``metric`` per run, best run first, NaN never best:
        ``(run_id, value, epoch, step)``; ``mode`` is ``min`` or ``max``."""
        ...

    def close(self) -> None: ...


class JobStore(Protocol):
    """Where the job queue keeps jobs, attempts and schedules (used by
    :class:`~treadle.jobs.manager.JobManager` and its workers). Every claim is one
    transaction that sets the job running with a lease; every later write about a job is
    conditioned on ``(job_id, worker_id, attempt)``, so a worker that lost its lease changes
    nothing."""

    location: str

    def close(self) -> None: ...

    def enqueue(
        self,
        job_type: str,
        config: Mapping[str, Any],
        *,
        priority: int,
        max_retries: int,
        timeout_seconds: float | None = None,
        available_at: float | None = None,
    ) -> int: ...

    def get(self, job_id: int) -> Job: ...

    def list(
        self,
        *,
        status: str | None = None,
        job_type: str | None = None,
        limit: int | None = None,
    ) -> builtins.list[Job]: ...

    def counts(self) -> dict[str, int]: ...

    def cancel(self, job_id: int) -> tuple[str, str]: ...

    def claim(self, worker_id: str, *, lease_seconds: float) -> Claim | None: ...

    def heartbeat(self, claim: Claim, *, lease_seconds: float) -> HeartbeatReply: ...

    def complete(self, claim: Claim, result: Mapping[str, Any]) -> bool: ...

    def fail(
        self, claim: Claim, error: str, *, outcome: AttemptOutcome, retry_delay: float
    ) -> str | None: ...

    def mark_cancelled(self, claim: Claim, reason: str) -> bool: ...

    def release(self, claim: Claim, reason: str) -> bool: ...

    def add_schedule(
        self,
        *,
        name: str,
        job_type: str,
        config: Mapping[str, Any],
        schedule_expr: str,
        timezone: str,
        priority: int,
        max_retries: int,
    ) -> int: ...

    def schedules(self) -> builtins.list[Schedule]: ...

    def schedule(self, schedule_id: int) -> Schedule: ...

    def set_paused(self, schedule_id: int, is_paused: bool) -> None: ...

    def delete_schedule(self, schedule_id: int) -> None: ...

    def fire_schedule(self, schedule: Schedule, fire_at: float, dedupe_key: str) -> int | None: ...


# -- opening -----------------------------------------------------------------------------


@overload
def open_store(
    location: str | Path,
    kind: Literal["models"],
    plugin_manager: PluginManager | None = None,
) -> ModelStore: ...


@overload
def open_store(
    location: str | Path,
    kind: Literal["experiments"],
    plugin_manager: PluginManager | None = None,
) -> ExperimentStore: ...


@overload
def open_store(
    location: str | Path,
    kind: Literal["jobs"],
    plugin_manager: PluginManager | None = None,
) -> JobStore: ...


@overload
def open_store(
    location: str | Path, kind: str, plugin_manager: PluginManager | None = None
) -> Any: ...


def open_store(location: str | Path, kind: str, plugin_manager: PluginManager | None = None) -> Any:
    """Open the store of ``kind`` at ``location``, creating and migrating it as needed.

    :param location: a plain path or ``sqlite:///path`` (the SQLite plugin), or
        ``scheme://...`` for any scheme a plugin registers (``postgresql://...``).
    :param kind: ``models``, ``experiments`` or ``jobs``.
    :param plugin_manager: where storage backends are looked up (default: the global one).
    :raises StorageError: no plugin registers the scheme, the location is not a treadle
        store, or it holds a newer schema; names the location.
    """
    from treadle.plugins import get_registry

    if kind not in STORE_KINDS:
        msg = f"Unknown store kind {kind!r}; kinds are {', '.join(STORE_KINDS)}."
        raise StorageError(msg)
    text = str(location)
    if not text:
        msg = f"An empty location cannot hold a {kind} store; give a path or a URL."
        raise StorageError(msg)
    scheme = scheme_of(text)
    try:
        backend = get_registry("storage", plugin_manager).create(scheme)
    except UnknownNameError as err:
        msg = (
            f"{text}: no storage plugin handles the scheme {scheme!r}. {err} Install the plugin "
            f'that provides it (PostgreSQL: pip install "treadle[postgres]").'
        )
        raise StorageError(msg) from err
    return backend.open(text, kind)
