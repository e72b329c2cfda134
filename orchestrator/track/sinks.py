"""The sinks of rank 0 that feed the tracker, built from the plan: the journal-backed MLflow sink.

(The live report files are the report package's sink, ``orchestrator.report.live.LiveArtifacts``; the
worker adds it beside these.)
"""

from __future__ import annotations

import math
import os

from orchestrator.track.events import MetricEvent, MetricSink
from orchestrator.track.journal import MetricJournal, journal_path
from orchestrator.track.mlflow_sink import MlflowSink, SinkSettings


def tracker_sinks(plan) -> list[MetricSink]:
    tracking = plan.spec.tracking
    # The sender thread is the only MLflow caller in a worker: bound each of its requests. MLflow
    # reads both variables as integers ("30.0" would be refused and every request would fail).
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(math.ceil(tracking.request_timeout_s))
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(tracking.request_retries)
    settings = SinkSettings(
        flush_interval_s=tracking.flush_interval_s, drain_timeout_s=tracking.drain_timeout_s
    )
    journal = MetricJournal(journal_path(plan.checkpoint_dir))

    # What the sink tells the user lands in worker logs and post-mortems: no secret in it.
    def say(line: str) -> None:
        print(plan.spec.redact(line), flush=True)

    return [MlflowSink(plan.tracking_uri, plan.run_id, journal, settings, say)]


class SkipLoggedSteps:
    """Passes on only events after ``logged_up_to``: after a resume from an older checkpoint the
    replayed steps are already in the tracker, and each step must hold one value."""

    def __init__(self, sink: MetricSink, logged_up_to: int):
        self.sink = sink
        self.logged_up_to = logged_up_to

    def write(self, events: list[MetricEvent]) -> None:
        fresh = [e for e in events if e.step > self.logged_up_to]
        if fresh:
            self.sink.write(fresh)

    def close(self) -> None:
        self.sink.close()
