"""treadle built-in plugin: the named data sets.

Registered as ``pydoc_topics`` (English prose from the Python reference documentation, in the
standard library), ``digits`` (scikit-learn's handwritten digits) and ``huggingface`` (any
Hugging Face data set, hub or local copy; the face of ``UniversalDataModule.load_huggingface``).
Find them with ``treadle.data.list_datasets()``; sources and licences are in ``docs/data.md``.

Importing this package, or its ``plugin`` module, imports neither torch nor the data's
libraries: each data set imports what it needs in ``load``.
"""

from __future__ import annotations

from treadle_datasets.digits import Digits
from treadle_datasets.huggingface import HuggingFace
from treadle_datasets.pydoc_topics import PydocTopics

__all__ = ["Digits", "HuggingFace", "PydocTopics"]
