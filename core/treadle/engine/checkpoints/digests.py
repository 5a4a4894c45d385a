"""Digests of checkpoint files: a hash over fixed-size blocks, computed on a few threads, so
that checking a large file keeps pace with writing or reading it.

A block digest is the hash of the concatenated hashes of the file's consecutive 16 MiB blocks
(the last one shorter; Dropbox's content hash is built the same way). Blocks are hashed
independently, so several cores share one large file, and a file being written is hashed
block by block behind the writer instead of after it. Manifests written before blocks record
the hash of the whole file as one stream (``block_bytes`` ``None``); those still verify.

To check a file by hand::

    import hashlib
    blocks = []
    with open("epoch_003.pt", "rb") as stream:
        while block := stream.read(16 << 20):
            blocks.append(hashlib.sha256(block).digest())
    print(hashlib.sha256(b"".join(blocks)).hexdigest())
"""

from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import attrs

__all__ = [
    "ALGORITHMS",
    "BLOCK_BYTES",
    "DEFAULT_ALGORITHM",
    "NEW_DIGESTS",
    "Digest",
    "FileHasher",
    "HashKind",
    "hash_file",
]

#: The hashes a manifest may name.
ALGORITHMS = frozenset({"sha256", "blake2b"})
#: sha256 ran at 1.79 GB/s and blake2b at 0.94 GB/s on one core of the development machine
#: (an AMD EPYC with SHA extensions, 64 MiB in memory, median of 5); bench/checkpoint.py
#: prints both for the machine it runs on. A CPU without SHA extensions hashes sha256 at about
#: half blake2b's speed: the manifest names the hash, so switching breaks no older file.
DEFAULT_ALGORITHM = "sha256"
#: Block size of new digests: large enough that the per-block hash and thread hand-off cost
#: nothing measurable, small enough that a 1 GB file gives every core work.
BLOCK_BYTES = 1 << 24
_READ_BYTES = 1 << 22
_MAX_THREADS = 4
_buffers = threading.local()
_UNITS = ((1 << 20, "MiB"), (1 << 10, "KiB"))


@attrs.frozen(kw_only=True)
class HashKind:
    """How a digest is computed.

    :ivar algorithm: a name in :data:`ALGORITHMS`.
    :ivar block_bytes: the block size of a block digest; ``None`` for the hash of the whole
        file as one stream (manifests of treadle 0.1).
    """

    algorithm: str = DEFAULT_ALGORITHM
    block_bytes: int | None = BLOCK_BYTES

    def describe(self) -> str:
        """``sha256`` or ``sha256 over 16 MiB blocks``, for messages."""
        if self.block_bytes is None:
            return self.algorithm
        size = self.block_bytes
        unit = next(
            (f"{size // scale} {name}" for scale, name in _UNITS if size % scale == 0),
            f"{size} bytes",
        )
        return f"{self.algorithm} over {unit} blocks"


#: What new digests are.
NEW_DIGESTS = HashKind()


@attrs.frozen(kw_only=True)
class Digest:
    """A file's digest as the manifest records it: how it was computed and its value in
    lowercase hexadecimal."""

    kind: HashKind
    hex: str

    def to_json(self) -> dict[str, Any]:
        return {
            "algorithm": self.kind.algorithm,
            "block_bytes": self.kind.block_bytes,
            "hex": self.hex,
        }

    @classmethod
    def from_json(cls, value: object) -> Digest:
        """:raises ValueError: not a digest this treadle can check."""
        if not isinstance(value, dict) or set(value) != {"algorithm", "block_bytes", "hex"}:
            msg = "the hash is not an object with algorithm, block_bytes and hex"
            raise ValueError(msg)
        algorithm, block_bytes, text = value["algorithm"], value["block_bytes"], value["hex"]
        if algorithm not in ALGORITHMS:
            msg = f"unknown hash algorithm {algorithm!r} (known: {', '.join(sorted(ALGORITHMS))})"
            raise ValueError(msg)
        if block_bytes is not None and (
            type(block_bytes) is not int or not 1 << 16 <= block_bytes <= 1 << 34
        ):
            msg = f"hash block size {block_bytes!r} is not a whole number of bytes in range"
            raise ValueError(msg)
        kind = HashKind(algorithm=algorithm, block_bytes=block_bytes)
        return cls(kind=kind, hex=_checked_hex(text, algorithm))

    @classmethod
    def whole_file_sha256(cls, text: object) -> Digest:
        """The ``sha256`` field of a treadle 0.1 manifest row.

        :raises ValueError: not 64 hexadecimal digits.
        """
        kind = HashKind(algorithm="sha256", block_bytes=None)
        return cls(kind=kind, hex=_checked_hex(text, "sha256"))


