"""Runs MLflow still calls RUNNING whose driver is gone (killed by SIGKILL, its machine lost, its disk
full before it could finish the run): `orchestrator sync` and `orchestrator cancel` settle them.

Whether a process still drives a run is read from the run's lease (``orchestrator.lifecycle.lease``),
in its checkpoint location: live while its holder renews it. A run without a lease (one started by
an older version) counts as driven while its ``status.json`` was updated within
``HEARTBEAT_STALE_S``. A detached run (ray-job, kubernetes) is judged by its job's state, which the
caller asks the backend for.

    note = sync(record, job)      # replay; finish the run if its job ended, or FAILED if abandoned
    cancel_foreground(record)     # KILLED if abandoned; a live one is stopped where it runs
"""

from __future__ import annotations

import time

from orchestrator.errors import LaunchError, OrchestratorError
from orchestrator.lifecycle.lease import read_lease
from orchestrator.lifecycle.status import HEARTBEAT_STALE_S
from orchestrator.storage.location import parse_location
from orchestrator.track.runs import KILLED_STATUS, RUNNING_STATUS, JobHandle, RunRecord
from orchestrator.track.status import read_status


def sync(record: RunRecord, job: JobHandle | None = None):
    """``orchestrator sync``: a ``track.finish.SyncResult`` (its ``note`` says why a RUNNING run was
    left as it is)."""
    from orchestrator.track.finish import sync_run

    ended = None
    if record.job_id:
        if job is None:
            return sync_run(record.tracking_uri, record.run_id)  # the job's state is unknown here
        if job.state.is_final:
            why = job.error or f"its job ended {job.state.value} before its driver finished the run"
            ended = (job.state.mlflow_status, why)
        return sync_run(record.tracking_uri, record.run_id, ended, alive=lambda: f"job {record.job_id}")
    return sync_run(record.tracking_uri, record.run_id, alive=lambda: driver_of(record))


def cancel_foreground(record: RunRecord) -> str:
    """``orchestrator cancel`` of a run trained in the foreground of a submit (ray-local): one whose
    driver is gone is marked KILLED; a live one is stopped where it runs (LaunchError saying where).
    Returns the run's MLflow status afterwards."""
    from orchestrator.track.finish import finish_run
    from orchestrator.track.runs import get_run

    status = get_run(record.tracking_uri, record.run_id).info.status
    if status != RUNNING_STATUS:
        return status
    driver = driver_of(record)
    if driver is not None:
        raise LaunchError(
            f"run {record.run_name} trains in the foreground of its `orchestrator submit`: {driver}; "
            "stop it there with Ctrl-C (or kill that process), which marks the run KILLED"
        )
    reason = "cancelled with `orchestrator cancel`: its driver had ended without finishing the run"
    local = record.checkpoint_dir if parse_location(record.checkpoint_dir or "/").is_local else None
    finish_run(record.tracking_uri, record.run_id, KILLED_STATUS, local, reason)
    return KILLED_STATUS


def driver_of(record: RunRecord) -> str | None:
    """Who drives the run now (its process and host), or None when nobody does."""
    from orchestrator.lifecycle.lease import live_holder

    store = _checkpoint_store(record)
    if read_lease(store) is not None:
        holder = live_holder(store, record.run_id)
        return holder.describe() if holder is not None else None
    status = read_status(record.checkpoint_dir) if record.checkpoint_dir else None
    updated = status.get("updated") if isinstance(status, dict) else None
    if isinstance(updated, (int, float)) and time.time() - updated < HEARTBEAT_STALE_S:
        return f"a process that updated {record.checkpoint_dir}/status.json {time.time() - updated:.0f}s ago"
    return None


def _checkpoint_store(record: RunRecord):
    from orchestrator.storage.store import StoreSettings, open_store

    location = record.checkpoint_uri or record.checkpoint_dir
    return open_store(location, StoreSettings.from_env(_stored_storage(record, location)))


def _stored_storage(record: RunRecord, location: str):
    """The run's own `storage` settings, for an object store (its keys may be the spec's)."""
    if parse_location(location).is_local:
        return None
    from orchestrator.spec import parse_spec
    from orchestrator.track.runs import read_stored_spec

    try:
        return parse_spec(read_stored_spec(record.tracking_uri, record.run_id), "spec.yaml").storage
    except OrchestratorError:
        return None
