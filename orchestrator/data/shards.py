"""Token shard files: a 1 KiB header, then the token ids (uint16, or uint32 for vocabularies above
65,536), as llm.c lays its shards out.

Header: 128 little-endian int64: magic, format version, bytes per id, token count, document count,
then zeros. A reader checks all of them against the file's size, so a truncated or foreign file is
never read as tokens.

>>> import numpy as np, tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "s.bin")
>>> with ShardWriter(path, np.uint16) as w:
...     w.append(np.array([5, 6, 7], dtype=np.uint16), documents=1)
>>> read_header(path)
ShardHeader(itemsize=2, n_tokens=3, n_documents=1)
>>> open_tokens(path).tolist()
[5, 6, 7]
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC = 0x47505453_48415244  # "GPTSHARD"
VERSION = 1
HEADER_BYTES = 1024
_HEADER_WORDS = HEADER_BYTES // 8


class ShardFormatError(ValueError):
    """A file that is not a complete shard of this format."""


@dataclass(frozen=True)
class ShardHeader:
    itemsize: int
    n_tokens: int
    n_documents: int


class ShardWriter:
    """Writes a shard at ``path`` in one pass (the header is filled in on close)."""

    def __init__(self, path: str | Path, dtype):
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.n_tokens = 0
        self.n_documents = 0
        self._file = open(self.path, "wb")  # noqa: SIM115 - closed by close()
        self._file.write(b"\0" * HEADER_BYTES)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def append(self, ids: np.ndarray, documents: int = 0) -> None:
        self._file.write(np.ascontiguousarray(ids, dtype=self.dtype).tobytes())
        self.n_tokens += len(ids)
        self.n_documents += documents

    def close(self) -> None:
        if self._file.closed:
            return
        header = np.zeros(_HEADER_WORDS, dtype="<i8")
        header[:5] = [MAGIC, VERSION, self.dtype.itemsize, self.n_tokens, self.n_documents]
        self._file.seek(0)
        self._file.write(header.tobytes())
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()


def read_header(path: str | Path) -> ShardHeader:
    path = Path(path)
    with open(path, "rb") as handle:
        raw = handle.read(HEADER_BYTES)
    if len(raw) < HEADER_BYTES:
        raise ShardFormatError(f"{path}: shorter than a shard header")
    magic, version, itemsize, n_tokens, n_documents = np.frombuffer(raw, dtype="<i8")[:5].tolist()
    if magic != MAGIC or version != VERSION or itemsize not in (2, 4):
        raise ShardFormatError(f"{path}: not a token shard of this format (version {VERSION})")
    if path.stat().st_size != HEADER_BYTES + itemsize * n_tokens:
        raise ShardFormatError(f"{path}: its size does not match its header ({n_tokens} tokens)")
    return ShardHeader(itemsize, n_tokens, n_documents)


def open_tokens(path: str | Path) -> np.ndarray:
    """The shard's ids, memory-mapped (nothing is read until used)."""
    header = read_header(path)
    if header.n_tokens == 0:
        return np.zeros(0, dtype=np.uint16 if header.itemsize == 2 else np.uint32)
    dtype = np.uint16 if header.itemsize == 2 else np.uint32
    return np.memmap(path, dtype=dtype, mode="r", offset=HEADER_BYTES, shape=(header.n_tokens,))
