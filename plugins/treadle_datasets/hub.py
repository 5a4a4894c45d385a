"""Hugging Face data sets as records, through the optional ``datasets`` library.

A local copy needs no network: a folder written by ``Dataset.save_to_disk`` or
``DatasetDict.save_to_disk``, a folder of data files, or one data file. A hub name is looked
up only when the process may go online: with ``HF_DATASETS_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``
(and no cached copy), or when the hub cannot be reached within a second, the call fails at
once with an offline error instead of waiting on retries.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from treadle.data import Record
from treadle.errors import DataError
from treadle.hub import HUB_PROBE_SECONDS, hub_unreachable, offline_setting

__all__ = ["HUB_PROBE_SECONDS", "check_hub_reachable", "hub_records", "is_offline"]

logger = logging.getLogger(__name__)

_OFFLINE_VARIABLES = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")
_FILE_BUILDERS = {
    ".json": "json",
    ".jsonl": "json",
    ".ndjson": "json",
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "text",
    ".parquet": "parquet",
}


def is_offline() -> str | None:
    """The environment variable that puts Hugging Face offline (``HF_DATASETS_OFFLINE=1``),
    or ``None``."""
    return offline_setting(_OFFLINE_VARIABLES)


def hub_records(
    dataset_name: str,
    dataset_config: str | None = None,
    train_split: str = "train",
    validation_split: str | None = "validation",
    max_samples: int | None = None,
    **load_options: Any,
) -> tuple[list[Record], list[Record] | None]:
    """The training records and, when the data set has the split, the validation records.

    :param dataset_name: a hub name (``"wikitext"``) or a local folder or data file.
    :param dataset_config: the hub configuration (``"wikitext-103-v1"``).
    :param max_samples: keep only the first ``max_samples`` rows of each split.
    :param load_options: passed to ``datasets.load_dataset`` (``revision``, ``cache_dir``...).
    :raises DataError: offline with a hub name, the hub unreachable, ``datasets`` missing, or
        the split absent (naming the splits there are).
    """
    # os.path: Path.expanduser raises for an unknown ~user, Path.exists for a NUL byte
    local = Path(os.path.expanduser(dataset_name))
    is_local = bool(dataset_name) and os.path.exists(local)
    if not is_local:
        offline = is_offline()
        if offline and not _cached_copy(dataset_name):
            msg = (
                f"{dataset_name!r} is a Hugging Face Hub data set and this process is offline "
                f"({offline}), with no cached copy; hub data sets cannot be downloaded. Use a "
                f"local copy: a folder saved with Dataset.save_to_disk, a folder of data files, "
                f"or a data file (load_from_file), or unset {offline.split('=')[0]} on a "
                f"machine with network access"
            )
            raise DataError(msg)
        if not offline and not _cached_copy(dataset_name):
            check_hub_reachable(dataset_name)
    datasets = _import_datasets()
    splits = _load(
        datasets, dataset_name, local if is_local else None, dataset_config, load_options
    )
    if train_split not in splits:
        msg = (
            f"{dataset_name!r} has no split {train_split!r} (splits: {', '.join(splits)}); "
            f"pass train_split="
        )
        raise DataError(msg)
    train = _records(splits[train_split], dataset_name, train_split, max_samples)
    val = None
    if validation_split is not None and validation_split in splits:
        val = _records(splits[validation_split], dataset_name, validation_split, max_samples)
    elif validation_split is not None:
        logger.info(
            "%s has no split %r (splits: %s): validation is split from %r",
            dataset_name,
            validation_split,
            ", ".join(splits),
            train_split,
        )
    return train, val


def check_hub_reachable(dataset_name: str, timeout: float = HUB_PROBE_SECONDS) -> None:
    """Open a TCP connection to the hub (``HF_ENDPOINT``, or the ``HTTPS_PROXY`` when one is
    set) within ``timeout`` seconds; skipped when ``TREADLE_SKIP_HUB_CHECK=1``.

    :raises DataError: the connection failed or took longer (the machine is offline).
    """
    unreachable = hub_unreachable(timeout)
    if unreachable is None:
        return
    msg = (
        f"{dataset_name!r} is a Hugging Face Hub data set, and the hub {unreachable} cannot be "
        f"reached: this machine looks offline. Use a local copy (a folder saved "
        f"with Dataset.save_to_disk, or data files with load_from_file), set "
        f"HF_DATASETS_OFFLINE=1 to use cached copies, or TREADLE_SKIP_HUB_CHECK=1 to skip "
        f"this check"
    )
    raise DataError(msg)


def _cached_copy(dataset_name: str) -> bool:
    """Whether the Hugging Face caches seem to hold ``dataset_name`` (checked by folder name,
    without importing ``datasets``)."""
    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")).expanduser()
    datasets_cache = Path(os.environ.get("HF_DATASETS_CACHE", home / "datasets")).expanduser()
    hub_cache = Path(os.environ.get("HF_HUB_CACHE", home / "hub")).expanduser()
    candidates = [
        datasets_cache / dataset_name.replace("/", "___"),
        hub_cache / ("datasets--" + dataset_name.replace("/", "--")),
    ]
    return any(os.path.isdir(path) for path in candidates)


def _import_datasets() -> Any:
    try:
        import datasets
    except ImportError as err:
        msg = (
            f'load_huggingface needs the datasets library: pip install "treadle[hf]" ({err}); '
            f"data files load without it through load_from_file"
        )
        raise DataError(msg) from err
    return datasets


def _load(
    datasets: Any,
    dataset_name: str,
    local: Path | None,
    dataset_config: str | None,
    load_options: dict[str, Any],
) -> dict[str, Any]:
    """The data set's splits by name."""
    try:
        if (
            local is not None
            and local.is_dir()
            and ((local / "dataset_dict.json").exists() or (local / "state.json").exists())
        ):
            loaded = datasets.load_from_disk(str(local))
        elif local is not None and local.is_file():
            builder = _FILE_BUILDERS.get(local.suffix.lower())
            if builder is None:
                msg = (
                    f"{local}: unknown data file type {local.suffix!r}; give one of "
                    f"{', '.join(sorted(_FILE_BUILDERS))}"
                )
                raise DataError(msg)
            if local.suffix.lower() == ".tsv":
                load_options = {"delimiter": "\t", **load_options}
            loaded = datasets.load_dataset(builder, data_files=str(local), **load_options)
        else:
            target = str(local) if local is not None else dataset_name
            loaded = datasets.load_dataset(target, dataset_config, **load_options)
    except DataError:
        raise
    except Exception as err:  # datasets raises many kinds: name the data set and the cause
        msg = f"cannot load {dataset_name!r} with datasets: {type(err).__name__}: {err}"
        raise DataError(msg) from err
    if isinstance(loaded, datasets.Dataset):
        return {"train": loaded}
    return dict(loaded)


def _records(
    split: Any, dataset_name: str, split_name: str, max_samples: int | None
) -> list[Record]:
    if max_samples is not None:
        if max_samples < 1:
            msg = f"max_samples must be >= 1 or None: {max_samples}"
            raise DataError(msg)
        split = split.select(range(min(max_samples, len(split))))
    return [
        Record(f"{dataset_name} [{split_name} row {index}]", row) for index, row in enumerate(split)
    ]
