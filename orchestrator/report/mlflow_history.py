"""Read a run's metric history back from MLflow, one value per step (the newest wins)."""

from __future__ import annotations

from orchestrator.report.artifacts import REPORT_METRICS, SUMMARY_METRICS, MetricHistory
from orchestrator.track.mlflow_read import read_latest_per_step
from orchestrator.track.mlflow_run import client


def read_history(
    tracking_uri: str, run_id: str, keys=REPORT_METRICS + SUMMARY_METRICS, run=None
) -> MetricHistory:
    """{key: {step: value}}, one value per step: MLflow's "latest" rule, newest timestamp wins.

    Through a tracking server a finished run is read from its history snapshot when MLflow's latest
    values confirm it (``orchestrator.track.snapshot``): one download instead of every row."""
    if tracking_uri.startswith(("http://", "https://")):
        from orchestrator.track.snapshot import read_snapshot

        mlflow = client(tracking_uri)
        snapshot = read_snapshot(mlflow, run or mlflow.get_run(run_id), keys)
        if snapshot is not None:
            return snapshot
    return read_latest_per_step(tracking_uri, run_id, keys)
