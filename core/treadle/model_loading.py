"""Registry reference to loaded model: parse a model reference (``42``, ``gpt:1.0.0``,
``:1.0.0``, ``@production``) and rebuild the model a registered checkpoint holds.

``treadle export``, ``treadle registry`` and the ``evaluation``, ``export``, ``training`` and
``retraining`` job types load registered models through here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from treadle.errors import ConfigError, TreadleError

if TYPE_CHECKING:
    import torch

    from treadle.config import TrainingConfig
    from treadle.plugins import PluginManager
    from treadle.task import TaskSpec

__all__ = [
    "MODEL_REFERENCE_FORMS",
    "VerifiedCheckpoint",
    "load_checkpoint_model",
    "load_verified_checkpoint",
    "parse_model_ref",
]

#: The reference forms :func:`parse_model_ref` accepts, for help texts and messages.
MODEL_REFERENCE_FORMS = "ID (42), NAME:VERSION (gpt:1.0.0), :VERSION (:1.0.0) or @TAG (@production)"
_NAME_VERSION = re.compile(r"^(?P<name>[^:@]*):(?P<version>[^:@]+)$")
#: Where checkpoints keep each part, first match wins (the engine's own names first).
_STATE_KEYS = ("model_state_dict", "model", "state_dict")
_TRAINING_KEYS = ("training_config", "config")
_TASK_KEYS = ("task_spec", "task")


def parse_model_ref(reference: str) -> dict[str, Any]:
    """``ModelRegistry.get_model`` keyword arguments for a model reference.

    ``42`` → ``{"model_id": 42}``; ``gpt:1.0.0`` → ``{"name": "gpt", "version": "1.0.0"}``;
    ``:1.0.0`` → ``{"version": "1.0.0"}``; ``@production`` → ``{"tag": "production"}``.

    :raises ConfigError: any other form; the message shows the accepted ones.
    """
    text = reference.strip()
    if text.isdigit():
        return {"model_id": int(text)}
    if text.startswith("@") and len(text) > 1 and "@" not in text[1:]:
        return {"tag": text[1:]}
    match = _NAME_VERSION.match(text)
    if match:
        found: dict[str, Any] = {"version": match["version"]}
        if match["name"]:
            found["name"] = match["name"]
        return found
    msg = f"model reference {reference!r} is not one of: {MODEL_REFERENCE_FORMS}"
    raise ConfigError(msg)


def _first(payload: dict[str, Any], keys: tuple[str, ...], what: str, path: Path) -> Any:
    for key in keys:
        if key in payload:
            return payload[key]
    msg = f"checkpoint {path} holds no {what} (looked for {', '.join(keys)})"
    raise TreadleError(msg)


def load_checkpoint_model(
    checkpoint_path: str | Path, plugin_manager: PluginManager | None = None
) -> tuple[torch.nn.Module, TrainingConfig, TaskSpec]:
    """The model a checkpoint holds, rebuilt with the factory its training config names
    (``model_type`` in the ``models`` registry) and in eval mode, with its training config
    and task.

    :raises TreadleError: the file is missing or lacks the weights, the training config or
        the task spec; the message names the file.
    """
    import torch

    from treadle.config import TrainingConfig
    from treadle.plugins import get_registry
    from treadle.task import TaskSpec

    path = Path(checkpoint_path)
    if not path.is_file():
        msg = f"checkpoint {path} of the registry entry does not exist"
        raise TreadleError(msg)
    try:
        payload = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file; all mean the same
        msg = f"checkpoint {path} cannot be read: {type(err).__name__}: {err}"
        raise TreadleError(msg) from err
    if not isinstance(payload, dict):
        msg = f"checkpoint {path} holds a {type(payload).__name__}, not a checkpoint dict"
        raise TreadleError(msg)
    state_dict = _first(payload, _STATE_KEYS, "model weights", path)
    training = _first(payload, _TRAINING_KEYS, "training config", path)
    task = _first(payload, _TASK_KEYS, "task spec", path)
    training_config = (
        training if isinstance(training, TrainingConfig) else TrainingConfig.from_dict(training)
    )
    task_spec = task if isinstance(task, TaskSpec) else TaskSpec.from_dict(task)
    factory = get_registry("models", plugin_manager).get(training_config.model_type)
    model: torch.nn.Module = factory(training_config, task_spec)
    model.load_state_dict(state_dict)
    return model.eval(), training_config, task_spec


@attrs.frozen(kw_only=True)
class VerifiedCheckpoint:
    """A treadle checkpoint read with verification and rebuilt as its model.

    :ivar path: the file.
    :ivar model: the model its factory built, with the checkpoint's weights, in eval mode.
    :ivar training_config: the config it was trained with.
    :ivar task_spec: its task.
    :ivar metrics: the metrics it was saved with (empty for a mid-epoch save).
    :ivar epoch: the epoch it was saved in.
    :ivar run_id: the run it belongs to (``None`` for one saved without a run).
    """

    path: Path
    model: torch.nn.Module
    training_config: TrainingConfig
    task_spec: TaskSpec
    metrics: dict[str, float]
    epoch: int
    run_id: str | None


def load_verified_checkpoint(
    checkpoint_path: str | Path,
    plugin_manager: PluginManager | None = None,
    *,
    model_type: str | None = None,
) -> VerifiedCheckpoint:
    """Read a checkpoint as :class:`~treadle.engine.checkpoints.CheckpointManager` does
    (its digest or zip CRCs checked, ``weights_only=True``) and load its weights into the
    model that the factory ``model_type`` (default: the one its training config names) builds
    from its config, strictly.

    :raises CheckpointError: the file is missing, damaged, not a treadle checkpoint, or
        carries pickled objects.
    :raises TreadleError: it holds no training config or task, or its weights do not fit the
        factory's model; the message lists the missing, unexpected and mis-shaped tensors.
    :raises UnknownNameError: no model factory of that name is registered.
    """
    from treadle.config import TrainingConfig
    from treadle.engine.checkpoints.loading import read_checkpoint
    from treadle.engine.checkpoints.state import clean_metrics
    from treadle.plugins import get_registry
    from treadle.task import TaskSpec

    path = Path(checkpoint_path)
    payload = read_checkpoint(path)
    training = _first(payload, _TRAINING_KEYS, "training config", path)
    task = _first(payload, _TASK_KEYS, "task spec", path)
    try:
        training_config = TrainingConfig.from_dict(training)
        task_spec = TaskSpec.from_dict(task)
    except (ConfigError, TypeError, ValueError) as err:
        msg = f"checkpoint {path} holds a training config or task this treadle cannot read: {err}"
        raise TreadleError(msg) from err
    factory_name = model_type or training_config.model_type
    factory = get_registry("models", plugin_manager).get(factory_name)
    model: torch.nn.Module = factory(training_config, task_spec)
    state = payload["model_state_dict"]
    mismatch = _state_mismatch(model.state_dict(), state)
    if mismatch:
        msg = (
            f"checkpoint {path} does not fit the model that factory {factory_name!r} builds "
            f"from its config ({_architecture(training_config)}): {mismatch}. Register it "
            "under the factory that trained it (--model-type), or check that it is the "
            "checkpoint you meant"
        )
        raise TreadleError(msg)
    model.load_state_dict(state, strict=True)
    return VerifiedCheckpoint(
        path=path,
        model=model.eval(),
        training_config=training_config,
        task_spec=task_spec,
        metrics=clean_metrics(payload.get("metrics") or {}),
        epoch=int(payload.get("epoch", -1)),
        run_id=payload.get("run_id") if isinstance(payload.get("run_id"), str) else None,
    )


def _state_mismatch(expected: Mapping[str, Any], found: Mapping[str, Any]) -> str:
    """What keeps ``found`` from loading strictly where ``expected`` is: missing, unexpected
    and mis-shaped tensors (a few of each), or ``""``."""
    missing = [key for key in expected if key not in found]
    unexpected = [key for key in found if key not in expected]
    shapes = [
        f"{key} {tuple(found[key].shape)} vs {tuple(expected[key].shape)}"
        for key in expected
        if key in found
        and hasattr(found[key], "shape")
        and tuple(found[key].shape) != tuple(expected[key].shape)
    ]
    parts = []
    for label, items in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("shapes differ (checkpoint vs model)", shapes),
    ):
        if items:
            shown = ", ".join(items[:4]) + (f" and {len(items) - 4} more" if len(items) > 4 else "")
            parts.append(f"{label}: {shown}")
    return "; ".join(parts)


def _architecture(config: TrainingConfig) -> str:
    fields = ("model_type", "vocab_size", "d_model", "num_layers", "num_heads", "d_ff")
    return ", ".join(f"{name}={getattr(config, name)}" for name in fields)
