"""The loss face of the core: ``LossInputs``, ``ModelOutput`` and the loss strategy registry.

Strategies themselves are plugins (the five built-ins live in ``treadle_losses``); this module
holds what every strategy and every caller share::

    from treadle.losses import LossInputs, ModelOutput, get_loss_strategy

    strategy = get_loss_strategy("language_modeling")
    output = ModelOutput.from_raw(model(input_ids=input_ids))
    loss = strategy.compute_loss(output.logits, input_ids, LossInputs(pad_token_id=0))

Reduction contract (every built-in follows it; :func:`reduce_loss` implements it): a strategy
sums the per-item losses of the items that count, then divides by ``num_items_in_batch`` when
the inputs carry it (the items of a whole accumulated optimizer step, from the strategy's
``count_items``), otherwise by the number of items counted in this batch. So N accumulated
micro-batches produce exactly the gradients of one batch N times their size.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypedDict

import attrs
import torch

from treadle.registry_face import RegistryFace

if TYPE_CHECKING:
    from treadle.plugins import PluginManager
    from treadle.protocols import LossStrategy

__all__ = [
    "LossInputs",
    "LossStrategyRegistry",
    "ModelOutput",
    "get_loss_strategy",
    "num_items_of",
    "reduce_loss",
]


class LossInputs(TypedDict, total=False):
    """What a loss may need besides logits and labels; every key is optional.

    :ivar logits: the model's logits (the same tensor as ``compute_loss``'s argument).
    :ivar labels: the ground truth (likewise).
    :ivar attention_mask: ``(batch, seq_len)``, 1 on real tokens and 0 on padding.
    :ivar pad_token_id: id of the padding token, excluded from token losses.
    :ivar pixel_values: the input images, for strategies that look at them.
    :ivar class_weights: ``(num_classes,)`` float, one weight per class.
    :ivar num_items_in_batch: the items that count (tokens, samples, pixels) in the whole
        optimizer step; given, a loss is ``sum / num_items_in_batch`` instead of a mean.
    """

    logits: torch.Tensor
    labels: torch.Tensor
    attention_mask: torch.Tensor | None
    pad_token_id: int | None
    pixel_values: torch.Tensor | None
    class_weights: torch.Tensor | None
    num_items_in_batch: int | float | torch.Tensor | None


@attrs.frozen
class ModelOutput:
    """A model's output, parsed: the logits, a loss the model computed itself, and the rest.

    :ivar logits: the model's logits.
    :ivar loss: a loss computed by the model (Hugging Face models do, given labels), or None.
    :ivar extra: other named outputs (hidden states, past key values ...).
    """

    logits: torch.Tensor
    loss: torch.Tensor | None = None
    extra: Mapping[str, Any] = attrs.field(factory=dict)

    @classmethod
    def from_raw(cls, raw: object) -> ModelOutput:
        """Parse what a model returned.

        Accepts a tensor (the logits), a tuple or list whose first item is the logits, a
        mapping with ``logits`` (and optionally ``loss``), or an object with a ``.logits``
        attribute such as a Hugging Face ``ModelOutput``; a model-computed ``loss`` passes
        through.

        :raises TypeError: for anything else, naming its type.
        """
        if isinstance(raw, ModelOutput):
            return raw
        if isinstance(raw, torch.Tensor):
            return cls(logits=raw)
        if isinstance(raw, Mapping):
            if "logits" not in raw:
                msg = (
                    f"The model returned a mapping without 'logits' (keys: "
                    f"{', '.join(map(str, raw)) or 'none'}); return the logits under 'logits'."
                )
                raise TypeError(msg)
            rest = {str(key): value for key, value in raw.items() if key not in ("logits", "loss")}
            return cls(
                logits=_as_logits(raw["logits"], "raw['logits']"), loss=raw.get("loss"), extra=rest
            )
        if isinstance(raw, (tuple, list)):
            if not raw:
                msg = "The model returned an empty tuple; return the logits first."
                raise TypeError(msg)
            rest = {f"output_{index}": value for index, value in enumerate(raw) if index > 0}
            return cls(logits=_as_logits(raw[0], "the first item"), extra=rest)
        logits = getattr(raw, "logits", None)
        if logits is not None:
            return cls(logits=_as_logits(logits, ".logits"), loss=getattr(raw, "loss", None))
        msg = (
            f"Cannot read logits from a model output of type {type(raw).__qualname__}: return a "
            f"tensor, a tuple whose first item is the logits, a dict with 'logits', or an "
            f"object with a .logits attribute."
        )
        raise TypeError(msg)


def _as_logits(value: object, where: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        msg = f"The model output's logits ({where}) are a {type(value).__qualname__}, not a tensor."
        raise TypeError(msg)
    return value


# -- reduction ------------------------------------------------------------------------------


def num_items_of(inputs: Mapping[str, Any] | None) -> int | float | torch.Tensor | None:
    """The ``num_items_in_batch`` of ``inputs`` (a :class:`LossInputs` or a batch), or None."""
    if inputs is None:
        return None
    value: int | float | torch.Tensor | None = inputs.get("num_items_in_batch")
    return value


def reduce_loss(
    loss_sum: torch.Tensor,
    counted: torch.Tensor | int | float,
    inputs: Mapping[str, Any] | None,
    *,
    strategy: str,
) -> torch.Tensor:
    """Divide a summed loss by ``num_items_in_batch`` when ``inputs`` carry it, else by
    ``counted`` (the items that count in this batch): the reduction contract above.

    A micro-batch whose items are all masked then contributes 0 to an accumulated step; a
    division by zero items is refused instead of returning NaN.

    :param loss_sum: 0-d float tensor, the sum of the per-item losses that count.
    :param counted: how many items (or how much class weight) that sum covers.
    :param strategy: the strategy's name, for the error message.
    :raises ValueError: nothing counts (the denominator is 0).
    """
    num_items = num_items_of(inputs)
    if num_items is not None:
        if _is_zero(num_items):
            msg = (
                f"{strategy}: num_items_in_batch is 0, so no item of the optimizer step counts "
                f"(every label is padding or ignored); check the collator's labels and masks."
            )
            raise ValueError(msg)
        return loss_sum / num_items
    if _is_zero(counted):
        msg = (
            f"{strategy}: every label in the batch is padding, masked or ignored, so the loss "
            f"would be 0/0 (NaN). Drop empty samples before batching, or check the collator's "
            f"labels and attention_mask."
        )
        raise ValueError(msg)
    return loss_sum / counted


def _is_zero(value: torch.Tensor | int | float) -> bool:
    if isinstance(value, torch.Tensor):
        return bool(value == 0)
    return value == 0


# -- registry face --------------------------------------------------------------------------


class LossStrategyRegistry(RegistryFace["LossStrategy"]):
    """The loss strategies registered by plugins and at runtime, by name.

    A thin face over ``get_registry("losses", plugin_manager)``: a runtime ``register`` is seen
    by every lookup through the same plugin manager (the process-wide one by default)::

        registry = LossStrategyRegistry()
        registry.register("weighted-ce", CustomWeightedLoss(weights))
        strategy = registry.get("weighted-ce")

    ``get(name, **options)`` builds a registered class with ``options`` and returns a
    registered instance as it is; ``register`` checks for ``compute_loss`` and
    ``validate_inputs``. ``names()``, ``entry(name)`` (the object and the plugin that
    registered it) and ``name in registry`` work as on every registry face.

    :param plugin_manager: whose registry to use; default the process-wide manager.
    """

    kind = "losses"


def get_loss_strategy(
    name: str, plugin_manager: PluginManager | None = None, **options: Any
) -> LossStrategy:
    """The loss strategy registered as ``name``, built with ``options``
    (``get_loss_strategy("classification", label_smoothing=0.1)``).

    :raises UnknownNameError: nothing is registered under ``name``; the message lists what is.
    """
    return LossStrategyRegistry(plugin_manager).get(name, **options)
