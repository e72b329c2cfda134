"""Read a run's metric history back from MLflow, one value per step (the newest wins)."""

from __future__ import annotations

import os

from orchestrator.report.artifacts import REPORT_METRICS, SUMMARY_METRICS, MetricHistory
from orchestrator.track.mlflow_read import read_latest_per_step
from orchestrator.track.mlflow_run import CHECKPOINT_DIR_TAG, client


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
