"""treadle built-in plugin: Hugging Face ``transformers`` models by name, with ``peft`` adapters.

``model_type = "hf"`` builds any causal-LM or sequence-classification architecture from its
config (nothing downloaded), or loads weights from a local folder; ``plugins.options.hf.peft``
wraps it in LoRA (or another PEFT method). Needs ``pip install "treadle[hf]"`` (and
``"treadle[peft]"`` for adapters).
"""

from __future__ import annotations

__all__: list[str] = []
