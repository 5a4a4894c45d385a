"""The manifest of a checkpoint folder, ``checkpoints.json``: one row per kept checkpoint (its
digest, size, epoch, step and metrics) and the files being deleted, read strictly.

Reading never trusts the file: anything but a manifest this treadle wrote (bytes that are not
UTF-8 JSON, nesting past the parser's recursion limit, ``Infinity``, a wrong type, a name outside
the folder, a size past the limit) is :class:`ManifestDamage`, and the caller rebuilds the
manifest from the checkpoint files themselves.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from treadle.engine.checkpoints.digests import Digest
from treadle.engine.checkpoints.names import CHECKPOINT_NAME

__all__ = [
    "MAX_MANIFEST_BYTES",
    "Entry",
    "Manifest",
    "ManifestDamage",
    "decode_manifest",
    "encode_manifest",
    "metric_from_json",
]

_FORMAT = "treadle.checkpoints"
#: 1: rows carry ``sha256`` (of the whole file); 2: rows carry ``hash`` (a :class:`Digest`);
#: 3: the header and each row carry ``run_id`` (the run the folder and each checkpoint belong
#: to; ``null`` in a folder written without one).
_FORMAT_VERSION = 3
#: A manifest lists a few rows of ~600 bytes each; a file past this is not one.
MAX_MANIFEST_BYTES = 1 << 26
_MAX_INT = (1 << 63) - 1


class ManifestDamage(ValueError):
    """The manifest's bytes are not a manifest this treadle can read; the message says why."""


@attrs.define(kw_only=True)
class Entry:
    """A row of the manifest: one kept checkpoint."""

    file: str
    epoch: int
    step: int
    mid_epoch: bool
    sequence: int
    digest: Digest
    size_bytes: int
    metrics: dict[str, float]
    timestamp: str
    model_size_mb: float
    optimizer_state_size_mb: float
    is_best: bool = False
    run_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "epoch": self.epoch,
            "step": self.step,
            "mid_epoch": self.mid_epoch,
            "sequence": self.sequence,
            "hash": self.digest.to_json(),
            "size_bytes": self.size_bytes,
            "metrics": {name: _metric_to_json(value) for name, value in self.metrics.items()},
            "timestamp": self.timestamp,
            "model_size_mb": self.model_size_mb,
            "optimizer_state_size_mb": self.optimizer_state_size_mb,
            "is_best": self.is_best,
            "run_id": self.run_id,
        }

    @classmethod
    def from_json(cls, row: object) -> Entry:
        """:raises ManifestDamage: the row is malformed or names a file outside the folder."""
        if not isinstance(row, dict):
            msg = f"an entry is a {type(row).__name__}, not an object"
            raise ManifestDamage(msg)
        name = row.get("file")
        if not isinstance(name, str) or not CHECKPOINT_NAME.match(name):
            msg = f"entry file {name!r} is not a checkpoint name in this folder"
            raise ManifestDamage(msg)
        try:
            if "hash" in row:
                digest = Digest.from_json(row["hash"])
            else:
                digest = Digest.whole_file_sha256(row.get("sha256"))
            metrics = row.get("metrics")
            if not isinstance(metrics, dict):
                msg = "metrics are not an object"
                raise ValueError(msg)
            return cls(
                file=name,
                epoch=_count(row, "epoch"),
                step=_count(row, "step"),
                mid_epoch=_flag(row, "mid_epoch"),
                sequence=_count(row, "sequence"),
                digest=digest,
                size_bytes=_count(row, "size_bytes"),
                metrics={key: metric_from_json(value) for key, value in metrics.items()},
                timestamp=_text(row, "timestamp"),
                model_size_mb=_size(row, "model_size_mb"),
                optimizer_state_size_mb=_size(row, "optimizer_state_size_mb"),
                is_best=_flag(row, "is_best", default=False),
                run_id=_run_id(row),
            )
        except ValueError as err:
            msg = f"entry {name}: {err}"
            raise ManifestDamage(msg) from err


@attrs.define(kw_only=True)
class Manifest:
    """What a manifest says: the kept checkpoints, the files being deleted, the header
    (``monitor``, ``mode``, ``keep_best_k``, ``keep_last_n``: how it was ranked) and the run
    the folder belongs to (``None`` for a folder written without one)."""

    entries: list[Entry]
    deleting: list[str]
    header: dict[str, Any] = attrs.field(factory=dict)
    run_id: str | None = None


