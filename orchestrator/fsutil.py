"""Small file-system helpers shared by the data cache, the report writers and the run directory."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


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
