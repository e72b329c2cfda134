"""Everything about recording a run: the run vocabulary (``runs``: MLflow tags, statuses, job states,
run lookup), the MLflow run, metric events and the journal-backed background sink, replay/sync, fast
history reads, the live ``status.json``, the workers' log files and the UI command.

May import: spec, plan (the Plan type) and the base helpers. Never report, train, lifecycle, launchers
or the CLI: what reads the tracker sits above it.
"""

from orchestrator.track.events import MetricEvent, MetricSink

__all__ = ["MetricEvent", "MetricSink"]
