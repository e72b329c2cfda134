"""Evaluations handed to Ray, for a sweep trial: Ray Tune compares trials (and ASHA stops them) on
what each reports.

Only evaluations go there, never training steps: every ``ray.train.report`` waits for Ray Train's
controller to poll the workers, and it is a barrier across ranks, so every rank calls it at the same
evaluations (each rank has the same all-reduced values). Rank 0's values are what Tune receives.
"""

from __future__ import annotations

from orchestrator.track.events import MetricEvent

EVALUATION_METRICS = ("val_loss", "val_perplexity", "val_accuracy")


class EvaluationsToRay:
    """A metric sink on every rank: each evaluation, with its step, to ``ray.train.report``."""

    def write(self, events: list[MetricEvent]) -> None:
        values = {event.name: event.value for event in events}
        if "val_loss" not in values:
            return
        import ray.train

        report = {"step": events[0].step, **{name: values[name] for name in EVALUATION_METRICS}}
        if "train_loss" in values:
            report["train_loss"] = values["train_loss"]
        ray.train.report(report)

    def close(self) -> None:
        pass
