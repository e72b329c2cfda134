"""Metric events and where they go: MLflow and the live artifacts."""

from orchestrator.track.events import MetricEvent, MetricSink

__all__ = ["MetricEvent", "MetricSink"]
