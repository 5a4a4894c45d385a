"""The hf plugin's options, read from ``plugins.options["hf"]``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from treadle.errors import ConfigError

if TYPE_CHECKING:
    from treadle.config import PluginsConfig

__all__ = ["HFOptions", "read_options"]


@attrs.frozen(kw_only=True)
class HFOptions:
    """What ``model_type = "hf"`` builds.

    :ivar model: an architecture (``gpt2``, ``bert``, ``llama``: any ``model_type`` of
        ``transformers``' ``AutoConfig``), built from its config with random weights; or a
        local folder written by ``save_pretrained``, whose weights are loaded; or a hub name
        (``openai-community/gpt2``), loaded from the local cache or, online, downloaded.
    :ivar config: config fields to set (``{"n_layer": 2, "n_embd": 64, "n_head": 2}``). For an
        architecture, ``vocab_size`` defaults to the run's (checked against the data's
        tokenizer), the position table to ``max_seq_len``, ``pad_token_id`` to the task's.
    :ivar peft: a PEFT adapter to wrap the model in: ``{"method": "lora", "r": 8,
        "target_modules": ["c_attn"]}``; the other keys are the method's config fields
        (``lora_alpha``, ``lora_dropout``, ...). ``None``: the whole model trains.
    :ivar attn_implementation: ``eager`` (default: exports to ONNX everywhere) or ``sdpa``.
    """

    model: str
    config: Mapping[str, Any] = attrs.field(factory=dict)
    peft: Mapping[str, Any] | None = None
    attn_implementation: str = "eager"


_KEYS = ("model", "config", "peft", "attn_implementation")


def read_options(plugins: PluginsConfig) -> HFOptions:
    """``plugins.options.hf`` as :class:`HFOptions`.

    :raises ConfigError: no ``model``, an unknown key, or a value of the wrong type; the
        message says what to set.
    """
    options = plugins.options_for("hf", _KEYS)
    model = options.get("model")
    if not isinstance(model, str) or not model:
        msg = (
            "model_type 'hf' needs plugins.options.hf.model: an architecture such as 'gpt2' or "
            "'bert', a local folder, or a hub name (treadle train --set hf.model=gpt2)"
        )
        raise ConfigError(msg)
    config = options.get("config", {})
    if not isinstance(config, Mapping):
        msg = f"plugins.options.hf.config must be a table of config fields: {config!r}"
        raise ConfigError(msg)
    peft = options.get("peft")
    if peft is not None and (
        not isinstance(peft, Mapping) or not isinstance(peft.get("method"), str)
    ):
        msg = (
            f"plugins.options.hf.peft must be a table with a 'method' (e.g. {{\"method\": "
            f'"lora", "r": 8, "target_modules": ["c_attn"]}}): {peft!r}'
        )
        raise ConfigError(msg)
    attention = options.get("attn_implementation", "eager")
    if attention not in ("eager", "sdpa"):
        msg = f"plugins.options.hf.attn_implementation must be 'eager' or 'sdpa': {attention!r}"
        raise ConfigError(msg)
    return HFOptions(model=model, config=dict(config), peft=peft, attn_implementation=attention)
