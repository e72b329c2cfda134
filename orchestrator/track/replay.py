"""Replay a run's journal into MLflow: send exactly the points MLflow does not hold yet.

A point is identified by (key, step, timestamp): the sink stamps it once, before the first try, so a
point MLflow already holds is recognised and skipped, and replaying twice sends nothing the second
time. ``orchestrator sync RUN`` calls this; so does the driver when a run ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.track.journal import MetricPoint, load_journal
from orchestrator.track.mlflow_read import read_metric_rows
from orchestrator.track.mlflow_run import MAX_METRICS_PER_BATCH, client, log_points


@dataclass(frozen=True)
class ReplayResult:
    journal_points: int
    already_in_mlflow: int
    sent: int
    damaged_lines: int = 0  # journal lines that were not a point (edited, or a disk error): skipped


def replay_journal(tracking_uri: str, run_id: str, journal: str | Path) -> ReplayResult:
    points, damaged = load_journal(journal)
    missing = missing_points(tracking_uri, run_id, points)
    if missing:
        mlflow = client(tracking_uri)
        for start in range(0, len(missing), MAX_METRICS_PER_BATCH):
            log_points(mlflow, run_id, missing[start : start + MAX_METRICS_PER_BATCH])
    return ReplayResult(len(points), len(points) - len(missing), len(missing), damaged)


def missing_points(tracking_uri: str, run_id: str, points: list[MetricPoint]) -> list[MetricPoint]:
    keys = sorted({p.key for p in points})
    held = read_metric_rows(tracking_uri, run_id, keys) if keys else {}
    present = {(key, step, timestamp) for key, rows in held.items() for step, timestamp, _ in rows}
    unique: dict[tuple[str, int, int], MetricPoint] = {}
    for point in points:
        unique.setdefault((point.key, point.step, point.timestamp), point)
    return [p for ident, p in unique.items() if ident not in present]
