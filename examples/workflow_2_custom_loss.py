# The API reference's loss class is written without type hints; it is kept as written.
# mypy: disable-error-code="no-untyped-def,no-untyped-call"
"""Workflow 2 of the API reference, "Custom Loss Strategy", run with treadle.

The block marked as the API reference's code in :func:`main` is that code as written; only its
import lines differ. What it leaves to the reader is made by :func:`prepare`: ``weights``, one
weight per class of the built-in ``digits`` data set (1,797 handwritten 8x8 digits, 10 classes;
needs scikit-learn: ``pip install "treadle[vision]"``), the inverse of each class's share.

The reference stops at ``strategy = registry.get('weighted-ce')``. "Use in training" is then
done as treadle does it: the runtime registration is seen by every lookup through the same
(process-wide) plugin manager, so a task naming ``loss='weighted-ce'`` trains with it. Run it
from a scratch folder (it writes ``checkpoints/`` and ``treadle.db`` there)::

    python examples/workflow_2_custom_loss.py            # 3 epochs over all the digits
    python examples/workflow_2_custom_loss.py --small    # 3 epochs over 128 digits: seconds

``TREADLE_EXAMPLE_SMALL=1`` in the environment does what ``--small`` does.
"""

from __future__ import annotations

import argparse
import os
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

# The API reference's import, with treadle's module name
from treadle.config import TrainingConfigBuilder
from treadle.data import UniversalDataModule
from treadle.engine import Trainer
from treadle.losses import LossStrategyRegistry
from treadle.task import TaskSpec
from treadle_models import SmallCNN


def is_small(argv_flag: bool) -> bool:
    """Whether to run the short version: ``--small`` or ``TREADLE_EXAMPLE_SMALL=1``."""
    return argv_flag or os.environ.get("TREADLE_EXAMPLE_SMALL", "") not in ("", "0")


def prepare(small: bool) -> tuple[torch.Tensor, Any, Any]:
    """``weights`` (inverse class frequencies of the training digits) and the training and
    validation datasets of ``{"pixel_values", "label"}`` samples.

    :param small: keep 128 training and 64 validation digits instead of all of them.
    """
    module = UniversalDataModule(task_spec=TaskSpec.vision_tiny(), num_workers=0, seed=42)
    module.load_named("digits")
    train_data: Any = module.train_dataset()
    val_data: Any = module.val_dataset()
    if small:
        train_data = torch.utils.data.Subset(train_data, range(128))
        val_data = torch.utils.data.Subset(val_data, range(64))
    counts = Counter(int(train_data[i]["label"]) for i in range(len(train_data)))
    total = sum(counts.values())
    weights = torch.tensor([total / (10 * max(counts[label], 1)) for label in range(10)])
    return weights, train_data, val_data


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run workflow 2 and return the Trainer's results.

    :param argv: command-line arguments (default ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a few seconds' worth of data")
    args = parser.parse_args(argv)
    weights, train_data, val_data = prepare(is_small(args.small))

    # fmt: off
    # -- the API reference's Workflow 2 ------------------------------------------------------

    # Register custom loss
    registry = LossStrategyRegistry()

    class CustomWeightedLoss:
        def __init__(self, class_weights):
            self.class_weights = class_weights

        def compute_loss(self, logits, labels, inputs=None):
            return F.cross_entropy(
                logits, labels,
                weight=self.class_weights,
                reduction='mean'
            )

        def validate_inputs(self, logits, labels):
            assert logits.ndim == 2
            assert labels.ndim == 1

    registry.register('weighted-ce', CustomWeightedLoss(weights))

    # Use in training
    strategy = registry.get('weighted-ce')

    # -- end of the API reference's code ---------------------------------------------------
    # fmt: on
    logits = torch.tensor([[2.0, 0.5] + [0.0] * 8])
    print(f"weighted-ce of one sample: {strategy.compute_loss(logits, torch.tensor([0])):.4f}")

    # Training with it: a task names the strategy, the Trainer looks it up in the same registry
    config = (
        TrainingConfigBuilder.quick_prototype()
        .with_training(epochs=3, batch_size=32, learning_rate=3e-3)
        .with_options(model_type="small_cnn", model_name="digits-cnn", run_name="workflow-2")
        .build()
    )
    task_spec = TaskSpec.vision_tiny(name="digits", loss="weighted-ce")
    model = SmallCNN(in_channels=1, num_classes=10, dropout=0.0)
    trainer = Trainer(
        model=model, config=None, training_config=config, task_spec=task_spec, device="cpu"
    )
    assert trainer.loss_strategy is strategy, "the Trainer uses the registered instance"
    results = trainer.train(train_data, val_data)
    final = results["final_metrics"]
    print(f"Best val loss: {results['best_val_loss']:.4f}")
    print(f"Validation accuracy: {final['val_accuracy']:.3f}")
    return results


if __name__ == "__main__":
    main()
