"""The sinks of rank 0, built from the plan.

In the training process there is one: it stamps every metric point and appends it to the journal (the
run's ground truth, so nothing is lost whatever happens next), then hands it to a low-priority child
process (``orchestrator.track.sink_process``) that sends it to MLflow and redraws the live report.
Training never waits for either, and never imports MLflow or matplotlib: on a small machine their
CPU time and the GIL would otherwise come out of the training step.
"""

from __future__ import annotations

import functools
import os

from orchestrator.track.events import MetricEvent
from orchestrator.track.journal import MetricJournal, MetricPoint, journal_path
from orchestrator.track.mlflow_sink import MlflowSink, SinkSettings, stamp

# The live plots of a run are redrawn at most this often: each redraw is about half a second of CPU
# on a small machine, taken from the ranks whenever they could use it.
PLOT_INTERVAL_S = 10.0


def rank0_sinks(plan, history=None) -> list:
    """``history``: what earlier attempts of a resumed run logged, for the live report."""
    from orchestrator.track.sink_process import ChildProcessSink

    journal = MetricJournal(journal_path(plan.checkpoint_dir))
    timeout_s = plan.spec.tracking.drain_timeout_s + 300  # the child may still be sending to MLflow
    return [
        JournaledSink(journal, ChildProcessSink(functools.partial(tracking_sinks, plan, history), timeout_s))
    ]


class JournaledSink:
    """Stamps events into points, journals them, and passes the points on (to the child process)."""

    def __init__(self, journal: MetricJournal, points_sink):
        self.journal, self.points_sink = journal, points_sink

    def write(self, events: list[MetricEvent]) -> None:
        points = stamp(events)
        self.journal.append(points)
        self.points_sink.write(points)

    def close(self) -> None:
        self.points_sink.close()
        self.journal.close()


class TrackingSinks:
    """In the child process: the points to MLflow (with the timestamps the journal holds) and, as
    events, to the live report."""

    def __init__(self, mlflow: MlflowSink, live=None):
        self.mlflow, self.live = mlflow, live

    def write(self, points: list[MetricPoint]) -> None:
        self.mlflow.write_points(points)
        if self.live is not None:
            self.live.write([MetricEvent(p.key, p.value, p.step) for p in points])

    def close(self) -> None:
        self.mlflow.close()
        if self.live is not None:
            self.live.close()


def tracking_sinks(plan, history=None) -> TrackingSinks:
    """What the child process builds: the batched MLflow sender and, if asked for, the live report."""
    tracking = plan.spec.tracking
    # The sender thread is the only MLflow caller in this process: bound each of its requests.
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(tracking.request_timeout_s)
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(tracking.request_retries)
    settings = SinkSettings(
        flush_interval_s=tracking.flush_interval_s, drain_timeout_s=tracking.drain_timeout_s
    )
    mlflow = MlflowSink(plan.tracking_uri, plan.run_id, None, settings)
    if not plan.spec.report.artifacts:
        return TrackingSinks(mlflow)
    from orchestrator.track.live import LiveArtifacts

    if "png" in plan.spec.report.formats:  # imported now, as the run starts, not at its first plot
        from orchestrator.report.artifacts import new_figure

        new_figure(1, 1)[0].close("all")

    live = LiveArtifacts(plan.checkpoint_dir, plan.spec.report.formats, history, PLOT_INTERVAL_S)
    return TrackingSinks(mlflow, live)
