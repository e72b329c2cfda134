"""The sinks of rank 0 that feed the tracker.

In the training process there is one: it stamps every metric point and appends it to the journal (the
run's ground truth, so nothing is lost whatever happens next), then hands it to a low-priority child
process (``orchestrator.track.sink_process``) that sends it to MLflow and redraws the live report
(``orchestrator.train.tracking`` puts the two together). Training never waits for either, and never
imports MLflow or matplotlib: on a small machine their CPU time and the GIL would otherwise come out
of the training step.
"""

from __future__ import annotations

import functools
import math
import os

from orchestrator.track.events import MetricEvent, MetricSink
from orchestrator.track.journal import MetricJournal, MetricPoint, journal_path
from orchestrator.track.mlflow_sink import MlflowSink, SinkSettings, stamp


def journaled_child_sink(plan, factory, *args) -> JournaledSink:
    """The journal of the run, with a child process behind it that builds its sinks with
    ``factory(plan, *args)`` (a module-level function, since it is pickled to the child)."""
    from orchestrator.track.sink_process import ChildProcessSink

    journal = MetricJournal(journal_path(plan.checkpoint_dir))
    timeout_s = plan.spec.tracking.drain_timeout_s + 300  # the child may still be sending to MLflow
    return JournaledSink(journal, ChildProcessSink(functools.partial(factory, plan, *args), timeout_s))


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

    def __init__(self, mlflow: MlflowSink, live: MetricSink | None = None):
        self.mlflow, self.live = mlflow, live

    def write(self, points: list[MetricPoint]) -> None:
        self.mlflow.write_points(points)
        if self.live is not None:
            self.live.write([MetricEvent(p.key, p.value, p.step) for p in points])

    def close(self) -> None:
        self.mlflow.close()
        if self.live is not None:
            self.live.close()


def mlflow_sink(plan) -> MlflowSink:
    """The batched MLflow sender of the run (built in the child process; the journal is the parent's)."""
    tracking = plan.spec.tracking
    # The sender thread is the only MLflow caller in its process: bound each of its requests. MLflow
    # reads both variables as integers ("30.0" would be refused and every request would fail).
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(math.ceil(tracking.request_timeout_s))
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(tracking.request_retries)
    settings = SinkSettings(
        flush_interval_s=tracking.flush_interval_s, drain_timeout_s=tracking.drain_timeout_s
    )

    # What the sink tells the user lands in worker logs and post-mortems: no secret in it.
    def say(line: str) -> None:
        print(plan.spec.redact(line), flush=True)

    return MlflowSink(plan.tracking_uri, plan.run_id, None, settings, say)


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
