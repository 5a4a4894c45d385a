"""Workflow 3 of the API reference, "Model Registry & Versioning", run with treadle.

The block marked as the API reference's code in :func:`main` is that code as written; only its
import line differs. What it leaves to the reader ("After training": ``results``,
``checkpoint_path`` and ``model_config``) is made by :func:`train`: a small GPT
(``treadle_models.TinyGPT``) trained on the built-in ``pydoc_topics`` corpus, whose best
checkpoint is registered. Afterwards the production model's checkpoint is loaded into a fresh
model, which writes a few bytes of text.

Run it from a scratch folder: it writes ``models.db`` (the registry), ``checkpoints/`` and
``treadle.db`` (the experiment store) there. ``transformer-gpt`` 1.0.0 can be registered once
per registry, so a second run in the same folder stops with ``DuplicateModelError``::

    python examples/workflow_3_model_registry.py           # 3 epochs of 256 blocks: ~1 min
    python examples/workflow_3_model_registry.py --small   # 2 epochs of 32 blocks: seconds
    treadle registry list --location models.db              # then look at it

``TREADLE_EXAMPLE_SMALL=1`` in the environment does what ``--small`` does.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from treadle.config import TrainingConfigBuilder
from treadle.data import ByteTokenizer, UniversalDataModule
from treadle.engine import Trainer

# The API reference's import, with treadle's module name
from treadle.model_registry import ModelRegistry
from treadle.task import TaskSpec
from treadle_models import TinyGPT


@dataclass(frozen=True)
class ModelConfig:
    """The model's architecture; ``asdict(model_config)`` is what the registry's
    ``config_hash`` is taken of."""

    vocab_size: int = 259  # the byte tokenizer: 256 bytes and 3 special tokens
    d_model: int = 64
    num_layers: int = 2
    num_heads: int = 4
    d_ff: int = 256
    max_seq_len: int = 128
    dropout: float = 0.0


def is_small(argv_flag: bool) -> bool:
    """Whether to run the short version: ``--small`` or ``TREADLE_EXAMPLE_SMALL=1``."""
    return argv_flag or os.environ.get("TREADLE_EXAMPLE_SMALL", "") not in ("", "0")


def train(small: bool) -> tuple[dict[str, Any], str, ModelConfig]:
    """Train the model; return the Trainer's ``results``, the best ``checkpoint_path`` and
    the ``model_config``.

    The training config describes the same architecture as ``model_config``, so the
    checkpoint also rebuilds through the ``models`` registry (``treadle export``).

    :param small: 2 epochs of 32 training and 16 validation blocks instead of 3 of 256 and 64.
    """
    torch.manual_seed(0)
    model_config = ModelConfig()
    config = (
        TrainingConfigBuilder.quick_prototype()
        .with_model(model_name="transformer-gpt", **asdict(model_config))
        .with_training(epochs=2 if small else 3, batch_size=8)
        .with_logging(run_name="workflow-3")
        .build()
    )
    task_spec = TaskSpec.language_modeling(name="pydoc", max_seq_len=model_config.max_seq_len)
    module = UniversalDataModule(task_spec=task_spec, num_workers=0, seed=config.random_seed)
    module.load_named("pydoc_topics")
    train_size, val_size = (32, 16) if small else (256, 64)
    train_data = torch.utils.data.Subset(module.train_dataset(), range(train_size))
    val_data = torch.utils.data.Subset(module.val_dataset(), range(val_size))
    trainer = Trainer(
        model=TinyGPT(**asdict(model_config)),
        config=model_config,
        training_config=config,
        task_spec=task_spec,
        device="cpu",
    )
    results = trainer.train(train_data, val_data)
    return results, str(results["best_checkpoint"]), model_config


def main(argv: Sequence[str] | None = None) -> int:
    """Run workflow 3; return the production model's id.

    :param argv: command-line arguments (default ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a few seconds' worth of data")
    args = parser.parse_args(argv)
    results, checkpoint_path, model_config = train(is_small(args.small))

    # fmt: off
    # -- the API reference's Workflow 3 ------------------------------------------------------

    registry = ModelRegistry('models.db')

    # After training
    model_id = registry.register_model(
        name='transformer-gpt',
        version='1.0.0',
        checkpoint_path=checkpoint_path,
        task_type='language_modeling',
        metrics=results['final_metrics'],
        config_hash=hashlib.sha256(
            json.dumps(asdict(model_config)).encode()
        ).hexdigest()
    )

    # Promote to production
    registry.promote_model(model_id, 'production')

    # Load for inference
    prod_model = registry.get_model(tag='production')

    # -- end of the API reference's code ---------------------------------------------------
    # fmt: on
    print(
        f"Registered {prod_model.name} {prod_model.version} as model {prod_model.model_id}, "
        f"tags {list(prod_model.tags)}, val_loss {prod_model.metrics['val_loss']:.4f}, "
        f"{prod_model.model_size_mb:.2f} MB"
    )

    # The entry points at the checkpoint: load its weights (a weights-only load) and use them
    checkpoint = torch.load(Path(prod_model.checkpoint_path), weights_only=True)
    model = TinyGPT(**asdict(model_config))
    model.load_state_dict(checkpoint["model_state_dict"])
    tokenizer = ByteTokenizer()
    prompt = torch.tensor([tokenizer.encode("The ")[:-1]])  # without the end-of-text token
    generator = torch.Generator().manual_seed(0)
    output = model.generate(prompt, max_new_tokens=24, top_k=20, generator=generator)
    print(f"Production model writes: {tokenizer.decode(output[0].tolist())!r}")
    registry.close()
    return prod_model.model_id


if __name__ == "__main__":
    main()
