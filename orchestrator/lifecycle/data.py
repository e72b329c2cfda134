"""The data step of a run's life: the prepared dataset the plan reads, made first when it is missing
or stale. ``validate`` takes ``known_data`` instead, which never tokenizes anything.

Where preparation runs: on the Ray the run uses (an embedded Ray here, or the cluster of
``cluster.address``) through the launcher's runner; for ray-job and kubernetes on this machine's
embedded Ray (their jobs then read what it wrote to ``data.prepared``); a corpus of one piece in this
process.
"""

from __future__ import annotations

from pathlib import Path

from orchestrator.errors import PlanError
from orchestrator.lifecycle.places import check_cache
from orchestrator.plan.data import DataPlan, data_plan, estimated_data_plan, local_tokenizer


def prepare_data(spec, cwd: Path | None = None, runner=None, say=print) -> DataPlan:
    """The run's dataset, prepared now if need be (``runner``: where its pieces are tokenized)."""
    from orchestrator.data.prepare import cache_root, dataset_uri, prepare
    from orchestrator.storage.store import StoreSettings, open_store

    cwd = (cwd or Path.cwd()).resolve()
    require_reachable_data(spec)
    check_cache(cache_root(), for_writing=True)  # before any work: a message, not an OSError midway
    manifest = prepare(spec, cwd, runner, say)
    uri = dataset_uri(spec, cwd)
    store = open_store(uri, StoreSettings.from_env(spec.storage))
    return data_plan(manifest, uri, spec.model.context_length, local_tokenizer(store, manifest, cache_root()))


def known_data(spec, cwd: Path | None = None) -> DataPlan:
    """The prepared dataset's sizes if it is there, else an estimate from the sources' sizes."""
    from orchestrator.data.prepare import cache_root, dataset_uri, find_prepared, source_bytes
    from orchestrator.storage.store import StoreSettings, open_store

    cwd = (cwd or Path.cwd()).resolve()
    check_cache(cache_root(), for_writing=False)
    uri = dataset_uri(spec, cwd)
    manifest = find_prepared(spec, cwd)
    if manifest is None:
        return estimated_data_plan(spec, uri, source_bytes(spec, cwd))
    store = open_store(uri, StoreSettings.from_env(spec.storage))
    return data_plan(manifest, uri, spec.model.context_length, local_tokenizer(store, manifest, cache_root()))


def recorded_data(spec, cwd: Path | None = None) -> DataPlan:
    """The dataset an existing run trained on, as its manifest is now (sources not checked again: a
    changed source makes a new dataset, which the run's checkpoints refuse to continue on)."""
    from orchestrator.data.prepare import cache_root, dataset_uri, read_manifest, source_bytes
    from orchestrator.storage.store import StoreSettings, open_store

    cwd = (cwd or Path.cwd()).resolve()
    check_cache(cache_root(), for_writing=False)
    uri = dataset_uri(spec, cwd)
    store = open_store(uri, StoreSettings.from_env(spec.storage))
    manifest = read_manifest(store)
    if manifest is None:
        return estimated_data_plan(spec, uri, source_bytes(spec, cwd))
    return data_plan(manifest, uri, spec.model.context_length, local_tokenizer(store, manifest, cache_root()))


def sources_here(spec, cwd: Path | None = None) -> bool:
    """Whether this machine has the corpus's sources (or the corpus is built in)."""
    from orchestrator.data.prepare import source_bytes
    from orchestrator.errors import NotRunnableHere

    try:
        source_bytes(spec, (cwd or Path.cwd()).resolve())
        return True
    except NotRunnableHere:
        return False


def require_reachable_data(spec) -> None:
    """Workers on other nodes cannot read this machine's cache: a cluster run names where its data is."""
    cluster = spec.cluster
    on_cluster = cluster.backend == "ray-job" or (cluster.backend == "ray-local" and cluster.address)
    if on_cluster and spec.data.prepared is None:
        raise PlanError(
            "data.prepared is not set, so the prepared data would stay in this machine's cache, which "
            "workers on other nodes of the cluster cannot read; hint: set data.prepared to "
            "s3://bucket/datasets (see the storage section) or to a path every node mounts"
        )
