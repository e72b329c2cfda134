"""Who a run is, kept apart from what it does: its name, its directories, its tracking store and its
MLflow run. The Plan (from the spec) says what to train; the identity says which run trains it.

Each way a run starts is one function:

    new_identity(spec, cwd)                        a new run: a fresh, timestamped name
    identity_of_record(record, spec, cwd)          a run that exists (resume, reopen, generate, export)
    RunIdentity(...) from a ticket                 the driver of a cluster job (lifecycle.ticket)

Two places belong to a run. ``run_dir`` is a directory on the machine of the driver and rank 0: the
metric journal, the workers' logs, the status file and the live report (node-local is enough for
them). ``checkpoint_uri`` is where its checkpoints go: the same directory when ``checkpoint.dir`` is
a path, or ``s3://.../<run name>`` on an object store, which every node and every later attempt
reaches.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from pathlib import Path

from orchestrator.storage.location import parse_location


@dataclass(frozen=True)
class RunIdentity:
    name: str
    run_dir: str  # the run's own files (journal, logs, status, report)
    checkpoint_uri: str  # its checkpoints: a path, or an s3:// prefix
    tracking_uri: str
    run_id: str = ""  # filled in once the MLflow run exists
    local_run_dir: bool = True  # False: run_dir is a path on the cluster (kubernetes)

    def with_run_id(self, run_id: str) -> RunIdentity:
        return replace(self, run_id=run_id)

    @property
    def checkpoints_local(self) -> bool:
        return parse_location(self.checkpoint_uri).is_local


def runs_root(spec, cwd: Path) -> Path:
    """Where the spec's runs keep their own directories on this machine (or on the cluster's volume)."""
    if spec.cluster.backend == "kubernetes":
        return Path(spec.kubernetes.checkpoint_mount_path)
    location = parse_location(spec.checkpoint.dir)
    if location.is_local:
        return (cwd / location.key).resolve()
    return (cwd / spec.checkpoint.local_dir).resolve()


def checkpoint_root(spec, cwd: Path) -> str:
    """Where the spec's runs keep their checkpoints: a local path, or an object-store URI."""
    location = parse_location(spec.checkpoint.dir)
    if not location.is_local:
        return location.uri
    return str(runs_root(spec, cwd))


def new_identity(spec, cwd: Path, tracking_uri: str) -> RunIdentity:
    """A new run: ``tracking.run_name`` or the spec's name plus a timestamp (never an existing one)."""
    root = runs_root(spec, cwd)
    name = spec.tracking.run_name or _timestamped(spec.name, root)
    on_cluster = spec.cluster.backend == "kubernetes"  # the run's files live on the cluster's volume
    run_dir = f"{str(root).rstrip('/')}/{name}" if on_cluster else str(root / name)
    location = parse_location(spec.checkpoint.dir)
    checkpoints = run_dir if location.is_local else location.child(name).uri
    return RunIdentity(name, run_dir, checkpoints, tracking_uri, local_run_dir=not on_cluster)


def identity_of_record(record, tracking_uri: str) -> RunIdentity:
    """A run that exists, as its MLflow tags name it (``record``: a ``track.runs.RunRecord``)."""
    return RunIdentity(
        name=record.run_name,
        run_dir=record.checkpoint_dir,
        checkpoint_uri=record.checkpoint_uri or record.checkpoint_dir,
        tracking_uri=tracking_uri,
        run_id=record.run_id,
    )


def _timestamped(name: str, parent: Path) -> str:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    candidate, n = f"{name}-{stamp}", 1
    while (parent / candidate).exists():
        n += 1
        candidate = f"{name}-{stamp}-{n}"
    return candidate
