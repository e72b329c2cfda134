"""Where a run's checkpoints, prepared data and run directory are, as every pod of its RayJob sees them.

No pod shares a directory with the machine that submits, nor (without a ReadWriteMany volume) with
another pod: a location must be on the object store (``s3://``) or under a volume every Ray pod
mounts. With the kubernetes backend both default to the object store, so no shared volume is needed:

- ``checkpoint.dir``: ``<kubernetes.object_store>/checkpoints`` unless the spec names an absolute
  path or an ``s3://`` URI (a relative one, such as the default, is the submitting machine's);
- ``data.prepared``: ``<kubernetes.object_store>/datasets`` unless the spec names one (each dataset
  in a folder of its recipe's key, so runs of the same data share it);
  without a named one the driver prepares ``data.files`` on the cluster, so they must lie under a
  mounted path (``kubernetes.data_claim``);
- ``checkpoint.local_dir``: the pod's node-local scratch disk (``/scratch/runs``).

``pod_locations`` returns them with the problems (each with its fix) that make ``submit`` refuse
and ``k8s render`` note.

>>> from orchestrator.spec import parse_spec
>>> where = pod_locations(parse_spec("name: x\\ncluster: {backend: kubernetes}"), "x-1")
>>> where.checkpoint_dir, where.prepared, where.problems
('s3://gpt-orchestrator/checkpoints', 's3://gpt-orchestrator/datasets', ())
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from orchestrator.spec import RunSpec

SCRATCH_DIR = "/scratch"  # node-local emptyDir: checkpoint shards before upload, run directories
CACHE_DIR = "/cache"  # node-local emptyDir: prepared data streamed from the object store
RUNS_DIR = f"{SCRATCH_DIR}/runs"


@dataclass(frozen=True)
class PodLocations:
    checkpoint_dir: str  # the root: each run writes <root>/<run name>/
    prepared: str
    local_dir: str
    problems: tuple[str, ...]  # each "field: what; hint: how to fix it"


def mounted_paths(spec: RunSpec) -> dict[str, bool]:
    """Mount path -> writable, of the volumes every Ray pod (head and workers) mounts from a claim."""
    k8s = spec.kubernetes
    mounts = {}
    if k8s.checkpoint_claim:
        mounts[k8s.checkpoint_mount_path.rstrip("/")] = True
    if k8s.data_claim:
        mounts[k8s.data_mount_path.rstrip("/")] = False
    return mounts


def pod_locations(spec: RunSpec, run_name: str) -> PodLocations:
    k8s, fields = spec.kubernetes, spec.checkpoint.model_fields_set
    store = k8s.object_store.rstrip("/")
    problems = []
    # A relative directory (the default one too) is the submitting machine's: the store instead.
    own = "dir" in fields and spec.checkpoint.dir.startswith(("/", "s3://"))
    checkpoint_dir = spec.checkpoint.dir if own else f"{store}/checkpoints"
    problems += _reachable("checkpoint.dir", checkpoint_dir, spec, writable=True)
    named = spec.data.prepared is not None
    prepared = spec.data.prepared if named else f"{store}/datasets"
    problems += _reachable("data.prepared", prepared, spec, writable=not named)
    if not named and spec.data.corpus == "files":
        problems += _files_mounted(spec)
    local_dir = spec.checkpoint.local_dir
    if "local_dir" not in fields or not _under(local_dir, {RUNS_DIR: True, **mounted_paths(spec)}, True):
        local_dir = RUNS_DIR
    return PodLocations(checkpoint_dir, prepared, local_dir, tuple(problems))


def _reachable(field: str, location: str, spec: RunSpec, writable: bool) -> list[str]:
    if location.startswith("s3://"):
        return []
    mounts = mounted_paths(spec)
    if _under(location, mounts, writable):
        return []
    if writable and _under(location, mounts, False):
        return [f"{field}: {location} is on a read-only volume of the pods; hint: use s3://bucket/prefix"]
    return [
        f"{field}: {location} is on no volume every pod mounts (each pod has its own disk); hint: "
        f"leave it out for {spec.kubernetes.object_store.rstrip('/')}/..., name s3://bucket/prefix, or "
        "mount a ReadWriteMany claim there (kubernetes.checkpoint_claim / data_claim and their mount paths)"
    ]


def _files_mounted(spec: RunSpec) -> list[str]:
    outside = [p for p in spec.data.files if not _under(p, mounted_paths(spec), False)]
    if not outside:
        return []
    mount = spec.kubernetes.data_mount_path.rstrip("/")
    return [
        f"data.files: {outside[0]!r}{f' (and {len(outside) - 1} more)' if len(outside) > 1 else ''} lies "
        "under no path the pods mount, and the cluster prepares them; hint: mount their volume "
        f"(kubernetes.data_claim, then files under {mount}/), or prepare them first "
        "(`orchestrator prepare`) into data.prepared: s3://bucket/prefix"
    ]


def _under(path: str, mounts: dict[str, bool], writable: bool) -> bool:
    """Whether ``path`` (absolute; a glob's fixed part counts) is one of ``mounts`` or inside one."""
    if not path.startswith("/"):
        return False
    normal = posixpath.normpath(path)
    return any(
        (normal == mount or normal.startswith(mount + "/")) and (ok or not writable)
        for mount, ok in mounts.items()
        if mount
    )
