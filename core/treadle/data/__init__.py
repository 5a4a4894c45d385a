"""The data layer: tokenizer, data files, the face of the named data sets that plugins
register (the built-ins and Hugging Face's among them), resumable samplers and the
DataLoaderFactory.

Names load on first use (PEP 562), so ``import treadle.data`` stays light::

    from treadle.data import DataLoaderConfig, DataLoaderFactory, UniversalDataModule
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from treadle.errors import DataError

if TYPE_CHECKING:
    from treadle.data.datasets import (
        DatasetInfo,
        dataset_info,
        get_dataset,
        list_datasets,
        load_named_dataset,
    )
    from treadle.data.encode import datasets_from_records
    from treadle.data.files import Record, read_records
    from treadle.data.loaders import (
        DataLoaderConfig,
        DataLoaderFactory,
        seed_worker,
        yields_batches,
    )
    from treadle.data.module import UniversalDataModule
    from treadle.data.samplers import DistributedResumableSampler, ResumableSampler
    from treadle.data.samples import (
        TUPLE_SAMPLE_FIELDS,
        ImageDataset,
        SampleList,
        SizedDataset,
        TokenBlocks,
        sample_fields,
        split_indices,
    )
    from treadle.data.tokenizer import ByteTokenizer, text_encoder
    from treadle.protocols import NamedDataset

__all__ = [
    "TUPLE_SAMPLE_FIELDS",
    "ByteTokenizer",
    "DataError",
    "DataLoaderConfig",
    "DataLoaderFactory",
    "DatasetInfo",
    "DistributedResumableSampler",
    "ImageDataset",
    "NamedDataset",
    "Record",
    "ResumableSampler",
    "SampleList",
    "SizedDataset",
    "TokenBlocks",
    "UniversalDataModule",
    "dataset_info",
    "datasets_from_records",
    "get_dataset",
    "list_datasets",
    "load_named_dataset",
    "read_records",
    "sample_fields",
    "seed_worker",
    "split_indices",
    "text_encoder",
    "yields_batches",
]

_LAZY: dict[str, str] = {
    "ByteTokenizer": "treadle.data.tokenizer",
    "text_encoder": "treadle.data.tokenizer",
    "NamedDataset": "treadle.protocols",
    "DatasetInfo": "treadle.data.datasets",
    "dataset_info": "treadle.data.datasets",
    "get_dataset": "treadle.data.datasets",
    "datasets_from_records": "treadle.data.encode",
    "list_datasets": "treadle.data.datasets",
    "load_named_dataset": "treadle.data.datasets",
    "Record": "treadle.data.files",
    "read_records": "treadle.data.files",
    "DataLoaderConfig": "treadle.data.loaders",
    "DataLoaderFactory": "treadle.data.loaders",
    "seed_worker": "treadle.data.loaders",
    "yields_batches": "treadle.data.loaders",
    "UniversalDataModule": "treadle.data.module",
    "ResumableSampler": "treadle.data.samplers",
    "DistributedResumableSampler": "treadle.data.samplers",
    "ImageDataset": "treadle.data.samples",
    "SampleList": "treadle.data.samples",
    "SizedDataset": "treadle.data.samples",
    "TokenBlocks": "treadle.data.samples",
    "split_indices": "treadle.data.samples",
    "sample_fields": "treadle.data.samples",
    "TUPLE_SAMPLE_FIELDS": "treadle.data.samples",
}


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        msg = f"module 'treadle.data' has no attribute {name!r}"
        raise AttributeError(msg)
    value = globals()[name] = getattr(importlib.import_module(_LAZY[name]), name)
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
