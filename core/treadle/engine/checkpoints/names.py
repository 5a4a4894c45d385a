"""How the files of a checkpoint folder are named: checkpoints, the manifest, temporary files."""

from __future__ import annotations

import os
import re
import secrets

__all__ = ["CHECKPOINT_NAME", "INDEX_NAME", "TEMP_NAME", "checkpoint_name", "temp_name"]

#: The manifest's file name inside the checkpoint folder.
INDEX_NAME = "checkpoints.json"
#: ``epoch_003.pt`` or, saved mid-epoch, ``epoch_003_step_000120.pt``.
CHECKPOINT_NAME = re.compile(r"^epoch_(?P<epoch>\d{3,})(?:_step_(?P<step>\d{6,}))?\.pt$")
#: ``.<target>.<pid>-<process token>-<counter>.tmp``: the pid and a token drawn once per
#: process tell a live writer's file from one a killed process left behind (containers reuse
#: pids, so a pid alone is not enough).
TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.(?P<pid>\d+)-(?P<token>[0-9a-f]{12})-\d+\.tmp$")

_process_token = secrets.token_hex(6)
_temp_counter = iter(range(1 << 62))


def _new_process_token() -> None:
    global _process_token
    _process_token = secrets.token_hex(6)


if hasattr(os, "register_at_fork"):  # a forked child is another writer, with a pid of its own
    os.register_at_fork(after_in_child=_new_process_token)


def process_token() -> str:
    """The token this process writes into its temporary files' names."""
    return _process_token


def checkpoint_name(epoch: int, step: int | None) -> str:
    """The file name of the checkpoint of ``epoch``; ``step`` for a mid-epoch save."""
    return f"epoch_{epoch:03d}" + (f"_step_{step:06d}" if step is not None else "") + ".pt"


def temp_name(target: str) -> str:
    """A fresh temporary file name for writing ``target`` in the same folder."""
    return f".{target}.{os.getpid()}-{_process_token}-{next(_temp_counter)}.tmp"
