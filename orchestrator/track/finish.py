"""The end of a run in MLflow: every journaled point delivered, the report uploaded, the status set.

The driver calls ``finish_run`` when the job ends. If MLflow is unreachable then, the final status is
already recorded next to the journal, and ``sync_run`` (``orchestrator sync RUN``) completes the same
steps later: replay the journal, upload the report, set the status.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import NotFoundError
from orchestrator.fsutil import atomic_write
from orchestrator.track.journal import journal_path, read_journal
from orchestrator.track.mlflow_run import client
from orchestrator.track.replay import ReplayResult, replay_journal
from orchestrator.track.runs import (
    CHECKPOINT_DIR_TAG,
    FINAL_STATUS_FILE,
    RUN_RECORD_FILE,
    RUN_STATUSES,
    RUNNING_STATUS,
    get_run,
)
from orchestrator.track.snapshot import upload_snapshot

REPORT_SUFFIXES = (".json", ".png")


@dataclass(frozen=True)
class SyncResult:
    replay: ReplayResult | None  # None: the run has no journal
    status: str  # MLflow's status of the run afterwards


def finish_run(tracking_uri: str, run_id: str, status: str, checkpoint_dir: str | None) -> SyncResult:
    """Deliver what the journal holds, upload the report artifacts, set FINISHED, FAILED or KILLED."""
    if status not in RUN_STATUSES:
        raise ValueError(f"status must be one of {RUN_STATUSES}, got {status!r}")
    if checkpoint_dir and os.path.isdir(checkpoint_dir):
        payload = json.dumps({"run_id": run_id, "status": status}).encode()
        atomic_write(Path(checkpoint_dir) / FINAL_STATUS_FILE, payload)
    replay = _replay(tracking_uri, run_id, checkpoint_dir)
    mlflow = client(tracking_uri)
    _upload_report(mlflow, run_id, checkpoint_dir)
    journal = journal_path(checkpoint_dir) if checkpoint_dir else None
    if journal is not None and journal.is_file():  # every journaled point is in MLflow now
        upload_snapshot(mlflow, run_id, list(read_journal(journal)))
    mlflow.set_terminated(run_id, status=status)
    return SyncResult(replay, status)


def sync_run(tracking_uri: str, run_id: str) -> SyncResult:
    """Replay the run's journal; finish the run if its job ended while MLflow was unreachable."""
    run = get_run(tracking_uri, run_id)
    checkpoint_dir = run.data.tags.get(CHECKPOINT_DIR_TAG)
    if not checkpoint_dir or not os.path.isdir(checkpoint_dir):
        raise NotFoundError(
            f"MLflow run {run_id} has no readable checkpoint directory ({checkpoint_dir}); sync reads "
            "the journal there, so run it on the machine that trained the run"
        )
    final = _recorded_status(checkpoint_dir, run_id)
    if run.info.status == RUNNING_STATUS and final:
        return finish_run(tracking_uri, run_id, final, checkpoint_dir)
    return SyncResult(_replay(tracking_uri, run_id, checkpoint_dir), run.info.status)


def _replay(tracking_uri: str, run_id: str, checkpoint_dir: str | None) -> ReplayResult | None:
    journal = journal_path(checkpoint_dir) if checkpoint_dir else None
    if journal is None or not journal.is_file():
        return None
    return replay_journal(tracking_uri, run_id, journal)


def _recorded_status(checkpoint_dir: str, run_id: str) -> str | None:
    try:
        record = json.loads((Path(checkpoint_dir) / FINAL_STATUS_FILE).read_text())
    except (OSError, ValueError):  # none, or damaged: nothing recorded that sync could trust
        return None
    if not isinstance(record, dict) or record.get("run_id") != run_id:
        return None
    return record["status"] if record.get("status") in RUN_STATUSES else None


def _upload_report(mlflow, run_id: str, checkpoint_dir: str | None) -> None:
    if not checkpoint_dir or not os.path.isdir(checkpoint_dir):
        return
    for name in sorted(os.listdir(checkpoint_dir)):
        if name.endswith(REPORT_SUFFIXES) and name not in (FINAL_STATUS_FILE, RUN_RECORD_FILE):
            mlflow.log_artifact(run_id, os.path.join(checkpoint_dir, name), "report")
