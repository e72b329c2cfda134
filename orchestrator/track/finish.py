"""The end of a run in MLflow: every journaled point delivered, the report uploaded, the status set.

The driver calls ``finish_run`` when the job ends. If MLflow is unreachable then, the final status is
already recorded next to the journal, and ``sync_run`` (``orchestrator sync RUN``) completes the same
steps later: replay the journal, upload the report, set the status.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import NotFoundError
from orchestrator.fsutil import atomic_write
from orchestrator.text import first_line
from orchestrator.track.journal import journal_path, read_journal
from orchestrator.track.mlflow_run import client
from orchestrator.track.replay import ReplayResult, replay_journal
from orchestrator.track.runs import (
    CHECKPOINT_DIR_TAG,
    ERROR_TAG,
    FAILED_STATUS,
    FINAL_STATUS_FILE,
    RUN_RECORD_FILE,
    RUN_STATUSES,
    RUNNING_STATUS,
    STOP_REASON_TAG,
    get_run,
    is_store_error,
)
from orchestrator.track.snapshot import upload_snapshot

log = logging.getLogger(__name__)

REPORT_SUFFIXES = (".json", ".png")


@dataclass(frozen=True)
class SyncResult:
    replay: ReplayResult | None  # None: the run has no journal
    status: str  # MLflow's status of the run afterwards
    note: str | None = None  # why sync left a RUNNING run as it is (it is still training, ...)


# MLflow keeps tag values up to 8000 characters; a reason is its first few lines.
MAX_REASON = 4000


def finish_run(
    tracking_uri: str, run_id: str, status: str, checkpoint_dir: str | None, reason: str | None = None
) -> SyncResult:
    """Deliver what the journal holds, upload the report artifacts, set FINISHED, FAILED or KILLED
    with ``reason`` (why it failed, or why it stopped). The final status is recorded beside the journal
    first, for `sync` when MLflow cannot be reached; a step that fails on this machine (a full disk)
    does not keep the status from being set. A store error is raised: the run stays RUNNING until
    `sync` finishes it."""
    if status not in RUN_STATUSES:
        raise ValueError(f"status must be one of {RUN_STATUSES}, got {status!r}")
    reason = reason[:MAX_REASON] if reason else None
    record_final_status(checkpoint_dir, run_id, status, reason)
    mlflow = client(tracking_uri)
    replay = _locally(lambda: _replay(tracking_uri, run_id, checkpoint_dir), "replay the journal")
    _locally(lambda: _upload_report(mlflow, run_id, checkpoint_dir), "upload the report")
    journal = journal_path(checkpoint_dir) if checkpoint_dir else None
    if journal is not None and journal.is_file():  # every journaled point is in MLflow now
        _locally(lambda: upload_snapshot(mlflow, run_id, list(read_journal(journal))), "upload the history")
    if reason:
        mlflow.set_tag(run_id, ERROR_TAG if status == FAILED_STATUS else STOP_REASON_TAG, reason)
    mlflow.set_terminated(run_id, status=status)
    return SyncResult(replay, status)


def record_final_status(checkpoint_dir: str | None, run_id: str, status: str, reason: str | None) -> bool:
    """The final status beside the journal (``tracking-status.json``); False when it cannot be written
    (a full disk: said, and the status goes to MLflow all the same)."""
    if not checkpoint_dir or not os.path.isdir(checkpoint_dir):
        return False
    payload = json.dumps({"run_id": run_id, "status": status, "reason": reason}).encode()
    try:
        atomic_write(Path(checkpoint_dir) / FINAL_STATUS_FILE, payload)
        return True
    except OSError as exc:
        log.warning("could not record the final status %s in %s (%s)", status, checkpoint_dir, exc.strerror)
        return False


def _locally(step, what: str):
    """A step of finishing whose failure on this machine (not MLflow's) is said and passed over."""
    try:
        return step()
    except Exception as exc:
        if is_store_error(exc):
            raise
        log.warning("could not %s while finishing the run (%s)", what, first_line(exc))
        return None


def sync_run(tracking_uri: str, run_id: str, job_ended: tuple[str, str | None] | None = None, alive=None):
    """Replay the run's journal; finish a RUNNING run whose job ended: with the final status recorded
    beside the journal, else with ``job_ended`` (status, reason: what its backend says), else FAILED
    when ``alive()`` says no process drives it any more (it returns a description of the process that
    does, or None). A run nobody can vouch for either way is left RUNNING, with a note."""
    run = get_run(tracking_uri, run_id)
    checkpoint_dir = run.data.tags.get(CHECKPOINT_DIR_TAG)
    if not checkpoint_dir or not os.path.isdir(checkpoint_dir):
        raise NotFoundError(
            f"MLflow run {run_id} has no readable checkpoint directory ({checkpoint_dir}); sync reads "
            "the journal there, so run it on the machine that trained the run"
        )
    if run.info.status != RUNNING_STATUS:
        return SyncResult(_replay(tracking_uri, run_id, checkpoint_dir), run.info.status)
    final = recorded_final_status(checkpoint_dir, run_id)
    if final:
        return finish_run(tracking_uri, run_id, final[0], checkpoint_dir, final[1])
    if job_ended:
        return finish_run(tracking_uri, run_id, job_ended[0], checkpoint_dir, job_ended[1])
    driver = alive() if alive else "unknown"
    if driver:
        note = f"still training: {driver}" if driver != "unknown" else "its job's state is unknown"
        return SyncResult(_replay(tracking_uri, run_id, checkpoint_dir), run.info.status, note)
    reason = (
        "the run's driver ended without finishing it (no final status was recorded); "
        "`orchestrator sync` marked it"
    )
    return finish_run(tracking_uri, run_id, FAILED_STATUS, checkpoint_dir, reason)


def _replay(tracking_uri: str, run_id: str, checkpoint_dir: str | None) -> ReplayResult | None:
    journal = journal_path(checkpoint_dir) if checkpoint_dir else None
    if journal is None or not journal.is_file():
        return None
    return replay_journal(tracking_uri, run_id, journal)


def recorded_final_status(checkpoint_dir: str, run_id: str) -> tuple[str, str | None] | None:
    """(status, reason) recorded beside the journal when the job ended, or None."""
    try:
        record = json.loads((Path(checkpoint_dir) / FINAL_STATUS_FILE).read_text())
    except (OSError, ValueError):  # none, or damaged: nothing recorded that sync could trust
        return None
    if not isinstance(record, dict) or record.get("run_id") != run_id:
        return None
    if record.get("status") not in RUN_STATUSES:
        return None
    reason = record.get("reason")
    return record["status"], reason if isinstance(reason, str) else None


def _upload_report(mlflow, run_id: str, checkpoint_dir: str | None) -> None:
    if not checkpoint_dir or not os.path.isdir(checkpoint_dir):
        return
    for name in sorted(os.listdir(checkpoint_dir)):
        if name.endswith(REPORT_SUFFIXES) and name not in (FINAL_STATUS_FILE, RUN_RECORD_FILE):
            mlflow.log_artifact(run_id, os.path.join(checkpoint_dir, name), "report")
