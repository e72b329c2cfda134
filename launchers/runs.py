"""Runs after submission, for every backend: `orchestrator status/logs/cancel/list`.

A run is found by its MLflow run id. Its tags say which backend ran it, where its directory is and,
for a ray-job, which job on which cluster; the directory's ``status.json`` says where training is and
how each worker is doing. A backend that keeps jobs (ray-job) is asked for the job's state, which
wins over MLflow's (a job killed before it could finish its MLflow run still shows as STOPPED).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launchers.base import JobHandle, JobState, get_launcher
from launchers.post_mortem import POST_MORTEM_FILE
from launchers.worker_logs import LOG_DIR
from orchestrator.track.status import format_duration, format_progress, read_status, worker_health

JOB_ID_TAG = "orchestrator.job_id"
ADDRESS_TAG = "orchestrator.address"
BACKEND_TAG = "orchestrator.backend"
_MLFLOW_STATES = {
    "RUNNING": JobState.RUNNING,
    "SCHEDULED": JobState.PENDING,
    "FINISHED": JobState.SUCCEEDED,
    "FAILED": JobState.FAILED,
    "KILLED": JobState.STOPPED,
}
HEARTBEAT_STALE_S = 120.0


@dataclass(frozen=True)
class RunRecord:
    tracking_uri: str
    run_id: str
    run_name: str
    backend: str
    checkpoint_dir: str
    mlflow_status: str
    job_id: str
    address: str

    def launcher(self):
        return get_launcher(self.backend, self.address or None)


def find_run(tracking_uri: str, run_id: str) -> RunRecord:
    from orchestrator.report.mlflow_history import get_run, run_checkpoint_dir

    run = get_run(tracking_uri, run_id)
    tags = run.data.tags
    return RunRecord(
        tracking_uri=tracking_uri,
        run_id=run.info.run_id,
        run_name=run.info.run_name or "",
        backend=tags.get(BACKEND_TAG, "ray-local"),
        checkpoint_dir=run_checkpoint_dir(run),
        mlflow_status=run.info.status,
        job_id=tags.get(JOB_ID_TAG, ""),
        address=tags.get(ADDRESS_TAG, ""),
    )


def tag_job(tracking_uri: str, run_id: str, handle: JobHandle, address: str) -> None:
    from orchestrator.track.mlflow_run import client

    mlflow = client(tracking_uri)
    mlflow.set_tag(run_id, JOB_ID_TAG, handle.job_id)
    mlflow.set_tag(run_id, ADDRESS_TAG, address)


def run_state(record: RunRecord) -> JobState:
    if record.job_id:
        return record.launcher().status(record.job_id).state
    return mlflow_state(record)


def mlflow_state(record: RunRecord) -> JobState:
    return _MLFLOW_STATES.get(record.mlflow_status, JobState.RUNNING)


def describe_status(record: RunRecord, state: JobState) -> str:
    where = f", job {record.job_id} at {record.address}" if record.job_id else ""
    lines = [
        f"run        {record.run_name} (MLflow run {record.run_id})",
        f"backend    {record.backend}{where}",
        f"state      {state.value}",
    ]
    status = read_status(record.checkpoint_dir)
    if status is None:
        lines.append("progress   no step logged yet")
    else:
        lines += _describe_progress(status, state.is_final)
    post_mortem = Path(record.checkpoint_dir) / POST_MORTEM_FILE
    if post_mortem.is_file():
        lines.append(f"post-mortem {post_mortem}")
    lines.append(f"artifacts  {record.checkpoint_dir}")
    return "\n".join(lines)


def _describe_progress(status: dict[str, Any], ended: bool) -> list[str]:
    now = time.time()
    metrics = "  ".join(f"{k} {v:.4g}" for k, v in sorted(status.get("metrics", {}).items()))
    lines = [
        f"progress   {format_progress(status)}",
        f"step       {status['step']}/{status['total_steps']}, epoch {status.get('epoch', '?')}, "
        f"updated {format_duration(now - status['updated'])} ago",
        f"metrics    {metrics}",
    ]
    for worker in status.get("workers", []):
        health = "ended" if ended else worker_health(worker, now, HEARTBEAT_STALE_S)
        lines.append(
            f"worker {worker['rank']:<3} {health:<6} "
            f"node {str(worker.get('node', ''))[:12] or '?'} host {worker.get('host')} "
            f"pid {worker.get('pid')} rss {worker.get('rss_mb', 0):.0f} MB, "
            f"last heartbeat {format_duration(now - float(worker['time']))} ago at step {worker['step']}"
        )
    return lines


def follow_worker_logs(record: RunRecord, follow: bool) -> Iterator[str]:
    """A foreground run's worker logs from its directory; with ``follow``, until MLflow says it ended."""
    shown: dict[Path, int] = {}
    while True:
        final = mlflow_state(record).is_final
        for log in sorted((Path(record.checkpoint_dir) / LOG_DIR).glob("worker-*.log")):
            text = log.read_text(errors="replace")
            for line in text[shown.get(log, 0) :].splitlines():
                yield f"({log.stem}) {line}\n"
            shown[log] = len(text)
        if not follow or final:
            return
        time.sleep(1.0)
        record = find_run(record.tracking_uri, record.run_id)


def list_runs(tracking_uri: str) -> list[RunRecord]:
    """Every run this orchestrator started in the tracking store, newest first."""
    from orchestrator.track.mlflow_run import client

    mlflow = client(tracking_uri)
    experiments = [e.experiment_id for e in mlflow.search_experiments()]
    runs = mlflow.search_runs(experiments, filter_string=f"tags.`{BACKEND_TAG}` != ''")
    return [
        RunRecord(
            tracking_uri=tracking_uri,
            run_id=r.info.run_id,
            run_name=r.info.run_name or "",
            backend=r.data.tags.get(BACKEND_TAG, ""),
            checkpoint_dir=r.data.tags.get("orchestrator.checkpoint_dir", ""),
            mlflow_status=r.info.status,
            job_id=r.data.tags.get(JOB_ID_TAG, ""),
            address=r.data.tags.get(ADDRESS_TAG, ""),
        )
        for r in runs
    ]


def describe_list_row(record: RunRecord, state: JobState) -> str:
    status = read_status(record.checkpoint_dir) if record.checkpoint_dir else None
    step = f"{status['step']}/{status['total_steps']}" if status else "-"
    return f"{record.run_id}  {state.value:<9}  {step:>9}  {record.backend:<9}  {record.run_name}"
