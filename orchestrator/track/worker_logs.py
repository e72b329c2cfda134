"""Each worker's output, also kept in ``<checkpoint dir>/logs/worker-<rank>.log``.

Ray keeps worker output in its session directory on each node, which a post-mortem cannot rely on
(another node, a cluster torn down). The copy in the run's directory survives a SIGKILL because every
line is flushed as it is written; each attempt of a restarted group appends under its own header.
"""

from __future__ import annotations

import contextlib
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

LOG_DIR = "logs"


def worker_log_path(checkpoint_dir: str | Path, rank: int) -> Path:
    return Path(checkpoint_dir) / LOG_DIR / f"worker-{rank}.log"


class _Tee:
    def __init__(self, stream: TextIO, copy: TextIO):
        self._stream, self._copy = stream, copy

    def write(self, text: str) -> int:
        self._copy.write(text)
        self._copy.flush()
        return self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


@contextlib.contextmanager
def tee_worker_output(checkpoint_dir: str | Path, rank: int, node_id: str) -> Iterator[None]:
    """Copy stdout and stderr to the worker's log file; record an escaping exception there too."""
    path = worker_log_path(checkpoint_dir, rank)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", buffering=1) as copy:
        copy.write(f"=== rank {rank} on node {node_id} started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(sys.stdout, copy), _Tee(sys.stderr, copy)
        try:
            yield
        except BaseException:
            copy.write(traceback.format_exc())
            raise
        finally:
            sys.stdout, sys.stderr = saved


def tail_lines(path: Path, count: int) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-count:]
    except OSError:
        return []
