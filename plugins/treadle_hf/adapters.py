"""PEFT adapters as configuration: wrapping, small checkpoints, merged exports.

``plugins.options.hf.peft = {"method": "lora", "r": 8, "target_modules": ["c_attn"]}`` wraps
the model with ``peft`` (any method ``peft`` knows: ``lora``, ``loha``, ``lokr``, ``ia3``, ...;
the other keys are its config's fields). ``peft`` freezes the base; the ``peft`` loss strategy
(:class:`treadle_losses.peft.PEFTAwareLoss`) recognises the model (it has ``peft_config``)
and checks at every step that only the adapters train.

Checkpoints hold the adapters only: the model's ``state_dict`` keeps the trainable tensors
and an ``_extra_state`` entry referencing the base (``hf.model``, ``hf.config``, where its
weights came from, the seed) with a fingerprint of the base weights. Loading rebuilds the base
from the same config and refuses adapters trained on a different base, naming both. Export
bundles get the adapters merged into the base (``merge_and_unload``): a plain model, no
``peft`` needed to run it.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping
from typing import Any

import torch

from treadle.errors import ConfigError, MissingDependencyError
from treadle_hf.models import HFModel

__all__ = ["AdapterModel", "base_fingerprint", "wrap_in_adapters"]

_EXTRA_STATE = "_extra_state"


def _import_peft() -> Any:
    try:
        import peft
    except ImportError as err:
        msg = f'plugins.options.hf.peft needs peft: pip install "treadle[peft]" ({err})'
        raise MissingDependencyError(msg) from err
    return peft


def wrap_in_adapters(
    model: torch.nn.Module, options: Mapping[str, Any], *, is_causal: bool
) -> torch.nn.Module:
    """``model`` inside a ``peft`` model of ``options["method"]``, its base frozen.

    :raises ConfigError: an unknown method, or fields its config does not take.
    """
    peft = _import_peft()
    fields = {key: value for key, value in options.items() if key != "method"}
    method = str(options["method"]).upper()
    config_classes: Mapping[str, Any] = peft.PEFT_TYPE_TO_CONFIG_MAPPING
    config_class = config_classes.get(method)
    if config_class is None:
        known = ", ".join(sorted(str(name).lower() for name in config_classes))
        msg = f"plugins.options.hf.peft: unknown method {options['method']!r}; peft knows {known}"
        raise ConfigError(msg)
    fields.setdefault("task_type", "CAUSAL_LM" if is_causal else "SEQ_CLS")
    if method == "LORA" and "fan_in_fan_out" not in fields and _has_conv1d(model):
        fields["fan_in_fan_out"] = True  # GPT-2's Conv1D stores weights transposed
    for key in ("target_modules", "modules_to_save", "layers_to_transform"):
        if isinstance(fields.get(key), tuple):
            fields[key] = list(fields[key])  # --set turns JSON lists into tuples
    try:
        config = config_class(**fields)
        return peft.get_peft_model(model, config)  # type: ignore[no-any-return]
    except (TypeError, ValueError) as err:
        msg = f"plugins.options.hf.peft does not fit {type(model).__name__}: {err}"
        raise ConfigError(msg) from err


def _has_conv1d(model: torch.nn.Module) -> bool:
    from transformers.pytorch_utils import Conv1D

    return any(isinstance(module, Conv1D) for module in model.modules())


def base_fingerprint(model: torch.nn.Module, adapter_names: set[str]) -> str:
    """A digest of the frozen base: names, shapes, dtypes and 16 sampled values per tensor.
    Cheap on any size of model, and different for a different seed or other weights."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        if name in adapter_names or not isinstance(tensor, torch.Tensor):
            continue
        flat = tensor.detach().reshape(-1)
        sample = torch.cat([flat[:8], flat[-8:]]).to("cpu", torch.float64)
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()


class AdapterModel(HFModel):
    """An :class:`HFModel` whose ``transformers`` model is wrapped in ``peft`` adapters.

    ``state_dict()`` holds the adapter tensors (those ``peft`` left trainable, a
    classifier head included) and ``_extra_state``, the base's reference and fingerprint;
    ``load_state_dict`` takes such a dict (strict about the adapters) and raises
    :class:`~treadle.errors.ConfigError` when its base is not this model's.
    """

    def __init__(self, model: torch.nn.Module, *, reference: Mapping[str, Any], is_causal: bool):
        super().__init__(model, reference=reference, is_causal=is_causal)
        trainable = {
            name for name, parameter in model.named_parameters() if parameter.requires_grad
        }
        self.adapter_names = {f"model.{name}" for name in trainable}
        self.fingerprint = base_fingerprint(model, trainable)
        self.register_state_dict_post_hook(_keep_adapters)  # type: ignore[no-untyped-call]
        self.register_load_state_dict_post_hook(  # type: ignore[no-untyped-call]
            _base_comes_from_reference
        )

    @property
    def peft_config(self) -> Any:
        """The ``peft`` configuration: marks this model as a peft model for the ``peft`` loss."""
        return self.model.peft_config

    def get_extra_state(self) -> dict[str, Any]:
        return {"base": _plain(self.reference), "base_fingerprint": self.fingerprint}

    def set_extra_state(self, state: Any) -> None:
        fingerprint = state.get("base_fingerprint") if isinstance(state, Mapping) else None
        if fingerprint != self.fingerprint:
            saved = state.get("base") if isinstance(state, Mapping) else None
            msg = (
                f"these adapters were trained on another base model: the checkpoint's base is "
                f"{saved!r} (fingerprint {str(fingerprint)[:12]}), this model's is "
                f"{self.reference!r} (fingerprint {self.fingerprint[:12]}). Build the model "
                f"from the same hf options and random_seed as the run that saved them."
            )
            raise ConfigError(msg)

    def for_export(self) -> torch.nn.Module:
        """A copy with the adapters merged into the base weights (``merge_and_unload``): a
        plain ``transformers`` model, as fast as the base and runnable without ``peft``."""
        copied: Any = copy.deepcopy(self.model)
        merged: torch.nn.Module = copied.merge_and_unload()
        return HFModel(merged, reference=self.reference, is_causal=self.is_causal).eval()


def _keep_adapters(
    module: torch.nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any
) -> None:
    assert isinstance(module, AdapterModel)
    kept = {f"{prefix}{name}" for name in module.adapter_names} | {f"{prefix}{_EXTRA_STATE}"}
    for key in [key for key in state_dict if key.startswith(prefix) and key not in kept]:
        del state_dict[key]


def _base_comes_from_reference(module: torch.nn.Module, incompatible_keys: Any) -> None:
    assert isinstance(module, AdapterModel)
    adapters = module.adapter_names
    missing = incompatible_keys.missing_keys
    # the base is rebuilt from the reference, not loaded: only missing adapters are missing
    missing[:] = [key for key in missing if _is_adapter(key, adapters)]


def _is_adapter(key: str, adapters: set[str]) -> bool:
    return any(key.endswith(name) for name in adapters)


def _plain(value: Any) -> Any:
    """Plain types only: checkpoints load with ``weights_only=True``."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
