"""The sinks of rank 0, built from the plan: the journal-backed MLflow sink and the live report."""

from __future__ import annotations

import functools
import os

from orchestrator.track.journal import MetricJournal, journal_path
from orchestrator.track.mlflow_sink import MlflowSink, SinkSettings


def rank0_sinks(plan, history=None) -> list:
    """``history``: what earlier attempts of a resumed run logged, for the live report."""
    tracking = plan.spec.tracking
    # The sender thread is the only MLflow caller in a worker: bound each of its requests.
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(tracking.request_timeout_s)
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(tracking.request_retries)
    settings = SinkSettings(
        flush_interval_s=tracking.flush_interval_s, drain_timeout_s=tracking.drain_timeout_s
    )
    journal = MetricJournal(journal_path(plan.checkpoint_dir))
    sinks: list = [MlflowSink(plan.tracking_uri, plan.run_id, journal, settings)]
    if plan.spec.report.artifacts:
        from orchestrator.track.live import LiveArtifacts
        from orchestrator.track.sink_process import ChildProcessSink

        live = functools.partial(LiveArtifacts, plan.checkpoint_dir, plan.spec.report.formats, history)
        sinks.append(ChildProcessSink(live))  # drawing plots off the training process
    return sinks
