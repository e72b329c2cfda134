"""Read a run's metric history back from MLflow, one value per step (the newest wins)."""

from __future__ import annotations

import os

from orchestrator.report.artifacts import REPORT_METRICS, MetricHistory
from orchestrator.track.mlflow_run import CHECKPOINT_DIR_TAG, client


def read_history(tracking_uri: str, run_id: str, keys=REPORT_METRICS) -> MetricHistory:
    mlflow = client(tracking_uri)
    history: MetricHistory = {}
    for key in keys:
        # SQL stores return rows by timestamp, not by step; a retried or replayed step may appear
        # twice, and the newest value is the one that counts.
        rows = sorted(mlflow.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
        if rows:
            history[key] = {m.step: m.value for m in rows}
    return history


def get_run(tracking_uri: str, run_id: str):
    """The MLflow run, or a LookupError that says where we looked."""
    from mlflow.exceptions import MlflowException

    sqlite_file = tracking_uri.removeprefix("sqlite:///")
    if tracking_uri.startswith("sqlite:///") and not os.path.exists(sqlite_file):
        raise LookupError(
            f"no MLflow store at {sqlite_file}; run this where you ran submit, or pass --tracking-uri"
        )
    try:
        return client(tracking_uri).get_run(run_id)
    except MlflowException as exc:
        raise LookupError(
            f"no MLflow run {run_id} in {tracking_uri} ({exc.message}); check the run id printed by "
            "submit, and --tracking-uri if the run was tracked elsewhere"
        ) from None


def run_checkpoint_dir(run) -> str:
    try:
        return run.data.tags[CHECKPOINT_DIR_TAG]
    except KeyError:
        raise LookupError(
            f"MLflow run {run.info.run_id} has no {CHECKPOINT_DIR_TAG} tag: it was not started by this "
            "orchestrator; pass --out DIR to choose where the report goes"
        ) from None