def encode_manifest(
    entries: Iterable[Entry],
    deleting: Iterable[str],
    header: Mapping[str, Any],
    run_id: str | None = None,
) -> bytes:
    """The manifest's bytes: ``header`` (plain JSON values), the folder's run and the rows."""
    document = {
        "format": _FORMAT,
        "format_version": _FORMAT_VERSION,
        **header,
        "run_id": run_id,
        "checkpoints": [entry.to_json() for entry in entries],
        "deleting": list(deleting),
    }
    return (json.dumps(document, indent=2, allow_nan=False) + "\n").encode("utf-8")


def decode_manifest(raw: bytes) -> Manifest:
    """Parse a manifest.

    :raises ManifestDamage: ``raw`` is anything but a manifest this treadle can read.
    """
    if len(raw) > MAX_MANIFEST_BYTES:
        msg = f"it is {len(raw)} bytes, more than a manifest's {MAX_MANIFEST_BYTES}"
        raise ManifestDamage(msg)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        msg = f"it is not UTF-8 ({err})"
        raise ManifestDamage(msg) from err
    try:
        data = json.loads(
            text, parse_constant=_refuse_constant, object_pairs_hook=_refuse_duplicate_keys
        )
    except (ValueError, RecursionError) as err:
        # JSONDecodeError is a ValueError; the C parser raises RecursionError, cleanly, for
        # nesting past the interpreter's recursion limit ("[" * 100000)
        msg = f"it is not JSON ({err})"
        raise ManifestDamage(msg) from err
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        msg = "it is not a treadle checkpoint manifest (no format 'treadle.checkpoints')"
        raise ManifestDamage(msg)
    version = data.get("format_version")
    if type(version) is not int or not 1 <= version <= _FORMAT_VERSION:
        msg = f"its format version {version!r} is not one this treadle reads (1 to 3)"
        raise ManifestDamage(msg)
    rows, deleting = data.get("checkpoints"), data.get("deleting", [])
    if not isinstance(rows, list) or not isinstance(deleting, list):
        msg = "its checkpoints or deleting are not lists"
        raise ManifestDamage(msg)
    entries = [Entry.from_json(row) for row in rows]
    names = [entry.file for entry in entries]
    if len(set(names)) != len(names):
        msg = "it lists a checkpoint twice"
        raise ManifestDamage(msg)
    if not all(isinstance(name, str) and CHECKPOINT_NAME.match(name) for name in deleting):
        msg = "a pending deletion is not a checkpoint name in this folder"
        raise ManifestDamage(msg)
    header = {key: data[key] for key in ("monitor", "mode") if key in data}
    try:
        run_id = _run_id(data)
    except ValueError as err:
        raise ManifestDamage(str(err)) from err
    return Manifest(entries=entries, deleting=list(deleting), header=header, run_id=run_id)


def _refuse_constant(name: str) -> float:
    msg = f"it holds {name}, which no manifest value is"
    raise ValueError(msg)


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        keys = [key for key, _ in pairs]
        duplicate = next(key for key in keys if keys.count(key) > 1)
        msg = f"it holds the key {duplicate!r} twice in one object"
        raise ValueError(msg)
    return result


def _count(row: Mapping[str, Any], key: str) -> int:
    value = row.get(key)
    if type(value) is not int or not 0 <= value <= _MAX_INT:
        msg = f"{key} is {value!r}, not a whole number >= 0"
        raise ValueError(msg)
    return value


def _flag(row: Mapping[str, Any], key: str, *, default: bool | None = None) -> bool:
    value = row.get(key, default)
    if not isinstance(value, bool):
        msg = f"{key} is {value!r}, not true or false"
        raise ValueError(msg)
    return value


def _text(row: Mapping[str, Any], key: str) -> str:
    value = row.get(key)
    if not isinstance(value, str):
        msg = f"{key} is {value!r}, not a string"
        raise ValueError(msg)
    return value


def _run_id(row: Mapping[str, Any]) -> str | None:
    value = row.get("run_id")
    if value is not None and (not isinstance(value, str) or not 0 < len(value) <= 64):
        msg = f"run_id is {value!r}, not a run id"
        raise ValueError(msg)
    return value


def _size(row: Mapping[str, Any], key: str) -> float:
    value = row.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        msg = f"{key} is {value!r}, not a finite size >= 0"
        raise ValueError(msg)
    return float(value)


def _metric_to_json(value: float) -> float | str | None:
    if math.isnan(value):
        return None
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def metric_from_json(value: object) -> float:
    """A metric as the manifest writes it (``null`` for NaN, ``"inf"``, ``"-inf"``).

    :raises ValueError: not a number.
    """
    if value is None:
        return math.nan
    if value == "inf" or value == "-inf":
        return float(value)
    if type(value) not in (int, float):
        msg = f"metric value {value!r} is not a number"
        raise ValueError(msg)
    return float(value)  # type: ignore[arg-type]
