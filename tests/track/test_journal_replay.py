"""The journal, replay and `orchestrator sync` against a real sqlite store, and the NaN/inf round trip.

"MLflow unreachable" is a real tracking URI on a loopback port where nothing listens.
"""

from __future__ import annotations

import json
import math
import socket
import sys

import pytest

from orchestrator.report import build_report
from orchestrator.report.artifacts import METRICS_JSON, load_training_metrics
from orchestrator.report.mlflow_history import read_history
from orchestrator.report.summary import SUMMARY_JSON
from orchestrator.track.events import MetricEvent
from orchestrator.track.finish import finish_run
from orchestrator.track.journal import MetricJournal, journal_path, read_journal
from orchestrator.track.live_report import LiveArtifacts
from orchestrator.track.mlflow_read import read_metric_rows
from orchestrator.track.mlflow_run import client
from orchestrator.track.mlflow_sink import MlflowSink, SinkSettings
from orchestrator.track.pipeline import JournaledSink
from orchestrator.track.replay import replay_journal
from tests.conftest import run_cli

KEYS = ("train_loss", "learning_rate", "epoch", "val_loss")


@pytest.fixture
def unreachable_uri(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # the port was free and nothing binds it again


def training_events(step: int) -> list[MetricEvent]:
    events = [
        MetricEvent("train_loss", 7.0 / (step + 0.3), step),
        MetricEvent("learning_rate", 1e-3 / 7 * step, step),
        MetricEvent("epoch", 1.0 + step // 20, step),
    ]
    return events + ([MetricEvent("val_loss", 6.5 / (step + 0.7), step)] if step % 10 == 0 else [])


def test_nan_and_inf_come_out_of_the_reporter_as_they_went_in(sqlite_run, tmp_path):
    uri, run_id, out = sqlite_run
    values = {5: 4.0, 10: math.nan, 15: math.inf, 20: -math.inf, 25: 3.25}
    sink, live = JournaledSink(MetricJournal(journal_path(out)), MlflowSink(uri, run_id)), LiveArtifacts(out)
    for step, value in values.items():
        batch = [MetricEvent("train_loss", value, step), MetricEvent("learning_rate", 1e-3, step)]
        batch += [MetricEvent("val_loss", -value, step), MetricEvent("epoch", 1.0, step)]
        sink.write(batch)
        live.write(batch)
    live.close()
    sink.close()
    # what MLflow's SQL store really holds: inf clamped to the largest float
    raw = {m.step: m.value for m in client(uri).get_metric_history(run_id, "train_loss")}
    assert raw[15] == sys.float_info.max and raw[20] == -sys.float_info.max and math.isnan(raw[10])

    build_report(uri, run_id, tmp_path / "rebuilt")
    for name in (METRICS_JSON, SUMMARY_JSON):
        assert (tmp_path / "rebuilt" / name).read_bytes() == (out / name).read_bytes()
    doc = json.loads((tmp_path / "rebuilt" / METRICS_JSON).read_text())  # strict JSON
    assert doc["train_loss"] == [4.0, "NaN", "Infinity", "-Infinity", 3.25]
    back = load_training_metrics(tmp_path / "rebuilt" / METRICS_JSON)
    assert back["train_loss"][0] == 4.0 and math.isnan(back["train_loss"][1])
    assert back["train_loss"][2:] == [math.inf, -math.inf, 3.25]
    assert back["val_loss"][2:] == [-math.inf, math.inf, -3.25]
    assert [p.value for p in read_journal(journal_path(out)) if p.key == "train_loss"][2] == math.inf


def test_while_mlflow_is_unreachable_training_goes_on_and_replay_sends_each_point_once(
    sqlite_run, unreachable_uri
):
    uri, run_id, out = sqlite_run
    lines = []
    settings = SinkSettings(drain_timeout_s=0.5)
    sink = JournaledSink(
        MetricJournal(journal_path(out)), MlflowSink(unreachable_uri, run_id, settings, lines.append)
    )
    for step in range(5, 105, 5):
        sink.write(training_events(step))
    sink.close()
    assert sink.points_sink.sent == 0 and sink.points_sink.unsent == 70
    assert any("MLflow unreachable" in line for line in lines)
    assert any(f"orchestrator sync {run_id}" in line for line in lines)

    first = replay_journal(uri, run_id, journal_path(out))
    assert (first.journal_points, first.already_in_mlflow, first.sent) == (70, 0, 70)
    again = replay_journal(uri, run_id, journal_path(out))
    assert (again.already_in_mlflow, again.sent) == (70, 0)
    rows = read_metric_rows(uri, run_id, KEYS)
    for key, expected in (("train_loss", 20), ("learning_rate", 20), ("epoch", 20), ("val_loss", 10)):
        steps = [step for step, _, _ in rows[key]]
        assert len(steps) == len(set(steps)) == expected, key
    assert read_history(uri, run_id)["train_loss"][50] == 7.0 / 50.3


def test_a_partial_delivery_is_completed_without_duplicates(sqlite_run):
    uri, run_id, out = sqlite_run
    sink = JournaledSink(MetricJournal(journal_path(out)), MlflowSink(uri, run_id))
    for step in range(5, 55, 5):
        sink.write(training_events(step))
    sink.close()
    journal = journal_path(out)
    with journal.open("a") as handle:  # points journaled but never sent (a crash after the append)
        handle.writelines(line for line in journal.read_text().splitlines(keepends=True)[:3])
        handle.write('{"key": "train_loss", "value": 0.5, "step": 55, "timestamp": 1700000000000}\n')
        handle.write('{"key": "train_loss", "val')  # torn last line: skipped
    result = replay_journal(uri, run_id, journal)
    assert (result.journal_points, result.sent) == (39, 1)
    steps = [row[0] for row in read_metric_rows(uri, run_id, ["train_loss"])["train_loss"]]
    assert sorted(steps) == list(range(5, 60, 5))


def test_sync_command_delivers_the_journal_and_sets_the_recorded_status(
    sqlite_run, unreachable_uri, tmp_path
):
    uri, run_id, out = sqlite_run
    settings = SinkSettings(drain_timeout_s=0.2)
    sink = JournaledSink(
        MetricJournal(journal_path(out)), MlflowSink(unreachable_uri, run_id, settings, lambda _: None)
    )
    for step in range(5, 35, 5):
        sink.write(training_events(step))
    sink.close()
    LiveArtifacts(out).write([e for s in range(5, 35, 5) for e in training_events(s)])
    with pytest.raises(Exception, match=r"127\.0\.0\.1"):  # the driver's finish while MLflow is down
        finish_run(unreachable_uri, run_id, "FINISHED", str(out))

    result = run_cli("sync", run_id, "--tracking-uri", uri, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "journal 21 points, 0 already in MLflow, 21 sent" in result.stdout
    assert "status     FINISHED" in result.stdout
    run = client(uri).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert {a.path for a in client(uri).list_artifacts(run_id, "report")} >= {"report/training_metrics.json"}
    again = run_cli("sync", run_id, "--tracking-uri", uri, cwd=tmp_path, timeout=120)
    assert "21 already in MLflow, 0 sent" in again.stdout
