"""The one metrics pipeline: where every rank's metric events go. The training loop hands numbers to
``open_sinks(plan, rank, resumed)`` and knows nothing of MLflow, plots or files.

    rank 0:       MetricEvent -> journal (the run's ground truth, appended at once)
                                 -> a low-priority child process (``sink_process``):
                                      MLflow sender (batched, retried)  ·  live report files
    every rank:   its heartbeat / the run's status.json (``status``)
    a sweep trial: each evaluation to ``ray.train.report`` (on to Ray Tune), on every rank

In the training process there is no MLflow and no matplotlib: on a small machine their CPU time and
the GIL would come out of the training step. After a resume, steps already logged (by MLflow or by
the killed attempt's journal) are not logged twice, the journaled ones MLflow lacks are sent first,
and the live report starts from that history.
"""

from __future__ import annotations

import functools
import math
import os

from orchestrator.report.artifacts import MetricHistory
from orchestrator.text import first_line
from orchestrator.track.events import MetricEvent, MetricSink
from orchestrator.track.journal import MetricJournal, MetricPoint, journal_path
from orchestrator.track.mlflow_sink import MlflowSink, SinkSettings, stamp

# The live plots of a run are redrawn at most this often: each redraw is about half a second of CPU
# on a small machine, taken from the ranks whenever they could use it.
PLOT_INTERVAL_S = 10.0


class MetricsPipeline:
    """This rank's sinks as one: ``write`` hands each batch of events to all of them."""

    def __init__(self, sinks: list[MetricSink]):
        self.sinks = sinks

    def write(self, events: list[MetricEvent]) -> None:
        for sink in self.sinks:
            sink.write(events)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


def open_sinks(plan, rank: int, resumed: bool, world: int | None = None) -> MetricsPipeline:
    """Where rank ``rank``'s metric events go (``resumed``: a restored checkpoint's attempt; ``world``:
    the ranks, the plan's by default)."""
    from orchestrator.track.status import RunStatusFile
    from orchestrator.track.system_metrics import NodePlace

    place = NodePlace.from_env(rank, world or plan.world_size)
    sinks: list[MetricSink] = _rank0_sinks(plan, resumed, place.node_id) if rank == 0 else []
    if place.monitors_other_node and _monitors(plan):
        sinks.append(node_monitor(plan, place.node_id))
    sinks.append(RunStatusFile(plan.checkpoint_dir, plan.total_steps, rank))
    if plan.report_to_ray:  # a sweep trial; every rank, since each report is a barrier
        sinks.append(EvaluationsToRay())
    return MetricsPipeline(sinks)


def _rank0_sinks(plan, resumed: bool, node_id: str | None = None) -> list[MetricSink]:
    if not resumed or not plan.run_id:
        return [journaled_child_sink(plan, tracking_sinks, node_id=node_id)]
    history = logged_history(plan)
    logged = max(history.get("train_loss", {0: 0.0}))
    child = journaled_child_sink(plan, tracking_sinks, history, node_id=node_id, catch_up_through=logged)
    return [SkipLoggedSteps(child, logged)]


def _monitors(plan) -> bool:
    return plan.spec.tracking.system_metrics and bool(plan.run_id)


def logged_history(plan) -> MetricHistory:
    """What earlier attempts of the run logged: MLflow's history and the journal's (points journaled by
    a killed attempt may not have reached MLflow yet; the resumed attempt's sender sends them first,
    see ``catch_up``)."""
    from orchestrator.track.journal import journaled_per_step
    from orchestrator.track.live_report import LiveArtifacts
    from orchestrator.track.mlflow_read import read_latest_per_step

    history = read_latest_per_step(plan.tracking_uri, plan.run_id, LiveArtifacts.METRICS)
    for key, values in journaled_per_step(journal_path(plan.checkpoint_dir), LiveArtifacts.METRICS).items():
        history.setdefault(key, {}).update(values)
    return history


def journaled_child_sink(plan, factory, *args, **kwargs) -> JournaledSink:
    """The journal of the run, with a child process behind it that builds its sinks with
    ``factory(plan, *args, **kwargs)`` (a module-level function, since it is pickled to the child)."""
    from orchestrator.track.sink_process import ChildProcessSink

    journal = MetricJournal(journal_path(plan.checkpoint_dir))
    factory = functools.partial(factory, plan, *args, **kwargs)
    return JournaledSink(journal, ChildProcessSink(factory, _child_timeout_s(plan)))


def _child_timeout_s(plan) -> float:
    return plan.spec.tracking.drain_timeout_s + 300  # the child may still be sending to MLflow


def tracking_sinks(
    plan, history: MetricHistory | None = None, node_id: str | None = None, catch_up_through: int = 0
) -> TrackingSinks:
    """What the child process builds: the batched MLflow sender, the monitor of rank 0's node and,
    if asked for, the live report. A resumed attempt's sender first catches up on the earlier
    attempts' journaled steps (up to ``catch_up_through``) that MLflow lacks."""
    mlflow = mlflow_sink(plan)
    if catch_up_through:
        catch_up(plan, mlflow, catch_up_through)
    monitor = system_metrics(plan, node_id) if _monitors(plan) else None
    report = plan.spec.report
    if not report.artifacts:
        return TrackingSinks(mlflow, monitor=monitor)
    from orchestrator.track.live_report import LiveArtifacts

    if "png" in report.formats:  # imported now, as the run starts, not at its first plot
        from orchestrator.report.artifacts import new_figure

        new_figure(1, 1)[0].close("all")
    live = LiveArtifacts(plan.checkpoint_dir, report.formats, history, PLOT_INTERVAL_S)
    return TrackingSinks(mlflow, live, monitor)


