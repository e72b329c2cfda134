"""The live report: JSON at every write, plots when a validation value arrives, at most so often."""

from __future__ import annotations

import json

from orchestrator.track.events import MetricEvent
from orchestrator.track.live_report import LiveArtifacts


def logged(step: int, val: float | None = None) -> list[MetricEvent]:
    events = [MetricEvent("train_loss", 5.0 - step / 100, step), MetricEvent("learning_rate", 1e-3, step)]
    return events + ([MetricEvent("val_loss", val, step)] if val is not None else [])


def test_plots_wait_for_their_interval_and_the_close_draws_what_is_due(tmp_path):
    live = LiveArtifacts(tmp_path, plot_interval_s=3600)
    curve = tmp_path / "training_curve.png"
    live.write(logged(5, val=4.9))
    assert curve.exists(), "the first validation value is drawn at once"
    curve.unlink()
    live.write(logged(10, val=4.8))
    assert not curve.exists(), "within the interval the plot waits"
    assert json.loads((tmp_path / "training_metrics.json").read_text())["steps"] == [5, 10]
    live.close()
    assert curve.exists() and (tmp_path / "loss_by_epoch.png").exists()


def test_without_an_interval_every_validation_value_is_drawn(tmp_path):
    live = LiveArtifacts(tmp_path)
    curve = tmp_path / "training_curve.png"
    live.write(logged(5, val=4.9))
    curve.unlink()
    live.write(logged(10))
    assert not curve.exists(), "no validation value, no redraw"
    live.write(logged(15, val=4.7))
    assert curve.exists()
