"""Real file systems that misbehave, for tests: a small tmpfs that fills up (ENOSPC) or a read-only
bind mount (EROFS), in a mount namespace of the command's own (``unshare``), so nothing outside the
command sees them and nothing needs unmounting. Root uses a plain mount namespace; any other user a
user namespace as well (``unshare -r``), where the kernel allows it.
"""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import subprocess

import pytest


def _unshare() -> list[str]:
    return ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-rm"]


@functools.cache
def private_mounts_work() -> bool:
    """Whether this machine lets a process mount a tmpfs in a namespace of its own."""
    if shutil.which("unshare") is None:
        return False
    probe = [*_unshare(), "sh", "-c", "mount -t tmpfs -o size=16k tmpfs /mnt 2>/dev/null || exit 1"]
    return subprocess.run(probe, capture_output=True, timeout=30).returncode == 0


def require_private_mounts() -> None:
    if not private_mounts_work():
        pytest.skip("this machine lets no process mount a file system in a namespace of its own")


def with_mounts(command: list[str], small_tmpfs: dict | None = None, read_only: tuple = ()) -> list[str]:
    """``command`` run with a tmpfs of that many bytes on each directory of ``small_tmpfs`` and each
    directory of ``read_only`` bind-mounted read-only over itself (every directory must exist)."""
    tmpfs = (small_tmpfs or {}).items()
    steps = [f"mount -t tmpfs -o size={size} tmpfs {shlex.quote(str(path))}" for path, size in tmpfs]
    for path in read_only:
        quoted = shlex.quote(str(path))
        steps += [f"mount --bind {quoted} {quoted}", f"mount -o remount,bind,ro {quoted}"]
    script = " && ".join([*steps, 'exec "$@"'])
    return [*_unshare(), "sh", "-c", script, "sh", *command]
