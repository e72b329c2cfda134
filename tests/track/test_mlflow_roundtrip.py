"""Events -> MLflow (real sqlite store) -> reporter: what comes back equals what went in."""

from __future__ import annotations

import pytest

from orchestrator.errors import NotFoundError
from orchestrator.report import build_report
from orchestrator.report.artifacts import METRICS_JSON
from orchestrator.report.mlflow_history import read_history
from orchestrator.track.events import MetricEvent
from orchestrator.track.live_report import LiveArtifacts
from orchestrator.track.mlflow_sink import MlflowSink


def events_for(step: int) -> list[MetricEvent]:
    # awkward floats on purpose: the round trip must be bit-exact
    events = [
        MetricEvent("train_loss", 6.0 / (step + 0.1), step),
        MetricEvent("learning_rate", 1e-3 / 3 * step, step),
        MetricEvent("epoch", 1.0 + step // 10, step),
    ]
    if step % 10 == 0:
        events.append(MetricEvent("val_loss", 5.5 / (step + 0.3), step))
    return events


def test_rebuilt_json_is_byte_equal_to_the_live_one(sqlite_run, tmp_path):
    uri, run_id, out = sqlite_run
    sink, live = MlflowSink(uri, run_id), LiveArtifacts(out)
    for step in range(5, 31, 5):
        batch = events_for(step)
        sink.write(batch)
        live.write(batch)
    live.close()
    sink.close()
    build_report(uri, run_id, tmp_path / "rebuilt")
    assert (tmp_path / "rebuilt" / METRICS_JSON).read_bytes() == (out / METRICS_JSON).read_bytes()


def test_a_step_logged_twice_counts_once_with_the_newest_value(sqlite_run):
    uri, run_id, _ = sqlite_run
    sink = MlflowSink(uri, run_id)
    sink.write([MetricEvent("train_loss", 2.0, 5)])
    assert sink.flush()
    import time

    time.sleep(0.01)  # MLflow orders equal steps by millisecond timestamp
    sink.write([MetricEvent("train_loss", 1.5, 5), MetricEvent("train_loss", 1.0, 10)])
    sink.close()
    assert read_history(uri, run_id)["train_loss"] == {5: 1.5, 10: 1.0}


def test_report_defaults_to_the_runs_checkpoint_dir(sqlite_run):
    uri, run_id, out = sqlite_run
    sink = MlflowSink(uri, run_id)
    sink.write(events_for(5))
    sink.close()
    paths, _ = build_report(uri, run_id)
    assert {p.parent for p in paths} == {out}


def test_report_of_a_run_without_metrics_says_so(sqlite_run):
    uri, run_id, _ = sqlite_run
    with pytest.raises(NotFoundError, match="no train_loss"):
        build_report(uri, run_id)


def test_report_of_an_unknown_run_names_the_store(sqlite_run):
    uri, _, _ = sqlite_run
    with pytest.raises(NotFoundError, match=r"no MLflow run 0+ in sqlite"):
        build_report(uri, "0" * 32)
