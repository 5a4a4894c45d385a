"""Conformance checks for model factories, treadle's and any plugin's.

Call :func:`check_model_factory` with the registered factory, a config and a task::

    from treadle.config import TrainingConfig
    from treadle.task import TaskSpec
    from treadle.testing.models import check_model_factory
    from acme_treadle.models import build_resnet


    def test_resnet_factory_conforms(plugin_manager):
        task = TaskSpec.vision_tiny()
        check_model_factory(build_resnet, TrainingConfig(model_type="acme_resnet"), task)

The batch is :func:`make_model_batch`'s for the task (or the one you pass), as a collator makes
it: the model gets every key but ``labels`` as a keyword argument. The loss is the task's, from
the ``losses`` registry of ``plugin_manager`` (the installed plugins by default). The rules:

``builds``
    ``factory(training_config, task_spec)`` returns a ``torch.nn.Module``.
``forward takes the batch``
    ``model(**batch)`` without ``labels`` returns logits (a tensor, or anything
    :meth:`treadle.losses.ModelOutput.from_raw` reads) of floats, one row per sample.
``trains one step``
    The task's loss on them is finite, its gradient reaches the parameters (finite, not all
    zero), and an optimizer step changes them.
``eval is deterministic``
    In eval mode two forward passes give equal outputs (export and validation rely on it).
``checkpoint round trip``
    ``state_dict()`` survives ``torch.save`` and ``torch.load(weights_only=True)`` (as
    treadle's checkpoints load) into a new model from the same factory, which then gives the
    same outputs.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch

from treadle.testing.report import ConformanceReport, Rule, RuleRunner

if TYPE_CHECKING:
    from treadle.config import TrainingConfig
    from treadle.plugins import PluginManager
    from treadle.task import TaskSpec

__all__ = ["RULES", "check_model_factory", "make_model_batch"]

#: The rules :func:`check_model_factory` enforces, in order.
RULES = (
    Rule("builds", "factory(training_config, task_spec) returns a torch.nn.Module"),
    Rule("forward takes the batch", "model(**batch) without labels returns float logits"),
    Rule(
        "trains one step",
        "the task's loss is finite, its gradient reaches the parameters, a step changes them",
    ),
    Rule("eval is deterministic", "two forward passes in eval mode give equal outputs"),
    Rule(
        "checkpoint round trip",
        "state_dict() loads with weights_only=True into a new model giving the same outputs",
    ),
)

_BATCH_SIZE = 4


def make_model_batch(
    task_spec: TaskSpec, training_config: TrainingConfig, *, batch_size: int = _BATCH_SIZE
) -> dict[str, torch.Tensor]:
    """A seeded batch for ``task_spec`` as the built-in collators make it: ``input_ids`` and
    ``attention_mask`` (right padding) for text, ``features`` for tabular tasks (width
    ``preprocessing_config["num_features"]``), ``pixel_values`` for vision (channels and
    size from ``preprocessing_config``, else 3 x 8 x 8); ``labels`` as the task type takes
    them (-100 on padding for language modeling).

    :raises ValueError: a task this function cannot make a batch for (sequence to sequence,
        or an unknown modality): pass a batch of your own.
    """
    generator = torch.Generator().manual_seed(0)
    batch: dict[str, torch.Tensor] = {}
    preprocessing = dict(task_spec.preprocessing_config or {})
    if task_spec.task_type == "sequence_to_sequence":
        msg = "make_model_batch makes no sequence-to-sequence batch: pass batch= to the check"
        raise ValueError(msg)
    if task_spec.modality == "text":
        task_length = task_spec.max_seq_len or training_config.max_seq_len
        length = max(2, min(16, task_length, training_config.max_seq_len))
        vocab = max(4, min(training_config.vocab_size, 259))
        ids = torch.randint(3, vocab, (batch_size, length), generator=generator)
        lengths = torch.tensor([length - (row % 3) for row in range(batch_size)])
        mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
        pad = task_spec.pad_token_id if task_spec.pad_token_id is not None else 0
        batch["input_ids"] = ids.masked_fill(mask == 0, pad)
        batch["attention_mask"] = mask
        if task_spec.task_type == "language_modeling":
            batch["labels"] = batch["input_ids"].masked_fill(mask == 0, -100)
            return batch
    elif task_spec.modality == "tabular":
        width = int(preprocessing.get("num_features", 4))
        batch["features"] = torch.randn(batch_size, width, generator=generator)
    elif task_spec.modality == "vision":
        height, width = preprocessing.get("image_size", (8, 8))
        channels = int(preprocessing.get("num_channels", preprocessing.get("channels", 3)))
        batch["pixel_values"] = torch.randn(
            batch_size, channels, int(height), int(width), generator=generator
        )
    else:
        msg = f"make_model_batch knows no modality {task_spec.modality!r}: pass batch="
        raise ValueError(msg)
    classes = int(task_spec.num_classes or 2)
    if task_spec.task_type == "multilabel_classification":
        batch["labels"] = torch.randint(0, 2, (batch_size, classes), generator=generator).float()
    else:
        batch["labels"] = torch.randint(0, classes, (batch_size,), generator=generator)
    return batch


def check_model_factory(
    factory: Callable[[TrainingConfig, TaskSpec], torch.nn.Module],
    training_config: TrainingConfig,
    task_spec: TaskSpec,
    *,
    batch: Mapping[str, torch.Tensor] | None = None,
    plugin_manager: PluginManager | None = None,
    name: str = "model",
) -> ConformanceReport:
    """Run the rules above on models from ``factory``.

    :param batch: a batch with ``labels`` (default :func:`make_model_batch`'s).
    :param plugin_manager: where the task's loss is looked up (default: the global manager).
    :param name: the registered name, for messages.
    :returns: the report; ``details``: ``parameters`` (the model's count), ``logits`` (their
        shape) and ``loss``.
    :raises ConformanceError: a rule is broken; the message names it.
    """
    from treadle.losses import ModelOutput, get_loss_strategy

    subject = f"{name} ({getattr(factory, '__qualname__', type(factory).__qualname__)})"
    rules = RuleRunner("models", subject, RULES, f"task {task_spec.name!r}")
    if batch is None:
        batch = make_model_batch(task_spec, training_config)
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    labels = batch["labels"]

    def build() -> torch.nn.Module:
        try:
            model = factory(training_config, task_spec)
        except Exception as err:
            raise rules.error(
                "builds",
                f"factory(training_config, task_spec) raised {type(err).__name__}: {err}",
            ) from err
        if not isinstance(model, torch.nn.Module):
            rules.fail("builds", f"the factory returned {type(model).__qualname__}, no nn.Module")
        return model

    def logits_of(model: torch.nn.Module) -> torch.Tensor:
        try:
            raw = model(**inputs)
            logits = ModelOutput.from_raw(raw).logits
        except Exception as err:
            shapes = ", ".join(f"{key} {tuple(value.shape)}" for key, value in inputs.items())
            raise rules.error(
                "forward takes the batch",
                f"model(**batch) with {shapes} raised {type(err).__name__}: {err}; forward "
                f"takes every batch key but 'labels' as a keyword argument",
            ) from err
        if not isinstance(logits, torch.Tensor) or not logits.dtype.is_floating_point:
            rules.fail("forward takes the batch", f"the logits are {logits!r}, not a float tensor")
        if logits.ndim == 0 or logits.shape[0] != labels.shape[0]:
            rules.fail(
                "forward takes the batch",
                f"logits of shape {tuple(logits.shape)} for {labels.shape[0]} samples; the "
                f"first dimension is the batch",
            )
        return logits

    torch.manual_seed(0)
    model = build()
    rules.passes("builds")
    model.train()
    logits = logits_of(model)
    rules.passes("forward takes the batch")

    strategy = get_loss_strategy(
        task_spec.loss_name, plugin_manager=plugin_manager, **task_spec.loss_options
    )
    loss_inputs: dict[str, Any] = {
        "logits": logits,
        "labels": labels,
        "pad_token_id": task_spec.pad_token_id,
    }
    if "attention_mask" in batch:
        loss_inputs["attention_mask"] = batch["attention_mask"]
    try:
        loss = strategy.compute_loss(logits, labels, loss_inputs)
    except Exception as err:
        raise rules.error(
            "trains one step",
            f"the task's loss {task_spec.loss_name!r} on logits {tuple(logits.shape)} and labels "
            f"{tuple(labels.shape)} raised {type(err).__name__}: {err}",
        ) from err
    if not math.isfinite(float(loss.detach())):
        rules.fail("trains one step", f"the loss is {float(loss.detach())}")
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    if not parameters:
        rules.fail("trains one step", "the model has no trainable parameter")
    before = [parameter.detach().clone() for parameter in parameters]
    optimizer = torch.optim.SGD(parameters, lr=0.1)
    optimizer.zero_grad()
    if not loss.requires_grad:
        rules.fail("trains one step", "the loss has no gradient (are the logits detached?)")
    loss.backward()  # type: ignore[no-untyped-call]
    gradients = [parameter.grad for parameter in parameters if parameter.grad is not None]
    if not gradients or not any(bool(gradient.abs().sum() > 0) for gradient in gradients):
        rules.fail(
            "trains one step", "no gradient reaches the parameters (is the output detached?)"
        )
    if not all(bool(torch.isfinite(gradient).all()) for gradient in gradients):
        rules.fail("trains one step", "a parameter's gradient is not finite")
    optimizer.step()
    if all(torch.equal(old, new.detach()) for old, new in zip(before, parameters, strict=True)):
        rules.fail("trains one step", "an optimizer step changed no parameter")
    rules.passes("trains one step")

    model.eval()
    with torch.no_grad():
        expected = logits_of(model)
    with torch.no_grad():
        second = logits_of(model)
    if not torch.equal(second, expected):
        rules.fail(
            "eval is deterministic",
            "two forward passes in eval mode differ (dropout or sampling outside training?)",
        )
    rules.passes("eval is deterministic")
    buffer = io.BytesIO()
    try:
        torch.save(model.state_dict(), buffer)
        buffer.seek(0)
        state = torch.load(buffer, weights_only=True)
        restored = build()
        restored.load_state_dict(state, strict=True)
    except Exception as err:
        raise rules.error(
            "checkpoint round trip",
            f"the state_dict does not load into a new model from the factory with "
            f"weights_only=True ({type(err).__name__}: {err})",
        ) from err
    restored.eval()
    with torch.no_grad():
        again = logits_of(restored)
    if not torch.allclose(again, expected, rtol=1e-6, atol=1e-6):
        difference = float((again - expected).abs().max())
        rules.fail(
            "checkpoint round trip",
            f"the restored model's outputs differ by up to {difference:.3g}; state that "
            f"forward uses must live in parameters or buffers",
        )
    rules.passes("checkpoint round trip")

    rules.details.update(
        parameters=sum(parameter.numel() for parameter in model.parameters()),
        logits=tuple(expected.shape),
        loss=float(loss.detach()),
    )
    return rules.report()
