"""Saying what is wrong with a file that should be a checkpoint (RELIABILITY C3, C6): empty,
truncated, not a torch archive, a record failing its CRC-32, a digest that changed, arbitrary
pickled objects, a torch file that is no treadle checkpoint."""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from treadle.engine.checkpoints.digests import Digest
from treadle.engine.checkpoints.errors import CheckpointError
from treadle.engine.checkpoints.state import CHECKPOINT_FORMAT_VERSION

__all__ = [
    "check_payload",
    "is_zip_archive",
    "crc_damage",
    "digest_damage",
    "empty_or_crc_damage",
    "load_error",
    "size_damage",
    "structural_damage",
]

_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")
_ZIP_MAGIC = b"PK\x03\x04"


def size_damage(size: int, expected: int) -> str | None:
    """What a file of ``size`` bytes lacks against the ``expected`` size it was written with."""
    if size == expected:
        return None
    if size == 0:
        return f"it is empty (0 bytes; {expected} were written)"
    if size < expected:
        return f"it is truncated: {size} of the {expected} bytes written"
    return f"it is {size} bytes, longer than the {expected} written"


def digest_damage(file: Path, found: Digest, expected: Digest) -> str | None:
    """The damage a digest that differs from the manifest's shows, with the record whose
    CRC-32 fails when there is one."""
    if found.hex == expected.hex:
        return None
    record = crc_damage(file)
    where = f" ({record})" if record else ""
    return (
        f"its {expected.kind.describe()} is {found.hex}, not the {expected.hex} recorded when "
        f"it was written: its content changed (a flipped bit or a partial overwrite){where}"
    )


def empty_or_crc_damage(file: Path) -> str | None:
    """What is wrong with an unlisted file: empty, or a zip record failing its CRC-32."""
    if file.stat().st_size == 0:
        return "it is empty (0 bytes)"
    return crc_damage(file)


def crc_damage(file: Path) -> str | None:
    """The first zip record of ``file`` that fails its CRC-32; ``None`` when all pass or the
    file is no zip archive (torch's loader then says what it is)."""
    if not zipfile.is_zipfile(file):
        return None
    try:
        with zipfile.ZipFile(file) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        return f"its zip structure is broken ({err})"
    if bad is None:
        return None
    return f"record {bad!r} fails its CRC-32 check: its bytes changed after it was written"


def is_zip_archive(file: Path) -> bool:
    """Whether ``file`` opens as a zip archive (torch's format since 1.6): only such a file
    can be memory-mapped by ``torch.load``."""
    try:
        with file.open("rb") as stream:
            return stream.read(4) == _ZIP_MAGIC
    except OSError:
        return False


def structural_damage(file: Path) -> str | None:
    """Why ``file`` cannot be a torch checkpoint at all; ``None`` for a complete zip archive
    (or a legacy pickle-format file), whose contents torch's loader then judges."""
    try:
        size = file.stat().st_size
        with file.open("rb") as stream:
            head = stream.read(4)
    except OSError as err:
        return f"it cannot be read ({err})"
    if size == 0:
        return "it is empty (0 bytes)"
    if head.startswith(b"\x80"):  # torch's legacy format opens with a pickled magic number
        return None
    if head != _ZIP_MAGIC:
        return f"it is not a torch checkpoint archive (it starts with {head!r})"
    if not zipfile.is_zipfile(file):
        return f"it is truncated: a zip archive without its closing directory ({size} bytes)"
    return None


def load_error(file: Path, err: BaseException) -> CheckpointError:
    """``err`` from ``torch.load(weights_only=True)`` as an error naming the file and why."""
    text = str(err)
    first_line = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    damage = structural_damage(file)
    if damage is not None:
        msg = f"checkpoint {file} cannot be loaded: {damage} (torch: {first_line})"
        return CheckpointError(msg)
    if isinstance(err, pickle.UnpicklingError) and "Weights only load failed" in text:
        found = _UNSUPPORTED_GLOBAL.search(text)
        what = f" (such as {found.group(1)})" if found else ""
        msg = (
            f"checkpoint {file} carries arbitrary pickled objects{what} and is refused: "
            "treadle loads checkpoints with torch.load(weights_only=True) so that a file cannot "
            "run code. If you made the file and trust it, load it with weights_only=False and "
            "save its state again as plain values (str, int, float, lists, dicts, tensors)."
        )
        return CheckpointError(msg)
    if "TorchScript" in text:
        msg = f"checkpoint {file} is a TorchScript archive, not a checkpoint: use torch.jit.load"
        return CheckpointError(msg)
    msg = f"checkpoint {file} cannot be loaded: torch cannot read it ({first_line})"
    return CheckpointError(msg)


def check_payload(file: Path, payload: Any) -> None:
    """Refuse a loaded file that is no treadle checkpoint, or one newer than this treadle.

    :raises CheckpointError: naming the file and what it holds instead.
    """
    if not isinstance(payload, dict):
        msg = (
            f"checkpoint {file} holds a {type(payload).__name__}, not a treadle checkpoint "
            "(a dict with 'model_state_dict')"
        )
        raise CheckpointError(msg)
    if "model_state_dict" not in payload:
        if payload and all(isinstance(value, torch.Tensor) for value in payload.values()):
            msg = (
                f"checkpoint {file} is a bare state_dict, not a treadle checkpoint: load it "
                "with model.load_state_dict(torch.load(path, weights_only=True))"
            )
        else:
            msg = f"checkpoint {file} is not a treadle checkpoint: it holds no 'model_state_dict'"
        raise CheckpointError(msg)
    version = payload.get("format_version", CHECKPOINT_FORMAT_VERSION)
    if not isinstance(version, int) or version > CHECKPOINT_FORMAT_VERSION:
        msg = (
            f"checkpoint {file} has format version {version!r}, newer than this treadle reads "
            f"({CHECKPOINT_FORMAT_VERSION}): upgrade treadle"
        )
        raise CheckpointError(msg)
