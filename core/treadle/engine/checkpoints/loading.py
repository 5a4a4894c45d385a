"""Reading a checkpoint file with verification: ``torch.load(weights_only=True)`` while the
file's digest (or, for a file the manifest does not list, its zip CRCs) is checked beside it,
and inspecting a file the manifest lacks so that it can be listed."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from treadle.engine.checkpoints.diagnosis import (
    check_payload,
    digest_damage,
    empty_or_crc_damage,
    is_zip_archive,
    load_error,
    size_damage,
)
from treadle.engine.checkpoints.digests import FileHasher, HashKind, hash_file
from treadle.engine.checkpoints.errors import CheckpointError
from treadle.engine.checkpoints.manifest import (
    MAX_MANIFEST_BYTES,
    Entry,
    ManifestDamage,
    decode_manifest,
)
from treadle.engine.checkpoints.names import CHECKPOINT_NAME, INDEX_NAME
from treadle.engine.checkpoints.state import clean_metrics, tensor_mib

__all__ = ["inspect_unlisted", "listed_damage", "read_checkpoint", "read_verified"]


def _load(file: Path, *, mmap: bool) -> Any:
    # weights_only passed explicitly: torch 2.13 lets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD flip only
    # the default (serialization.py, "can only override if callsite did not explicitly set
    # weights_only"); tests/test_checkpoints.py guards this
    return torch.load(file, map_location="cpu", weights_only=True, mmap=mmap)


def read_verified(file: Path, expected: Entry | None, *, checked: bool = False) -> dict[str, Any]:
    """Load ``file`` while checking it: against the size and digest the manifest recorded
    (``expected``), or, for ``None``, its zip CRC-32s. The check's verdict comes first.
    ``checked`` skips the check, for a file whose digest was just found right and that has
    not changed since.

    The digest is computed on helper threads that read the file beside ``torch.load``: from a
    cold cache the disk serves each page once (to whichever reader comes first), and the
    hash costs wall time only where it is slower than the read.

    :raises CheckpointError: the file is damaged, unreadable, carries pickled objects or is no
        treadle checkpoint; the message names the file and the problem.
    """
    load_failure: Exception | None = None
    payload: Any = None
    damage: str | None = None
    if checked:
        try:
            payload = _load(file, mmap=False)
        except Exception as err:  # torch raises many types for a bad file; all mean one
            load_failure = err
    elif expected is None:
        with ThreadPoolExecutor(1, thread_name_prefix="treadle-checkpoint-verify") as pool:
            verdict = pool.submit(empty_or_crc_damage, file)
            try:
                payload = _load(file, mmap=False)
            except Exception as err:  # torch raises many types for a bad file; all mean one
                load_failure = err
            damage = verdict.result()
    else:
        damage, payload, load_failure = _load_hashing(file, expected)
    if damage is not None:
        msg = f"checkpoint {file} is damaged: {damage}"
        raise CheckpointError(msg) from load_failure
    if load_failure is not None:
        raise load_error(file, load_failure) from load_failure
    check_payload(file, payload)
    return dict(payload)


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A checkpoint file's contents, verified and loaded weights-only, without a manager (and
    without writing anything): against its manifest's digest when the manifest of its folder
    lists it, else against its zip CRCs.

    :raises CheckpointError: the file is missing, damaged, carries pickled objects or is no
        treadle checkpoint; the message names the file.
    """
    file = Path(path)
    if not file.is_file():
        msg = f"checkpoint {file} does not exist"
        raise CheckpointError(msg)
    listed = None
    try:
        with (file.parent / INDEX_NAME).open("rb") as stream:
            manifest = decode_manifest(stream.read(MAX_MANIFEST_BYTES + 1))
        listed = next((entry for entry in manifest.entries if entry.file == file.name), None)
    except (OSError, ManifestDamage):
        listed = None  # no manifest, or a damaged one: the file's own CRCs decide
    return read_verified(file, listed)


