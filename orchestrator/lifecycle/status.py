"""A submitted run seen from outside, for every backend: what `orchestrator status/logs/list` show.

A run is found by its MLflow run id or name (``orchestrator.track.runs``). Its tags say which backend
ran it and where its directory is; the directory's ``status.json`` says where training is and how
each worker is doing. A backend that keeps jobs (ray-job, kubernetes) is asked for the job's state by
the caller, which wins over MLflow's (a job killed before it could finish its MLflow run still shows
as STOPPED).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from orchestrator.lifecycle.post_mortem import POST_MORTEM_FILE
from orchestrator.text import format_duration
from orchestrator.track.runs import JobHandle, JobState, RunRecord, get_run
from orchestrator.track.status import format_progress, read_status, worker_health
from orchestrator.track.worker_logs import LOG_DIR

HEARTBEAT_STALE_S = 120.0


def describe_status(record: RunRecord, state: JobState, job: JobHandle | None = None) -> str:
    where = f", job {record.job_id} at {record.address}" if record.job_id else ""
    reason = f" ({job.reason})" if job is not None and job.reason else ""
    lines = [
        f"run        {record.run_name} (MLflow run {record.run_id})",
        f"backend    {record.backend}{where}",
        f"state      {state.value}{reason}",
    ]
    if job is not None and job.error:
        lines.append(f"error      {job.error}")
    status = read_status(record.checkpoint_dir) if record.checkpoint_dir else None
    if status is None:
        lines.append("progress   no step logged yet")
    else:
        lines += _describe_progress(status, state.is_final)
    post_mortem = Path(record.checkpoint_dir) / POST_MORTEM_FILE
    if record.checkpoint_dir and post_mortem.is_file():
        lines.append(f"post-mortem {post_mortem}")
    lines.append(f"artifacts  {record.checkpoint_dir}")
    return "\n".join(lines)


def _describe_progress(status: dict[str, Any], ended: bool) -> list[str]:
    now = time.time()
    metrics = "  ".join(f"{k} {v:.4g}" for k, v in sorted(status.get("metrics", {}).items()))
    lines = [
        f"progress   {format_progress(status)}",
        f"step       {status['step']}/{status['total_steps']}, epoch {status.get('epoch', '?')}, "
        f"updated {format_duration(now - status.get('updated', now))} ago",
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
        final = record.state.is_final
        for log in sorted((Path(record.checkpoint_dir) / LOG_DIR).glob("worker-*.log")):
            text = log.read_text(errors="replace")
            for line in text[shown.get(log, 0) :].splitlines():
                yield f"({log.stem}) {line}\n"
            shown[log] = len(text)
        if not follow or final:
            return
        time.sleep(1.0)
        record = RunRecord.of(record.tracking_uri, get_run(record.tracking_uri, record.run_id))


def describe_list_row(record: RunRecord, state: JobState) -> str:
    status = read_status(record.checkpoint_dir) if record.checkpoint_dir else None
    step = f"{status['step']}/{status['total_steps']}" if status else "-"
    return f"{record.run_id}  {state.value:<9}  {step:>9}  {record.backend:<9}  {record.run_name}"
