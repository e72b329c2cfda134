"""Rank 0's metric sinks: the journal in the training process, and behind it a low-priority child
process that sends the points to MLflow and redraws the live report (``orchestrator.track.sinks``)."""

from __future__ import annotations

from orchestrator.report.artifacts import MetricHistory
from orchestrator.track.sinks import JournaledSink, TrackingSinks, journaled_child_sink, mlflow_sink

# The live plots of a run are redrawn at most this often: each redraw is about half a second of CPU
# on a small machine, taken from the ranks whenever they could use it.
PLOT_INTERVAL_S = 10.0


def rank0_sinks(plan, history: MetricHistory | None = None) -> list[JournaledSink]:
    """``history``: what earlier attempts of a resumed run logged, for the live report."""
    return [journaled_child_sink(plan, tracking_sinks, history)]


def tracking_sinks(plan, history: MetricHistory | None = None) -> TrackingSinks:
    """What the child process builds: the batched MLflow sender and, if asked for, the live report."""
    mlflow = mlflow_sink(plan)
    report = plan.spec.report
    if not report.artifacts:
        return TrackingSinks(mlflow)
    from orchestrator.report.live import LiveArtifacts

    if "png" in report.formats:  # imported now, as the run starts, not at its first plot
        from orchestrator.report.artifacts import new_figure

        new_figure(1, 1)[0].close("all")
    return TrackingSinks(mlflow, LiveArtifacts(plan.checkpoint_dir, report.formats, history, PLOT_INTERVAL_S))
