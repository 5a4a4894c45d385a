"""ModelRegistry: model versions with their metrics, tags, lineage and training-data profile.

A thin layer over a :class:`~treadle.storage.ModelStore`: it checks arguments, measures the
checkpoint, and shapes results (entries, pandas DataFrames); the store does the atomic parts.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from treadle.errors import ConfigError, UnknownNameError
from treadle.optional import require
from treadle.storage import (
    DEFAULT_LOCATION,
    MODEL_STATUSES,
    DuplicateModelError,
    ModelRegistryEntry,
    NewModel,
    RegistryError,
    check_json,
    check_name,
    check_text,
    encode_metrics,
    open_store,
    utc_now,
)

if TYPE_CHECKING:
    import pandas

    from treadle.engine.drift import DataProfile
    from treadle.plugins import PluginManager
    from treadle.storage import ModelStore

__all__ = [
    "DuplicateModelError",
    "Lineage",
    "ModelRegistry",
    "ModelRegistryEntry",
    "RegistryError",
    "checkpoint_facts",
    "estimate_memory_gb",
]

logger = logging.getLogger(__name__)

#: Headroom on the weights' bytes for activations, the CUDA context and allocator slack when
#: serving a model: ``memory_req_gb = parameter bytes x 1.2``.
SERVING_OVERHEAD = 1.2
_STATE_KEYS = ("model_state_dict", "model", "state_dict")
#: Columns of :meth:`ModelRegistry.list_models`; a metric of one of these names is shown as
#: ``metric:<name>``.
ENTRY_COLUMNS = (
    "model_id",
    "name",
    "version",
    "status",
    "tags",
    "task_type",
    "created_at",
    "model_size_mb",
    "memory_req_gb",
    "training_run_id",
    "parent_model_id",
    "config_hash",
    "checkpoint_path",
    "export_formats",
    "job_key",
)


def estimate_memory_gb(parameter_bytes: int | float) -> float:
    """Estimated GPU memory to serve a model, in GiB: the bytes of its weights in their stored
    dtype (``parameters x dtype size``: 4 for float32, 2 for bfloat16) times
    :data:`SERVING_OVERHEAD`. Training needs several times more (gradients, optimizer state).
    """
    return float(parameter_bytes) * SERVING_OVERHEAD / 2**30


@attrs.frozen(kw_only=True)
class CheckpointFacts:
    """What :func:`checkpoint_facts` measured.

    :ivar size_mb: the file's size in MiB.
    :ivar num_parameters: elements in the model's tensors; ``None`` when unreadable.
    :ivar parameter_bytes: their bytes in the stored dtypes; ``None`` when unreadable.
    """

    size_mb: float
    num_parameters: int | None
    parameter_bytes: int | None

    @property
    def memory_req_gb(self) -> float:
        """:func:`estimate_memory_gb` of the weights, or of the file size when its tensors
        could not be read."""
        if self.parameter_bytes is not None:
            return estimate_memory_gb(self.parameter_bytes)
        return estimate_memory_gb(self.size_mb * 2**20)


def checkpoint_facts(path: str | Path) -> CheckpointFacts:
    """Size of a checkpoint file and the parameters of the model in it.

    The model's tensors are those under ``model_state_dict`` (treadle's checkpoints),
    ``model`` or ``state_dict``, or the file's top-level tensors; they are memory-mapped, not
    read, and loaded with ``weights_only=True``. A file torch cannot read (ONNX, ...) gives
    only its size.

    :raises FileNotFoundError: no such file.
    """
    file = Path(path)
    size_mb = file.stat().st_size / 2**20
    try:
        import torch

        try:
            payload = torch.load(str(file), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) files cannot be memory-mapped
            payload = torch.load(str(file), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a file it cannot read
        logger.debug("%s: tensors not readable (%s); memory estimated from file size", file, err)
        return CheckpointFacts(size_mb=size_mb, num_parameters=None, parameter_bytes=None)
    state: Any = payload
    if isinstance(payload, Mapping):
        for key in _STATE_KEYS:
            if isinstance(payload.get(key), Mapping):
                state = payload[key]
                break
    tensors = [value for value in getattr(state, "values", list)() if torch.is_tensor(value)]
    if not tensors:
        return CheckpointFacts(size_mb=size_mb, num_parameters=None, parameter_bytes=None)
    return CheckpointFacts(
        size_mb=size_mb,
        num_parameters=sum(tensor.numel() for tensor in tensors),
        parameter_bytes=sum(tensor.numel() * tensor.element_size() for tensor in tensors),
    )


@attrs.frozen(kw_only=True)
class Lineage:
    """A model's family: ``ancestors`` nearest first (parent, grandparent, ...) and
    ``descendants`` (every model derived from it, directly or not) by id."""

    model: ModelRegistryEntry
    ancestors: tuple[ModelRegistryEntry, ...]
    descendants: tuple[ModelRegistryEntry, ...]


def _check_id(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"{what} must be an integer: {value!r}"
        raise ConfigError(msg)
    return value


class ModelRegistry:
    """Registered model versions: checkpoints with metrics, tags, lineage and data profiles.

    :param location: a path or ``sqlite:///path`` (the SQLite plugin), or any scheme a
        storage plugin registers; may be shared with the experiment and job stores.
    :param plugin_manager: where the storage backend is looked up (default: the global one).
    :raises StorageError: the location is not a treadle store or holds a newer schema.
    """

    def __init__(
        self,
        location: str | Path = DEFAULT_LOCATION,
        *,
        plugin_manager: PluginManager | None = None,
    ) -> None:
        self.location = str(location)
        self.store: ModelStore = open_store(self.location, "models", plugin_manager)

    def close(self) -> None:
        """Close the store's connection."""
        self.store.close()

    def __enter__(self) -> ModelRegistry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- registering ---------------------------------------------------------------------

    def register_model(
        self,
        name: str,
        version: str,
        checkpoint_path: str | Path,
        task_type: str,
        metrics: Mapping[str, float] | None = None,
        config_hash: str = "",
        training_run_id: int | None = None,
        parent_model_id: int | None = None,
        *,
        export_formats: Sequence[str] = (),
        status: str = "active",
        tags: Sequence[str] = (),
        data_profile: DataProfile | Mapping[str, Any] | None = None,
        job_key: str | None = None,
        model_size_mb: float | None = None,
        memory_req_gb: float | None = None,
    ) -> int:
        """Register a new version of model ``name``; returns its ``model_id``.

        :param checkpoint_path: the checkpoint file; its size gives ``model_size_mb`` and its
            tensors ``memory_req_gb`` (:func:`estimate_memory_gb`) unless both are given. A
            missing file is registered with a warning and sizes 0.
        :param metrics: name to number (NaN and infinities are kept).
        :param training_run_id: the experiment run that trained it.
        :param parent_model_id: the model it was fine-tuned or retrained from (lineage).
        :param status: ``active`` or ``experimental``.
        :param tags: tags to give it at once, as :meth:`promote_model` would.
        :param data_profile: the training data's drift profile
            (:func:`treadle.engine.drift.build_profile`), to measure drift against later.
        :param job_key: the registering job's key; registering the same key again returns
            the first registration's id and writes nothing (retried jobs register once).
        :raises DuplicateModelError: this ``(name, version)`` exists; it is left unchanged.
        :raises UnknownNameError: ``parent_model_id`` names no model.
        :raises ConfigError: a malformed argument, named.
        """
        check_name(name, "model name")
        check_name(version, "model version", max_length=128)
        path_text = check_name(str(checkpoint_path), "checkpoint_path", max_length=4096)
        check_name(task_type, "task_type", max_length=128)
        check_text(config_hash, "config_hash")
        if status not in ("active", "experimental"):
            msg = f"a new model's status must be 'active' or 'experimental': {status!r}"
            raise ConfigError(msg)
        for value, what in ((training_run_id, "training_run_id"), (parent_model_id, "parent")):
            if value is not None:
                _check_id(value, what)
        formats = tuple(check_name(item, "export format", max_length=64) for item in export_formats)
        tag_names = tuple(check_name(tag, "tag", max_length=128) for tag in tags)
        if job_key is not None:
            check_name(job_key, "job_key")
        size_mb, memory_gb = self._measure(path_text, model_size_mb, memory_req_gb)
        model = NewModel(
            name=name,
            version=version,
            checkpoint_path=path_text,
            task_type=task_type,
            config_hash=config_hash,
            training_run_id=training_run_id,
            parent_model_id=parent_model_id,
            created_at=utc_now(),
            metrics=encode_metrics(metrics or {}),
            export_formats=formats,
            model_size_mb=size_mb,
            memory_req_gb=memory_gb,
            status=status,
            tags=tag_names,
            job_key=job_key,
            data_profile=_profile_data(data_profile),
        )
        model_id, created = self.store.add_model(model)
        if created:
            logger.info("registered %s %s as model %d", name, version, model_id)
        else:
            logger.info(
                "job %s registered model %d already; not registering again", job_key, model_id
            )
        return model_id

    def next_version(self, name: str) -> str:
        """The version after the highest ``MAJOR.MINOR.PATCH`` of model ``name`` (patch + 1),
        or ``1.0.0`` for a new name. Versions of other shapes are passed over.

        Two processes may choose the same one at once: register with it and, on
        :class:`DuplicateModelError`, ask again.
        """
        check_name(name, "model name")
        versions = []
        for entry in self.store.find_models(name=name, limit=None):
            parts = entry.version.split(".")
            if len(parts) == 3 and all(part.isdigit() for part in parts):
                versions.append(tuple(int(part) for part in parts))
        if not versions:
            return "1.0.0"
        major, minor, patch = max(versions)
        return f"{major}.{minor}.{patch + 1}"

    @staticmethod
    def _measure(
        path: str, model_size_mb: float | None, memory_req_gb: float | None
    ) -> tuple[float, float]:
        if model_size_mb is not None and memory_req_gb is not None:
            return float(model_size_mb), float(memory_req_gb)
        try:
            facts = checkpoint_facts(path)
        except FileNotFoundError:
            logger.warning("checkpoint %s does not exist; registering with size 0", path)
            return float(model_size_mb or 0.0), float(memory_req_gb or 0.0)
        return (
            facts.size_mb if model_size_mb is None else float(model_size_mb),
            facts.memory_req_gb if memory_req_gb is None else float(memory_req_gb),
        )

    # -- reading -------------------------------------------------------------------------

    def get_model(
        self,
        model_id: int | None = None,
        version: str | None = None,
        tag: str | None = None,
        *,
        name: str | None = None,
    ) -> ModelRegistryEntry:
        """One model version: by ``model_id``; by ``version`` (with ``name`` when several
        models have that version); by ``tag`` (with ``name`` when several models hold the
        tag); or the newest non-retired version of ``name``.

        :raises UnknownNameError: nothing matches; the message says what was looked for.
        :raises RegistryError: the reference is ambiguous; the message lists the candidates
            and asks for ``name``.
        :raises ConfigError: no reference, or ``model_id`` combined with another.
        """
        if model_id is not None:
            if version is not None or tag is not None or name is not None:
                msg = "get_model takes model_id alone, or version/tag with an optional name"
                raise ConfigError(msg)
            return self.store.get_model(_check_id(model_id, "model_id"))
        if version is not None and tag is not None:
            msg = "get_model takes a version or a tag, not both"
            raise ConfigError(msg)
        if version is None and tag is None:
            if name is None:
                msg = "get_model needs model_id, version, tag or name"
                raise ConfigError(msg)
            found = self.store.find_models(name=name, limit=None)
            live = [entry for entry in found if entry.status != "retired"]
            if not live:
                state = "only retired versions" if found else "no versions"
                msg = f"Model {name!r} has {state} in {self.location}."
                raise UnknownNameError(msg)
            return live[0]
        matches = self.store.find_models(name=name, version=version, tag=tag)
        what = f"version {version!r}" if version is not None else f"tag {tag!r}"
        owner = f" of model {name!r}" if name is not None else ""
        if not matches:
            msg = f"No model holds {what}{owner} in {self.location}."
            raise UnknownNameError(msg)
        if len(matches) > 1:
            names = ", ".join(sorted({f"{entry.name!r}" for entry in matches}))
            msg = (
                f"Several models hold {what}: {names}; pass name= to choose one "
                f"(on the command line: NAME:VERSION)."
            )
            raise RegistryError(msg)
        return matches[0]

    def get_data_profile(self, model_id: int) -> DataProfile | None:
        """The training-data profile registered with the model, or ``None``.

        :raises UnknownNameError: no model has this id.
        """
        data = self.store.get_data_profile(_check_id(model_id, "model_id"))
        if data is None:
            return None
        from treadle.engine.drift import DataProfile

        return DataProfile.from_dict(data)

    def list_models(
        self,
        limit: int | None = None,
        *,
        name: str | None = None,
        status: str | None = None,
    ) -> pandas.DataFrame:
        """Registered versions, newest first, retired ones included (see ``status``).

        :returns: a DataFrame with :data:`ENTRY_COLUMNS` (``tags`` and ``export_formats``
            as comma-separated text) followed by one column per metric name, NaN where a
            model lacks the metric.
        """
        if status is not None and status not in MODEL_STATUSES:
            msg = f"status must be one of {', '.join(MODEL_STATUSES)}: {status!r}"
            raise ConfigError(msg)
        entries = self.store.find_models(name=name, status=status, limit=limit)
        return _frame(entries)

    def compare_models(self, model_ids: Sequence[int]) -> pandas.DataFrame:
        """The given versions side by side, in the given order: :data:`ENTRY_COLUMNS` and
        one column per metric any of them has.

        :raises UnknownNameError: an id names no model; the message lists every such id.
        """
        ids = [_check_id(model_id, "model_id") for model_id in model_ids]
        found = {entry.model_id: entry for entry in self.store.find_models(model_ids=ids)}
        missing = [model_id for model_id in ids if model_id not in found]
        if missing:
            msg = f"No model with id {', '.join(map(str, missing))} in {self.location}."
            raise UnknownNameError(msg)
        return _frame([found[model_id] for model_id in ids])

    def get_lineage(self, model_id: int) -> Lineage:
        """The model with its ancestors (through ``parent_model_id``) and descendants.

        :raises UnknownNameError: no model has this id.
        """
        model_id = _check_id(model_id, "model_id")
        return Lineage(
            model=self.store.get_model(model_id),
            ancestors=tuple(self.store.ancestors(model_id)),
            descendants=tuple(self.store.descendants(model_id)),
        )

    # -- changing ------------------------------------------------------------------------

    def promote_model(self, model_id: int, tag: str) -> None:
        """Give ``tag`` (``production``, ``staging``, ...) to this version of its model; the
        version of the same name that held it loses it in the same transaction.

        :raises UnknownNameError: no model has this id.
        :raises RegistryError: the model is retired.
        """
        check_name(tag, "tag", max_length=128)
        previous = self.store.set_tag(_check_id(model_id, "model_id"), tag)
        if previous is not None and previous != model_id:
            logger.info("tag %r moved from model %d to model %d", tag, previous, model_id)

    def remove_tag(self, name: str, tag: str) -> int | None:
        """Take ``tag`` away from model ``name``; returns the id that held it, or ``None``."""
        return self.store.remove_tag(check_name(name, "model name"), check_name(tag, "tag"))

    def delete_model(self, model_id: int) -> None:
        """Mark the version retired (its row, checkpoint and lineage stay); its tags are
        removed, so ``get_model(tag=...)`` never returns a retired version.

        :raises UnknownNameError: no model has this id.
        """
        removed = self.store.set_status(_check_id(model_id, "model_id"), "retired")
        if removed:
            logger.warning("model %d retired; it no longer holds %s", model_id, ", ".join(removed))

    def set_status(self, model_id: int, status: str) -> None:
        """Set ``active``, ``experimental`` or ``retired`` (as :meth:`delete_model`)."""
        if status not in MODEL_STATUSES:
            msg = f"status must be one of {', '.join(MODEL_STATUSES)}: {status!r}"
            raise ConfigError(msg)
        if status == "retired":
            self.delete_model(model_id)
            return
        self.store.set_status(_check_id(model_id, "model_id"), status)

    def add_export_formats(self, model_id: int, formats: Sequence[str]) -> None:
        """Record formats exported for the model (kept in order, each once)."""
        names = [check_name(item, "export format", max_length=64) for item in formats]
        self.store.add_export_formats(_check_id(model_id, "model_id"), names)


