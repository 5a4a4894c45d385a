"""The ``hf`` model factory: a ``transformers`` causal LM or sequence classifier, by name.

``model_type = "hf"`` with ``plugins.options.hf``::

    treadle train --set model_type=hf --set hf.model=gpt2 \\
        --set hf.config='{"n_layer": 2, "n_embd": 64, "n_head": 2}'

A language-modeling task gets ``AutoModelForCausalLM``, a classification task
``AutoModelForSequenceClassification`` with the task's classes. An architecture name is built
from its config (``AutoConfig.for_model``, random weights seeded by ``random_seed``, nothing
downloaded) with the run's vocabulary: ``vocab_size``, which the data module checks against
its tokenizer, the position table sized to ``max_seq_len``, and the task's pad id. A local
folder loads its weights (``from_pretrained``). A hub name loads from the cache, and fails
within a second when the process is offline.

The factory returns :class:`HFModel`, which takes the batch's ``input_ids`` and
``attention_mask`` and returns the logits. With ``hf.peft`` it is an :class:`AdapterModel`
(see :mod:`treadle_hf.adapters`): its checkpoints hold the adapters and a reference to the
base, and its export merges the adapters into the base first.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from treadle.errors import ConfigError, MissingDependencyError
from treadle_hf.options import HFOptions, read_options

if TYPE_CHECKING:
    from treadle.config import TrainingConfig
    from treadle.task import TaskSpec

__all__ = ["HFModel", "build_hf_model", "import_transformers"]

_CLASSIFICATION = ("classification", "multilabel_classification")


def import_transformers() -> Any:
    """``transformers``, or the pip command that installs it."""
    try:
        import transformers
    except ImportError as err:
        msg = f"model_type 'hf' needs transformers: pip install \"treadle[hf]\" ({err})"
        raise MissingDependencyError(msg) from err
    return transformers


class HFModel(torch.nn.Module):
    """A ``transformers`` model as treadle calls it: ``model(input_ids=..., attention_mask=...)``
    returning the logits, ``(batch, seq_len, vocab)`` for a causal LM, ``(batch, classes)``
    for a classifier; other batch keys are ignored.

    :param model: the ``transformers`` model (or a ``peft`` model wrapping one).
    :param reference: how it was built (``hf.model``, ``hf.config``, where the weights came
        from, the seed): stored with the bundle's model config and adapter checkpoints.
    :param is_causal: a causal LM (``use_cache=False`` is passed: training needs no cache).
    """

    def __init__(self, model: torch.nn.Module, *, reference: Mapping[str, Any], is_causal: bool):
        super().__init__()
        self.model = model
        self.reference = dict(reference)
        self.is_causal = is_causal

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **unused: Any
    ) -> torch.Tensor:
        extra = {"use_cache": False} if self.is_causal else {}
        output = self.model(input_ids=input_ids, attention_mask=attention_mask, **extra)
        logits: torch.Tensor = output.logits
        return logits

    def for_export(self) -> torch.nn.Module:
        """The module an export bundle writes: this model itself."""
        return self


def build_hf_model(training_config: TrainingConfig, task_spec: TaskSpec) -> HFModel:
    """The model ``plugins.options.hf`` names, for ``task_spec`` (see the module docstring).

    :raises ConfigError: no or bad ``hf`` options, an unknown architecture, a task that is
        neither language modeling nor classification, a hub name while offline.
    :raises MissingDependencyError: transformers (or peft, for ``hf.peft``) is not installed.
    """
    options = read_options(training_config.plugins)
    transformers = import_transformers()
    task_fields: dict[str, Any] = {}
    if task_spec.task_type == "language_modeling":
        auto_class = transformers.AutoModelForCausalLM
    elif task_spec.task_type in _CLASSIFICATION and task_spec.num_classes:
        auto_class = transformers.AutoModelForSequenceClassification
        task_fields["num_labels"] = task_spec.num_classes
        if task_spec.task_type == "multilabel_classification":
            task_fields["problem_type"] = "multi_label_classification"
    else:
        msg = (
            f"model_type 'hf' builds causal language models and sequence classifiers; task "
            f"{task_spec.name!r} is {task_spec.task_type!r} ({task_spec.modality})"
        )
        raise ConfigError(msg)
    # random weights and adapters are a function of the config alone: loading a checkpoint
    # (resume, export, the registry) rebuilds the very same base, whatever ran before
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(training_config.random_seed)
        return _assemble(transformers, auto_class, options, training_config, task_spec, task_fields)


def _assemble(
    transformers: Any,
    auto_class: Any,
    options: HFOptions,
    training_config: TrainingConfig,
    task_spec: TaskSpec,
    task_fields: Mapping[str, Any],
) -> HFModel:
    model, source = _build(
        transformers, auto_class, options, training_config, task_spec, task_fields
    )
    reference = {
        "model": options.model,
        "config": dict(options.config),
        "source": source,
        "random_seed": training_config.random_seed,
        "class": type(model).__name__,
    }
    is_causal = task_spec.task_type == "language_modeling"
    if options.peft is not None:
        from treadle_hf.adapters import AdapterModel, wrap_in_adapters

        wrapped = wrap_in_adapters(model, options.peft, is_causal=is_causal)
        return AdapterModel(
            wrapped, reference={**reference, "peft": dict(options.peft)}, is_causal=is_causal
        )
    return HFModel(model, reference=reference, is_causal=is_causal)


def _build(
    transformers: Any,
    auto_class: Any,
    options: HFOptions,
    training_config: TrainingConfig,
    task_spec: TaskSpec,
    task_fields: Mapping[str, Any],
) -> tuple[torch.nn.Module, str]:
    """The model and where its weights came from: ``config``, ``folder`` or ``hub``."""
    name = options.model
    attention = {"attn_implementation": options.attn_implementation}
    if name in transformers.CONFIG_MAPPING:
        config = _architecture_config(transformers, options, training_config, task_spec)
        for key, value in task_fields.items():
            setattr(config, key, value)
        return auto_class.from_config(config, **attention), "config"
    folder = os.path.expanduser(name)
    if os.path.isdir(folder):
        fields = {**options.config, **task_fields}
        return auto_class.from_pretrained(folder, **fields, **attention), "folder"
    if "/" not in name:
        known = sorted(transformers.CONFIG_MAPPING.keys())
        close = [known_name for known_name in known if known_name.startswith(name[:3])][:8]
        msg = (
            f"hf.model {name!r} is neither an architecture of transformers "
            f"{transformers.__version__} (e.g. {', '.join(close or known[:8])}), nor a local "
            f"folder, nor a hub name (owner/name)"
        )
        raise ConfigError(msg)
    from treadle_hf.hub import check_hub_model

    check_hub_model(name)
    fields = {**options.config, **task_fields}
    return auto_class.from_pretrained(name, **fields, **attention), "hub"


def _architecture_config(
    transformers: Any, options: HFOptions, training_config: TrainingConfig, task_spec: TaskSpec
) -> Any:
    """``AutoConfig.for_model`` with the run's vocabulary, sequence length and pad id, unless
    ``hf.config`` sets them (under any of the config's names for them)."""
    try:
        config = transformers.AutoConfig.for_model(options.model, **options.config)
    except (TypeError, ValueError) as err:
        msg = f"hf.config does not fit architecture {options.model!r}: {err}"
        raise ConfigError(msg) from err
    aliases: Mapping[str, str] = getattr(config, "attribute_map", {})
    given = {aliases.get(key, key) for key in options.config}
    vocab_size = training_config.vocab_size
    defaults = {
        "vocab_size": vocab_size,
        "max_position_embeddings": training_config.max_seq_len,
        "pad_token_id": task_spec.pad_token_id,
    }
    for key, value in defaults.items():
        if aliases.get(key, key) not in given and hasattr(config, key):
            setattr(config, key, value)
    size = int(config.vocab_size)
    for key in ("bos_token_id", "eos_token_id"):
        token = getattr(config, key, None)
        if key not in options.config and isinstance(token, int) and not 0 <= token < size:
            setattr(config, key, None)  # gpt2's 50256 outside a byte vocabulary
    if not 0 <= task_spec.pad_token_id < size:
        msg = (
            f"hf: the pad_token_id {task_spec.pad_token_id} of task {task_spec.name!r} lies "
            f"outside the vocabulary (vocab_size {size})"
        )
        raise ConfigError(msg)
    return config
