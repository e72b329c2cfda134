"""Small file-system helpers shared by the data cache, the report writers and the run directory."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from orchestrator.errors import UsageError


@contextlib.contextmanager
def atomic_output(path: Path, suffix: str = "") -> Iterator[Path]:
    """A temporary path beside ``path`` to write into; on success it replaces ``path`` at once, so
    readers see either the old file or the new one, never half of it. On failure it is removed."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; these files are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: Path, payload: bytes) -> None:
    """Write a file so readers see either the old or the new content, never half of it."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(payload)


def output_directory(path: str | Path, option: str = "--out") -> Path:
    """A directory to write into, created if need be; a UsageError (not a traceback) for a path
    that is a file, cannot be created or cannot be written."""
    directory = Path(path)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot create the directory ({exc.strerror})") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: the directory is not writable")
    return directory


def write_output_file(path: str | Path, text: str, option: str = "--out") -> Path:
    """Write a file the user named; a UsageError for a directory or a place that cannot be written."""
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"{option} {path}: is a directory; give a file name")
    try:
        target.write_text(text)
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot write the file ({exc.strerror})") from None
    return target


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's content, read in 8 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()