def system_metrics(plan, node_id: str | None):
    """MLflow's monitor of this node (in a child process: see ``track.system_metrics``)."""
    from orchestrator.track.system_metrics import SystemMetrics

    bound_requests(plan.spec.tracking)
    interval = plan.spec.tracking.system_metrics_interval_s
    return SystemMetrics(plan.tracking_uri, plan.run_id, interval, node_id, say=_say(plan))


def node_monitor(plan, node_id: str | None) -> NodeMonitor:
    """The light child process that monitors a node without rank 0."""
    from orchestrator.track.sink_process import ChildProcessSink

    factory = functools.partial(monitor_only, plan, node_id)
    return NodeMonitor(ChildProcessSink(factory, _child_timeout_s(plan)))


def monitor_only(plan, node_id: str | None) -> MonitorOnly:
    """What a node monitor's child process builds."""
    return MonitorOnly(system_metrics(plan, node_id))


class NodeMonitor:
    """A node's monitor in its child process; the rank's events are not its business."""

    def __init__(self, child):
        self.child = child

    def write(self, events: list[MetricEvent]) -> None:
        pass

    def close(self) -> None:
        self.child.close()


class MonitorOnly:
    """In a node monitor's child process: the monitor, as a sink that writes nothing."""

    def __init__(self, monitor):
        self.monitor = monitor

    def write(self, events) -> None:
        pass

    def close(self) -> None:
        self.monitor.close()


class JournaledSink:
    """Stamps events into points, journals them, and passes the points on (``write_points``)."""

    def __init__(self, journal: MetricJournal, points_sink):
        self.journal, self.points_sink = journal, points_sink

    def write(self, events: list[MetricEvent]) -> None:
        points = stamp(events)
        self.journal.append(points)
        self.points_sink.write_points(points)

    def close(self) -> None:
        self.points_sink.close()
        self.journal.close()


class TrackingSinks:
    """In the child process: the points to MLflow (with the timestamps the journal holds) and, as
    events, to the live report; beside them the node's system-metrics monitor, closed with them."""

    def __init__(self, mlflow: MlflowSink, live: MetricSink | None = None, monitor=None):
        self.mlflow, self.live, self.monitor = mlflow, live, monitor

    def write(self, points: list[MetricPoint]) -> None:
        self.mlflow.write_points(points)
        if self.live is not None:
            self.live.write([MetricEvent(p.key, p.value, p.step) for p in points])

    def close(self) -> None:
        if self.monitor is not None:
            self.monitor.close()
        self.mlflow.close()
        if self.live is not None:
            self.live.close()


def mlflow_sink(plan) -> MlflowSink:
    """The batched MLflow sender of the run (built in the child process; the journal is the parent's)."""
    tracking = plan.spec.tracking
    bound_requests(tracking)
    settings = SinkSettings(
        flush_interval_s=tracking.flush_interval_s, drain_timeout_s=tracking.drain_timeout_s
    )
    return MlflowSink(plan.tracking_uri, plan.run_id, settings, _say(plan))


def catch_up(plan, mlflow: MlflowSink, through_step: int) -> None:
    """Queue on ``mlflow`` the journal's points of steps up to ``through_step`` that MLflow does not
    hold: what a killed attempt journaled while its tracking child was behind. Sent now, MLflow's
    charts of a restarted run have no gap while it trains (the driver's replay at the end would
    otherwise be the first to send them, and a run trained without a driver would never get them).
    The new attempt journals only later steps, so nothing is sent twice."""
    from orchestrator.track.journal import load_journal
    from orchestrator.track.replay import missing_points

    path = journal_path(plan.checkpoint_dir)
    try:
        earlier = [p for p in load_journal(path)[0] if p.step <= through_step] if path.is_file() else []
        missing = missing_points(plan.tracking_uri, plan.run_id, earlier) if earlier else []
    except Exception as exc:  # MLflow unreachable: training goes on, the driver's replay sends them
        _say(plan)(
            f"[track] could not compare the run's journal with MLflow ({first_line(exc)}): the steps an "
            "earlier attempt journaled reach MLflow when the run ends (or with `orchestrator sync RUN_ID`)"
        )
        return
    if missing:
        mlflow.write_points(missing)


def bound_requests(tracking) -> None:
    """Bound every MLflow request of this (child) process, whose only MLflow callers are the sender
    and the system monitor. MLflow reads both variables as integers ("30.0" would be refused and
    every request would fail)."""
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(math.ceil(tracking.request_timeout_s))
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(tracking.request_retries)


def _say(plan):
    """What the child tells the user lands in worker logs and post-mortems: no secret in it."""

    def say(line: str) -> None:
        print(plan.spec.redact(line), flush=True)

    return say


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


class EvaluationsToRay:
    """A sweep trial's sink on every rank: each evaluation, with its step, to ``ray.train.report``.

    Only evaluations go there, never training steps: every ``ray.train.report`` waits for Ray Train's
    controller to poll the workers, and it is a barrier across ranks, so every rank calls it at the
    same evaluations (each rank has the same all-reduced values). Rank 0's values are what Tune gets."""

    METRICS = ("val_loss", "val_perplexity", "val_accuracy")

    def write(self, events: list[MetricEvent]) -> None:
        values = {event.name: event.value for event in events}
        if "val_loss" not in values:
            return
        import ray.train

        report = {"step": events[0].step, **{name: values[name] for name in self.METRICS}}
        if "train_loss" in values:
            report["train_loss"] = values["train_loss"]
        ray.train.report(report)

    def close(self) -> None:
        pass