def _load_hashing(file: Path, expected: Entry) -> tuple[str | None, Any, Exception | None]:
    try:
        fd = os.open(file, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        return "the file is missing", None, None
    try:
        size = os.fstat(fd).st_size
        damage = size_damage(size, expected.size_bytes)
        if damage is not None:
            return damage, None, None
        hasher = FileHasher(fd, expected.digest.kind)
        try:
            hasher.finish(size)
            try:
                payload = _load(file, mmap=False)
            except Exception as err:  # torch raises many types for a bad file; all mean one
                return _verdict(file, hasher, expected), None, err
            return _verdict(file, hasher, expected), payload, None
        finally:
            hasher.cancel()
    finally:
        os.close(fd)


def _verdict(file: Path, hasher: FileHasher, expected: Entry) -> str | None:
    try:
        found = hasher.result()
    except (OSError, EOFError) as err:  # EOFError: the file shrank while it was read
        return f"it cannot be read to the end ({err})"
    return digest_damage(file, found, expected.digest)


def listed_damage(file: Path, expected: Entry) -> str | None:
    """What is wrong with a listed file without loading it (``None``: nothing)."""
    try:
        size = file.stat().st_size
    except FileNotFoundError:
        return "the file is missing"
    damage = size_damage(size, expected.size_bytes)
    if damage is not None:
        return damage
    try:
        found = hash_file(file, expected.digest.kind)
    except (OSError, EOFError) as err:  # EOFError: the file shrank while it was read
        return f"it cannot be read to the end ({err})"
    return digest_damage(file, found, expected.digest)


def _payload_run_id(payload: Any) -> str | None:
    run_id = payload.get("run_id")
    return run_id if isinstance(run_id, str) and run_id else None


def inspect_unlisted(file: Path, hashing: HashKind) -> Entry:
    """A manifest entry for a checkpoint file the manifest lacks, after checking its CRCs;
    its digest is of the kind ``hashing`` names.

    :raises CheckpointError: the file is damaged, carries pickled objects, or is no treadle
        checkpoint.
    """
    damage = empty_or_crc_damage(file)
    if damage is not None:
        msg = f"checkpoint {file} is damaged: {damage}"
        raise CheckpointError(msg)
    try:
        # mapped, not read, when it can be: only the small values are looked at. A legacy
        # (pickle-format) file cannot be mapped, and torch would say only that.
        payload = _load(file, mmap=is_zip_archive(file))
    except Exception as err:  # torch raises many types for a bad file; all mean one
        raise load_error(file, err) from err
    check_payload(file, payload)
    match = CHECKPOINT_NAME.match(file.name)
    if match is None:
        msg = f"{file.name!r} is not a checkpoint name"
        raise CheckpointError(msg)
    try:
        digest = hash_file(file, hashing)
        size = file.stat().st_size
    except (OSError, EOFError) as err:  # EOFError: the file shrank while it was read
        msg = f"checkpoint {file} cannot be read to the end: {err}"
        raise CheckpointError(msg) from err
    try:
        return Entry(
            file=file.name,
            epoch=int(payload.get("epoch", match["epoch"])),
            step=int(payload.get("global_step", match["step"] or 0)),
            mid_epoch=bool(payload.get("mid_epoch", match["step"] is not None)),
            sequence=0,
            digest=digest,
            size_bytes=size,
            metrics=clean_metrics(payload.get("metrics") or {}),
            timestamp=str(payload.get("timestamp", "")),
            model_size_mb=tensor_mib(payload.get("model_state_dict")),
            optimizer_state_size_mb=tensor_mib(payload.get("optimizer_state_dict")),
            run_id=_payload_run_id(payload),
        )
    except (TypeError, ValueError) as err:
        msg = f"checkpoint {file} has malformed epoch, step or metrics: {err}"
        raise CheckpointError(msg) from err
    finally:
        del payload  # unmaps the file
