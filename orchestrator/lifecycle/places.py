"""Where a run's files go, checked before anything is written: the run's own directory (it must be new,
and its parent a directory this user can create directories in) and this machine's data cache
(``ORCHESTRATOR_CACHE_DIR``: a directory, writable where data is prepared). A place that cannot be
used is a message naming the setting to change (exit 2), not an OSError half-way through a submit.

A run's directory is made by ``make_run_directory``, which says which directories it created, so a
submit that fails before its run exists removes exactly those (``remove_created``): no empty
orphan is left behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path

from orchestrator.errors import NotRunnableHere, UsageError


def existing_ancestor(path: Path) -> Path:
    """The nearest of ``path`` and its parents that exists (at worst the root)."""
    path = Path(os.path.abspath(path))
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def creatable(path: Path) -> str | None:
    """Why directories cannot be made at ``path`` (or below it), or None when they can: the nearest
    existing place is probed by making (and removing) a directory in it, so a read-only mount, a
    pseudo file system (/proc) or missing permissions are found as they are, not guessed."""
    path = Path(os.path.abspath(path))
    if path.is_dir():
        base = path
    else:
        base = existing_ancestor(path)
        if not base.is_dir():
            return f"{base} is a file, not a directory"
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".orchestrator-probe-", dir=base))
    except OSError as exc:
        return f"directories cannot be made in {base} ({_why(exc)})"
    return None


def _why(exc: OSError) -> str:
    if exc.errno == errno.EROFS:
        return "it is on a read-only file system"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "it is not writable by you"
    if exc.errno == errno.ENOSPC:
        return "its disk is full: No space left on device"
    return exc.strerror or str(exc)


def check_run_directory(spec, run_dir: str) -> None:
    """A new run's directory: not there yet, and makeable where the spec puts it."""
    from orchestrator.storage.location import parse_location

    field = "checkpoint.dir" if parse_location(spec.checkpoint.dir).is_local else "checkpoint.local_dir"
    written = spec.checkpoint.dir if field == "checkpoint.dir" else spec.checkpoint.local_dir
    if os.path.lexists(run_dir):
        raise NotRunnableHere(
            f"tracking.run_name {spec.tracking.run_name!r}: the run directory {run_dir} exists already "
            "(a run of that name); hint: choose another tracking.run_name, leave it unset for a new "
            f"timestamped name, or continue that run with `orchestrator submit --resume {Path(run_dir).name}`"
        )
    problem = creatable(Path(run_dir).parent)
    if problem:
        raise NotRunnableHere(
            f"{field} {written}: cannot hold the run's directory: {problem}; hint: set {field} to a "
            "directory you can write to"
        )


def check_cache(root: Path, for_writing: bool) -> None:
    """This machine's data cache: a directory (or a place one can be made), writable when data is
    prepared into it."""
    named = (
        "ORCHESTRATOR_CACHE_DIR"
        if "ORCHESTRATOR_CACHE_DIR" in os.environ
        else "the data cache (ORCHESTRATOR_CACHE_DIR unset)"
    )
    base = existing_ancestor(root)
    problem = None
    if not base.is_dir():
        problem = f"{base} is a file, not a directory"
    elif for_writing:
        problem = creatable(root)
    if problem:
        raise UsageError(
            f"{named}={root}: cannot hold the prepared data: {problem}; hint: point "
            "ORCHESTRATOR_CACHE_DIR at a directory you can write to (or set data.prepared)"
        )


def make_run_directory(run_dir: str) -> list[Path]:
    """Make the run's directory (and missing parents); the directories made, deepest first."""
    target = Path(run_dir)
    created, path = [], target
    while not os.path.lexists(path) and path != path.parent:
        created.append(path)
        path = path.parent
    try:
        target.mkdir(parents=True, exist_ok=False)
    except OSError as exc:
        remove_created(created)
        raise UsageError(f"cannot make the run directory {run_dir} ({_why(exc)})") from None
    return created


def remove_created(created: list[Path]) -> None:
    """Remove the directories ``make_run_directory`` made, as long as they are empty."""
    for path in created:
        with contextlib.suppress(OSError):
            path.rmdir()
