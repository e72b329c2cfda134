"""Metric events -> MLflow, from rank 0."""

from __future__ import annotations

import time

from orchestrator.track.events import MetricEvent
from orchestrator.track.mlflow_run import client


class MlflowSink:
    def __init__(self, tracking_uri: str, run_id: str):
        self._client = client(tracking_uri)
        self._run_id = run_id

    def write(self, events: list[MetricEvent]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(e.name, float(e.value), now, e.step) for e in events]
        self._client.log_batch(self._run_id, metrics=metrics)

    def close(self) -> None:
        """Nothing is buffered yet: every write is one synchronous batch."""
