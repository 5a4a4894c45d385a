"""Workflow 1 of the API reference, "Simple Training Loop", run with treadle.

The numbered block in :func:`main` is the API reference's code as written; only its import
lines differ (``utils.training...`` becomes ``treadle...``). What the reference leaves to the
reader (``model``, ``model_config``, ``train_data``, ``val_data``) is made by
:func:`prepare`: a small GPT (``treadle_models.TinyGPT``) and the built-in ``pydoc_topics``
corpus, cut into blocks of 128 byte tokens.

Run it from a scratch folder; it writes ``checkpoints/`` (the ``baseline`` preset's
``checkpoint_dir``) and ``treadle.db`` (the experiment store) there::

    python examples/workflow_1_simple_training.py           # 10 epochs of 256 blocks: ~1 min
    python examples/workflow_1_simple_training.py --small   # 10 epochs of 32 blocks: seconds

``TREADLE_EXAMPLE_SMALL=1`` in the environment does what ``--small`` does.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

# The API reference's imports, with treadle's module names
from treadle.config import TrainingConfig, TrainingConfigBuilder  # noqa: F401 (as in the spec)
from treadle.data import UniversalDataModule
from treadle.engine import Trainer
from treadle.task import TaskSpec
from treadle_models import TinyGPT


@dataclass(frozen=True)
class ModelConfig:
    """The model's architecture: what the API reference passes as ``config=model_config``."""

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


def prepare(small: bool) -> tuple[torch.nn.Module, ModelConfig, Any, Any]:
    """What the API reference takes as given: ``model``, ``model_config``, ``train_data`` and
    ``val_data`` (datasets of ``{"input_ids"}`` blocks that the Trainer batches itself).

    :param small: keep 32 training and 16 validation blocks instead of 256 and 64.
    """
    torch.manual_seed(0)
    model_config = ModelConfig()
    model = TinyGPT(**asdict(model_config))
    task = TaskSpec.language_modeling(name="wikitext", max_seq_len=model_config.max_seq_len)
    module = UniversalDataModule(task_spec=task, num_workers=0, seed=42)
    module.load_named("pydoc_topics")
    train_size, val_size = (32, 16) if small else (256, 64)
    train_data = torch.utils.data.Subset(module.train_dataset(), range(train_size))
    val_data = torch.utils.data.Subset(module.val_dataset(), range(val_size))
    return model, model_config, train_data, val_data


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run workflow 1 and return the Trainer's results.

    :param argv: command-line arguments (default ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a few seconds' worth of data")
    args = parser.parse_args(argv)
    model, model_config, train_data, val_data = prepare(is_small(args.small))

    # fmt: off
    # -- the API reference's Workflow 1 ------------------------------------------------------

    # 1. Create configuration
    config = TrainingConfigBuilder.baseline().build()

    # 2. Create task spec
    task_spec = TaskSpec.language_modeling(name='wikitext')

    # 3. Initialize trainer
    trainer = Trainer(
        model=model,
        config=model_config,
        training_config=config,
        task_spec=task_spec
    )

    # 4. Train
    results = trainer.train(train_data, val_data)

    print(f"Best val loss: {results['best_val_loss']:.4f}")

    # -- end of the API reference's code ---------------------------------------------------
    # fmt: on
    # the API counts epochs from 0; what a person reads counts from 1
    print(f"Best epoch: {results['best_epoch'] + 1} of {config.epochs}")
    print(f"Best checkpoint: {results['best_checkpoint']}")
    return results


if __name__ == "__main__":
    main()