def _profile_data(profile: object) -> dict[str, Any] | None:
    if profile is None:
        return None
    to_dict = getattr(profile, "to_dict", None)
    data = to_dict() if callable(to_dict) else profile
    if not isinstance(data, Mapping):
        msg = f"data_profile must be a DataProfile or its to_dict() data: {type(profile).__name__}"
        raise ConfigError(msg)
    from treadle.engine.drift import DataProfile, DriftError

    try:
        DataProfile.from_dict(data)
    except (DriftError, KeyError, TypeError, ValueError) as err:
        msg = f"data_profile is not a valid treadle data profile: {err}"
        raise ConfigError(msg) from err
    return check_json(data, "data_profile")


def _frame(entries: Sequence[ModelRegistryEntry]) -> pandas.DataFrame:
    require("pandas", extra="pandas", feature="A ModelRegistry table (list_models, compare_models)")
    import pandas

    metric_names: dict[str, None] = {}
    for entry in entries:
        metric_names.update(dict.fromkeys(entry.metrics))
    data: dict[str, list[Any]] = {
        "model_id": [entry.model_id for entry in entries],
        "name": [entry.name for entry in entries],
        "version": [entry.version for entry in entries],
        "status": [entry.status for entry in entries],
        "tags": [",".join(entry.tags) for entry in entries],
        "task_type": [entry.task_type for entry in entries],
        "created_at": [entry.created_at for entry in entries],
        "model_size_mb": [entry.model_size_mb for entry in entries],
        "memory_req_gb": [entry.memory_req_gb for entry in entries],
        "training_run_id": [entry.training_run_id for entry in entries],
        "parent_model_id": [entry.parent_model_id for entry in entries],
        "config_hash": [entry.config_hash for entry in entries],
        "checkpoint_path": [entry.checkpoint_path for entry in entries],
        "export_formats": [",".join(entry.export_formats) for entry in entries],
        "job_key": [entry.job_key for entry in entries],
    }
    for name in metric_names:
        column = f"metric:{name}" if name in ENTRY_COLUMNS else name
        data[column] = [entry.metrics.get(name, math.nan) for entry in entries]
    return pandas.DataFrame(data, columns=list(data))