def _checked_hex(text: object, algorithm: str) -> str:
    length = 2 * hashlib.new(algorithm).digest_size
    if not isinstance(text, str) or len(text) != length or text.strip("0123456789abcdef") != "":
        msg = f"the {algorithm} digest is not {length} lowercase hexadecimal digits"
        raise ValueError(msg)
    return text


def _hash_range(fd: int, algorithm: str, start: int, end: int) -> bytes:
    """The hash of bytes ``start:end`` of the file open as ``fd`` (``pread``: the file offset
    is left alone, so the writer can go on writing)."""
    buffer: bytearray | None = getattr(_buffers, "buffer", None)
    if buffer is None:
        buffer = _buffers.buffer = bytearray(_READ_BYTES)
    view = memoryview(buffer)
    digest = hashlib.new(algorithm)
    offset = start
    while offset < end:
        count = os.preadv(fd, [view[: min(_READ_BYTES, end - offset)]], offset)
        if count == 0:
            msg = f"the file ended at byte {offset} while hashing up to byte {end}"
            raise EOFError(msg)
        digest.update(view[:count])
        offset += count
    return digest.digest()


class FileHasher:
    """Hashes a file open as ``fd`` block by block on a small pool of threads, as far as the
    caller says it is written (:meth:`advance`), then the rest (:meth:`finish`).

    Always end it with :meth:`result` or :meth:`cancel`, before ``fd`` is closed.

    :param kind: the algorithm and block size; a whole-file kind (to check a treadle 0.1
        manifest row) hashes on one thread.
    """

    def __init__(self, fd: int, kind: HashKind = NEW_DIGESTS) -> None:
        self._fd = fd
        self._kind = kind
        self._algorithm = kind.algorithm
        self._block_bytes = kind.block_bytes
        self._blocks: list[Future[bytes]] = []
        self._submitted = 0
        self._end: int | None = None
        self._pool: ThreadPoolExecutor | None = None

    def advance(self, size: int) -> None:
        """The file holds at least ``size`` bytes now: hash every block that is complete."""
        if self._block_bytes is None:
            return
        while self._submitted + self._block_bytes <= size:
            self._submit(self._submitted + self._block_bytes)

    def finish(self, size: int) -> None:
        """The file is ``size`` bytes long: hash what is left. Returns at once."""
        self._end = size
        if self._block_bytes is None:
            self._submit(size)
            return
        self.advance(size)
        if self._submitted < size or not self._blocks:
            self._submit(size)

    def result(self) -> Digest:
        """Wait for the hashing to end.

        :raises OSError: reading the file failed.
        :raises EOFError: the file is shorter than :meth:`finish` said.
        """
        if self._end is None:
            msg = "FileHasher.result() needs finish() first"
            raise RuntimeError(msg)
        try:
            parts = [block.result() for block in self._blocks]
        finally:
            self.cancel()
        if self._block_bytes is None:
            (whole,) = parts
            return Digest(kind=self._kind, hex=whole.hex())
        top = hashlib.new(self._algorithm, b"".join(parts)).hexdigest()
        return Digest(kind=self._kind, hex=top)

    def cancel(self) -> None:
        """Stop hashing: blocks not started are dropped, running ones are waited for."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def _submit(self, end: int) -> None:
        start, self._submitted = self._submitted, end
        if self._pool is None:
            threads = min(_MAX_THREADS, os.cpu_count() or 1)
            self._pool = ThreadPoolExecutor(threads, thread_name_prefix="treadle-checkpoint-hash")
        self._blocks.append(self._pool.submit(_hash_range, self._fd, self._algorithm, start, end))


def hash_file(path: str | os.PathLike[str], kind: HashKind = NEW_DIGESTS) -> Digest:
    """The digest of the file at ``path``, as :class:`FileHasher` computes it.

    :raises OSError: the file cannot be read.
    :raises EOFError: it shrank while it was read.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        hasher = FileHasher(fd, kind)
        try:
            hasher.finish(os.fstat(fd).st_size)
            return hasher.result()
        finally:
            hasher.cancel()
    finally:
        os.close(fd)
