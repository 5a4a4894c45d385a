"""The ``pytorch`` export format: the state dict plus a recipe that rebuilds the model with
a factory of the ``models`` registry. Loads with ``torch.load(..., weights_only=True)``."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from treadle.export import torch_requirement

if TYPE_CHECKING:
    from treadle.export import ExportRequest
    from treadle.plugins import PluginManager

__all__ = ["FORMAT_TAG", "PyTorchExporter", "load_pytorch_artifact", "rebuild_model"]

FORMAT_TAG = "treadle.pytorch"
FORMAT_VERSION = 1


class PyTorchExporter:
    """Writes ``model.pytorch.pt``: ``{"format", "format_version", "state_dict", "recipe"}``,
    plain types and tensors only, so ``torch.load(path, weights_only=True)`` reads it.

    The recipe names the model's class and its ``model_type`` (a factory in the ``models``
    registry) with the training config and task spec that factory takes. Without treadle,
    load the state dict into your own instance of the class.
    """

    artifact_name = "model.pytorch.pt"
    runtime = ""
    requirements: Sequence[str] = (torch_requirement(),)

    def export(self, request: ExportRequest) -> None:
        inner = request.user_model
        described = request.metadata.get("model", {})
        payload = {
            "format": FORMAT_TAG,
            "format_version": FORMAT_VERSION,
            "state_dict": {
                key: value.detach().cpu().clone() for key, value in inner.state_dict().items()
            },
            "recipe": {
                "model_class": described.get("class")
                or f"{type(inner).__module__}.{type(inner).__qualname__}",
                "model_type": described.get("model_type"),
                "training_config": request.metadata.get("training_config"),
                "task_spec": request.metadata.get("task_spec"),
                "input_names": list(request.input_names),
            },
        }
        torch.save(payload, str(request.path))

    def load(self, path: Path) -> Callable[..., torch.Tensor]:
        """The rebuilt model taking positional inputs.

        :raises NotImplementedError: the model cannot be rebuilt from its recipe (see
            :func:`rebuild_model`), or the weights do not fit the model rebuilt; the bundle
            then keeps the artifact with ``verified: false`` and this reason.
        """
        from treadle.export import PositionalModel

        payload = _read(path)
        model = _rebuild_with_weights(payload, None)
        positional = PositionalModel(model, tuple(payload["recipe"]["input_names"])).eval()

        def run(*tensors: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                result: torch.Tensor = positional(*tensors)
            return result

        return run


def _read(path: Path) -> dict[str, Any]:
    payload = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_TAG:
        msg = f"{path} is not a treadle 'pytorch' artifact (no {FORMAT_TAG!r} format tag)"
        raise ValueError(msg)
    return payload


def _rebuild_with_weights(
    payload: Mapping[str, Any], plugin_manager: PluginManager | None
) -> torch.nn.Module:
    recipe = payload["recipe"]
    model = rebuild_model(recipe, plugin_manager)
    try:
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, KeyError, TypeError) as err:
        msg = (
            f"the weights do not fit the model factory {recipe.get('model_type')!r} builds "
            f"({err}); load the state dict into a {recipe.get('model_class')} yourself"
        )
        raise NotImplementedError(msg) from err
    return model.eval()


def rebuild_model(
    recipe: Mapping[str, Any], plugin_manager: PluginManager | None = None
) -> torch.nn.Module:
    """A fresh model built as the recipe says, with its factory's initial weights.

    :raises NotImplementedError: the recipe names no registered factory, its configs do not
        load, the factory cannot build a model from them (a ``model_type`` that does not fit
        the task, for a model built by hand), or it builds another class than the one
        exported.
    """
    from treadle.config import TrainingConfig
    from treadle.errors import TreadleError
    from treadle.plugins import get_registry
    from treadle.task import TaskSpec

    model_type = recipe.get("model_type")
    models = get_registry("models", plugin_manager)
    if not model_type or model_type not in models:
        msg = (
            f"no factory in the models registry for model_type {model_type!r}; load the "
            f"state dict into a {recipe.get('model_class')} yourself"
        )
        raise NotImplementedError(msg)
    try:
        training_config = TrainingConfig.from_dict(recipe["training_config"])
        task_spec = TaskSpec.from_dict(recipe["task_spec"])
    except (TreadleError, TypeError, KeyError) as err:
        msg = f"the recipe's configs do not load ({err}); cannot rebuild the model"
        raise NotImplementedError(msg) from err
    try:
        model: torch.nn.Module = models.get(model_type)(training_config, task_spec)
    except Exception as err:  # a plugin's factory: whatever it raises, the model can't be rebuilt
        msg = (
            f"factory {model_type!r} cannot build a model from the recipe "
            f"({type(err).__name__}: {err}); load the state dict into a "
            f"{recipe.get('model_class')} yourself"
        )
        raise NotImplementedError(msg) from err
    built = f"{type(model).__module__}.{type(model).__qualname__}"
    if built != recipe.get("model_class"):
        msg = (
            f"factory {model_type!r} builds {built}, but the artifact holds a "
            f"{recipe.get('model_class')}; load its state dict into that class yourself"
        )
        raise NotImplementedError(msg)
    return model


def load_pytorch_artifact(
    path: str | Path, plugin_manager: PluginManager | None = None
) -> torch.nn.Module:
    """Rebuild the model of a ``model.pytorch.pt`` artifact and load its weights (eval mode).

    :raises NotImplementedError: the model cannot be rebuilt from its recipe (see
        :func:`rebuild_model`) or the weights do not fit it;
        ``torch.load(path, weights_only=True)["state_dict"]`` still gives the weights.
    :raises ValueError: the file is not such an artifact.
    """
    return _rebuild_with_weights(_read(Path(path)), plugin_manager)
