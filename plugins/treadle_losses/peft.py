"""PEFT-aware loss: the task's loss, with a model preparation that trains adapters only."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from treadle.protocols import LossStrategy
from treadle_losses.inner import InnerLoss

__all__ = ["ADAPTER_PATTERNS", "PEFTAwareLoss"]

#: Parameter-name fragments that mark adapter parameters (LoRA's ``lora_A``/``lora_B``,
#: bottleneck adapters' ``adapter``).
ADAPTER_PATTERNS = ("lora_", "adapter")


class PEFTAwareLoss:
    """The task's loss for parameter-efficient fine-tuning (LoRA, adapters).

    The loss itself is the wrapped strategy's (``base``), unchanged. What this strategy adds
    happens in :meth:`prepare_model`, which the Trainer calls once before the first step,
    before it builds the optimizer:

    1. Adapter parameters are found: for a ``peft`` model (one with ``peft_config``), those
       ``peft`` left trainable; otherwise every parameter whose name contains one of
       ``adapter_patterns`` (``lora_``, ``adapter``).
    2. With ``base_model_frozen``, every other parameter gets ``requires_grad=False`` and the
       adapter parameters ``requires_grad=True``; the optimizer then holds adapters only.
       Without it, nothing is frozen and the whole model trains.
    3. If no parameter is left trainable, ``ValueError`` names the model and the patterns.
    4. ``adapter_scale`` is applied to the adapter branch where the model exposes one: a
       module attribute ``adapter_scale`` is set to it, and a ``scaling`` attribute (a number,
       or ``peft``'s per-adapter dict of ``lora_alpha / r``) of a module holding adapter
       sub-modules is multiplied by it (from its value at the first preparation, so preparing
       twice does not compound). A scale other than 1.0 that no module exposes is an error.

    Afterwards every training call of :meth:`compute_loss` (gradients enabled) checks that no
    frozen parameter was unfrozen or holds a gradient, and raises ``RuntimeError`` naming
    them: a frozen base must stay frozen.

    :param base_model_frozen: freeze everything but the adapters.
    :param adapter_scale: multiplier of the adapter branch, >= 0.
    :param base: the task loss: a registered name, a strategy instance, or None for
        classification (2-D logits) or causal language modeling (3-D logits).
    :param base_options: options for the named or default task loss.
    :param adapter_patterns: name fragments that mark adapter parameters.
    """

    def __init__(
        self,
        base_model_frozen: bool = True,
        adapter_scale: float = 1.0,
        base: str | LossStrategy | None = None,
        base_options: Mapping[str, Any] | None = None,
        adapter_patterns: Sequence[str] = ADAPTER_PATTERNS,
    ) -> None:
        if not math.isfinite(adapter_scale) or adapter_scale < 0:
            msg = f"PEFTAwareLoss: adapter_scale must be a finite number >= 0: {adapter_scale}"
            raise ValueError(msg)
        if not adapter_patterns:
            msg = "PEFTAwareLoss: adapter_patterns must name at least one fragment ('lora_')"
            raise ValueError(msg)
        self.base_model_frozen = base_model_frozen
        self.adapter_scale = float(adapter_scale)
        self.adapter_patterns = tuple(adapter_patterns)
        self.inner = InnerLoss(base, base_options or {}, "PEFTAwareLoss")
        self._frozen: list[tuple[str, torch.nn.Parameter]] = []
        self._original_scaling: dict[int, Any] = {}

    def __repr__(self) -> str:
        return (
            f"PEFTAwareLoss(base_model_frozen={self.base_model_frozen}, "
            f"adapter_scale={self.adapter_scale}, base={self.inner!r})"
        )

    # -- the model ---------------------------------------------------------------------------

    def prepare_model(self, model: torch.nn.Module) -> None:
        """Freeze the base, keep adapters trainable, apply ``adapter_scale`` (see the class).

        :raises ValueError: nothing trainable is left, or ``adapter_scale`` has nowhere to go.
        """
        adapters = self.adapter_names(model)
        self._frozen = []
        if self.base_model_frozen:
            for name, parameter in model.named_parameters():
                is_adapter = name in adapters
                parameter.requires_grad_(is_adapter)
                if not is_adapter:
                    parameter.grad = None
                    self._frozen.append((name, parameter))
        trainable = [name for name, p in model.named_parameters() if p.requires_grad]
        if not trainable:
            sample = ", ".join(name for name, _ in list(model.named_parameters())[:5])
            msg = (
                f"PEFTAwareLoss left {type(model).__name__} with no trainable parameter: no "
                f"parameter name contains {' or '.join(map(repr, self.adapter_patterns))} "
                f"(names: {sample or 'none'}...). Add adapters (LoRA) to the model, pass "
                f"adapter_patterns=... naming yours, or base_model_frozen=False."
            )
            raise ValueError(msg)
        self._apply_adapter_scale(model)

    def adapter_names(self, model: torch.nn.Module) -> set[str]:
        """Names of the adapter parameters of ``model`` (see the class docstring)."""
        if hasattr(model, "peft_config"):
            # a peft model: peft already marked exactly the adapter parameters trainable
            return {name for name, p in model.named_parameters() if p.requires_grad}
        return {
            name
            for name, _ in model.named_parameters()
            if any(pattern in name for pattern in self.adapter_patterns)
        }

    def _apply_adapter_scale(self, model: torch.nn.Module) -> None:
        applied = 0
        for module in model.modules():
            if isinstance(getattr(module, "adapter_scale", None), (int, float)):
                setattr(module, "adapter_scale", self.adapter_scale)  # noqa: B010
                applied += 1
            elif hasattr(module, "scaling") and self._holds_adapters(module):
                original = self._original_scaling.setdefault(id(module), module.scaling)
                if isinstance(original, Mapping):
                    scaled = {key: value * self.adapter_scale for key, value in original.items()}
                    setattr(module, "scaling", scaled)  # noqa: B010
                    applied += 1
                elif isinstance(original, (int, float)):
                    setattr(module, "scaling", original * self.adapter_scale)  # noqa: B010
                    applied += 1
        if applied == 0 and self.adapter_scale != 1.0:
            msg = (
                f"PEFTAwareLoss: adapter_scale={self.adapter_scale} has no effect on "
                f"{type(model).__name__}: no module has an 'adapter_scale' attribute or a "
                f"'scaling' next to adapter sub-modules. Expose one, or leave adapter_scale=1.0."
            )
            raise ValueError(msg)

    def _holds_adapters(self, module: torch.nn.Module) -> bool:
        return any(
            pattern in name
            for name, _ in module.named_children()
            for pattern in self.adapter_patterns
        )

    def check_frozen(self) -> None:
        """Raise ``RuntimeError`` naming frozen parameters that were unfrozen or hold a
        gradient since :meth:`prepare_model`."""
        leaked = [
            name
            for name, parameter in self._frozen
            if parameter.requires_grad or parameter.grad is not None
        ]
        if leaked:
            shown = ", ".join(leaked[:5]) + (
                f" and {len(leaked) - 5} more" if len(leaked) > 5 else ""
            )
            msg = (
                f"PEFTAwareLoss froze the base model, but {shown} were unfrozen or received a "
                f"gradient since prepare_model. Something set requires_grad on base parameters "
                f"(a callback, a second optimizer); freeze them again or pass "
                f"base_model_frozen=False to train the whole model."
            )
            raise RuntimeError(msg)

    # -- the loss ----------------------------------------------------------------------------

    def validate_inputs(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """The task loss's checks."""
        self.inner.for_logits(logits).validate_inputs(logits, labels)

    def compute_loss(
        self, logits: torch.Tensor, labels: torch.Tensor, inputs: Mapping[str, Any] | None = None
    ) -> torch.Tensor:
        """The task loss, after checking in training that the frozen base stayed frozen.

        :raises RuntimeError: a frozen parameter was unfrozen or received a gradient.
        """
        if self._frozen and torch.is_grad_enabled():
            self.check_frozen()
        strategy = self.inner.for_logits(logits)
        strategy.validate_inputs(logits, labels)
        loss: torch.Tensor = strategy.compute_loss(logits, labels, inputs)
        return loss

    def count_items(
        self, labels: torch.Tensor, inputs: Mapping[str, Any] | None = None
    ) -> int | float:
        """The task loss's ``count_items`` (the batch size if it has none)."""
        return self.inner.count_items(labels, inputs)
