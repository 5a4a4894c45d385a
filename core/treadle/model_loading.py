"""Registry reference to loaded model: parse a model reference (``42``, ``gpt:1.0.0``,
``:1.0.0``, ``@production``) and rebuild the model a registered checkpoint holds.

``treadle export``, ``treadle registry`` and the ``evaluation``, ``export``, ``training`` and
``retraining`` job types load registered models through here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from treadle.errors import ConfigError, TreadleError

if TYPE_CHECKING:
    import torch

    from treadle.config import TrainingConfig
    from treadle.plugins import PluginManager
    from treadle.task import TaskSpec

__all__ = ["MODEL_REFERENCE_FORMS", "load_checkpoint_model", "parse_model_ref"]

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
