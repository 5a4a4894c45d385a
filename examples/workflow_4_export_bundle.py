"""Workflow 4 of the API reference, "Export Bundle", run with treadle.

The block marked as the API reference's code in :func:`main` is that code as written; only its
import line differs. What it leaves to the reader (``model``, ``model_config``, ``task_spec``,
``config``) is made by :func:`train`: a small GPT (``treadle_models.TinyGPT``) trained briefly
on the built-in ``pydoc_topics`` corpus.

The reference's Docker lines build and serve the bundle's TorchServe image
(``pytorch/torchserve:latest-cpu``); ``docker run`` serves until stopped. They run only with
``--docker`` (and Docker installed). Without it the example checks the bundle instead with its
own ``inference.py --verify`` (every artifact's sha256, and its outputs on the recorded sample)
and one prediction, which need only onnxruntime and torch. Run it from a scratch folder; the
bundle goes to ``exports/model_<UTC timestamp>/``::

    python examples/workflow_4_export_bundle.py             # 2 epochs of 256 blocks, then export
    python examples/workflow_4_export_bundle.py --small     # 1 epoch of 32 blocks, then export
    python examples/workflow_4_export_bundle.py --docker    # and build and run the image

``TREADLE_EXAMPLE_SMALL=1`` in the environment does what ``--small`` does.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from treadle.config import TrainingConfig, TrainingConfigBuilder
from treadle.data import UniversalDataModule
from treadle.engine import Trainer

# The API reference's import, with treadle's module name
from treadle.export import create_export_bundle
from treadle.task import TaskSpec
from treadle_models import TinyGPT


@dataclass(frozen=True)
class ModelConfig:
    """The model's architecture: stored in the bundle as ``configs/model_config.json``."""

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


def train(small: bool) -> tuple[torch.nn.Module, ModelConfig, TaskSpec, TrainingConfig]:
    """Train the model; return ``model``, ``model_config``, ``task_spec`` and ``config``.

    The training config describes the same architecture as ``model_config`` (the bundle
    reads ``vocab_size`` and ``max_seq_len`` from it for the sample input).

    :param small: 1 epoch of 32 training and 16 validation blocks instead of 2 of 256 and 64.
    """
    torch.manual_seed(0)
    model_config = ModelConfig()
    config = (
        TrainingConfigBuilder.quick_prototype()
        .with_model(model_name="transformer-gpt", **asdict(model_config))
        .with_training(epochs=1 if small else 2, batch_size=8)
        .with_logging(run_name="workflow-4")
        .build()
    )
    task_spec = TaskSpec.language_modeling(name="pydoc", max_seq_len=model_config.max_seq_len)
    module = UniversalDataModule(task_spec=task_spec, num_workers=0, seed=config.random_seed)
    module.load_named("pydoc_topics")
    train_size, val_size = (32, 16) if small else (256, 64)
    train_data = torch.utils.data.Subset(module.train_dataset(), range(train_size))
    val_data = torch.utils.data.Subset(module.val_dataset(), range(val_size))
    model = TinyGPT(**asdict(model_config))
    trainer = Trainer(
        model=model,
        config=model_config,
        training_config=config,
        task_spec=task_spec,
        device="cpu",
    )
    results = trainer.train(train_data, val_data)
    print(f"Trained: best val loss {results['best_val_loss']:.4f}")
    return model, model_config, task_spec, config


def check_bundle(export_dir: Path) -> dict[str, Any]:
    """Run the bundle's own ``inference.py``: ``--verify``, then one prediction.

    :returns: the manifest.
    :raises SystemExit: ``inference.py`` failed (its output is shown).
    """
    import subprocess

    for extra in (["--verify"], []):
        done = subprocess.run(
            [sys.executable, "inference.py", *extra],
            cwd=export_dir,
            capture_output=True,
            text=True,
            check=False,
        )
        output = done.stdout.strip()
        print(output if len(output) < 400 else f"{output[:400]}...")
        if done.returncode != 0:
            raise SystemExit(f"inference.py {' '.join(extra)} failed:\n{done.stderr}")
    manifest: dict[str, Any] = json.loads((export_dir / "manifest.json").read_text())
    return manifest


def main(argv: Sequence[str] | None = None) -> Path:
    """Run workflow 4; return the bundle's folder.

    :param argv: command-line arguments (default ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a few seconds' worth of data")
    parser.add_argument("--docker", action="store_true", help="build and run the Docker image")
    args = parser.parse_args(argv)
    if args.docker and not shutil.which("docker"):
        parser.error("--docker: no docker command on PATH; install Docker or leave it out")
    model, model_config, task_spec, config = train(is_small(args.small))

    # fmt: off
    # -- the API reference's Workflow 4 ------------------------------------------------------

    export_dir = create_export_bundle(
        model=model,
        config=model_config,
        task_spec=task_spec,
        training_config=config,
        formats=['onnx', 'torchscript']
    )

    if args.docker:
        # Deploy with Docker
        import subprocess
        subprocess.run(['docker', 'build', '-t', 'model:v1', export_dir])
        subprocess.run(['docker', 'run', '-p', '8080:8080', 'model:v1'])

    # -- end of the API reference's code ---------------------------------------------------
    # fmt: on
    manifest = check_bundle(export_dir)
    print(f"Bundle: {export_dir} ({manifest['status']})")
    print(f"Artifacts: {', '.join(sorted(manifest['artifacts']))}")
    print(f"To serve it: docker build -t model:v1 {export_dir} && docker run -p 8080:8080 model:v1")
    return export_dir


if __name__ == "__main__":
    main()
