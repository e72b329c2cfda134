"""A sink in a low-priority child process: same files as in-process, never blocks the writer, writes
what it has when the training process dies, says so when it fails; rank 0's tracking sends MLflow
from there exactly the points it journaled."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from functools import partial
from pathlib import Path

from PIL import Image

from orchestrator.track.events import MetricEvent
from orchestrator.track.live_report import LiveArtifacts
from orchestrator.track.sink_process import ChildProcessSink

REPO = Path(__file__).resolve().parents[2]


class RecordingSink:
    """Appends one JSON line per ``write`` call (the events it got) and a last line at close."""

    def __init__(self, path: str):
        self.path = path

    def write(self, events) -> None:
        with open(self.path, "a") as out:
            out.write(json.dumps([[e.name, e.value, e.step] for e in events]) + "\n")

    def close(self) -> None:
        with open(self.path, "a") as out:
            out.write('"closed"\n')


def failing_sink():
    raise RuntimeError("cannot open the report directory")


def events(step: int) -> list[MetricEvent]:
    out = [MetricEvent("train_loss", 5.0 - step / 100, step), MetricEvent("learning_rate", 1e-3, step)]
    out.append(MetricEvent("epoch", 1.0 + step // 50, step))
    if step % 25 == 0:
        out.append(MetricEvent("val_loss", 5.1 - step / 100, step))
    return out


def recorded(path: Path) -> list:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_child_writes_the_same_report_as_the_training_process(tmp_path):
    child_dir, local_dir = tmp_path / "child", tmp_path / "local"
    child, local = ChildProcessSink(partial(LiveArtifacts, child_dir)), LiveArtifacts(local_dir)
    for step in range(5, 105, 5):
        child.write(events(step))
        local.write(events(step))
    child.close()
    local.close()
    for name in ("training_metrics.json", "summary.json"):
        assert (child_dir / name).read_bytes() == (local_dir / name).read_bytes()
    for name in ("training_curve.png", "loss_by_epoch.png"):
        with Image.open(child_dir / name) as a, Image.open(local_dir / name) as b:
            assert a.size == b.size and a.tobytes() == b.tobytes()


def test_writing_never_waits_for_a_stopped_child_and_nothing_is_lost(tmp_path):
    log = tmp_path / "writes.jsonl"
    sink = ChildProcessSink(partial(RecordingSink, str(log)))
    sink.write(events(5))
    os.kill(sink._child.pid, signal.SIGSTOP)  # a child starved of CPU
    try:
        for step in range(10, 5010, 5):  # far more than a pipe buffer holds
            sink.write(events(step))
    finally:
        os.kill(sink._child.pid, signal.SIGCONT)
    sink.close()
    calls = recorded(log)
    assert calls[-1] == "closed"
    steps = [step for call in calls[:-1] for _, _, step in call]
    assert sorted(set(steps)) == list(range(5, 5010, 5)) and len(steps) == sum(
        len(events(s)) for s in set(steps)
    )
    assert len(calls) - 1 < 1000, "what queued up while the child was stopped arrives in few writes"


def test_the_child_closes_its_sink_when_the_training_process_dies(tmp_path):
    log = tmp_path / "writes.jsonl"
    parent = f"""
        import os, sys
        from functools import partial
        sys.path.insert(0, {str(REPO)!r})
        from orchestrator.track.sink_process import ChildProcessSink
        from tests.track.test_sink_process import RecordingSink, events
        sink = ChildProcessSink(partial(RecordingSink, {str(log)!r}))
        sink.write(events(5))
        sink.write(events(10))
        sink._feeder.join(0.5)  # let the feeder hand the frames over, then die without close()
        os._exit(0)
    """
    subprocess.run([sys.executable, "-c", textwrap.dedent(parent)], check=True, timeout=60)
    deadline = time.monotonic() + 60
    while not (log.exists() and log.read_text().endswith('"closed"\n')) and time.monotonic() < deadline:
        time.sleep(0.1)
    calls = recorded(log)
    assert calls[-1] == "closed"
    assert sorted({step for call in calls[:-1] for _, _, step in call}) == [5, 10]


def test_a_failing_child_is_reported_at_close(tmp_path):
    said: list[str] = []
    sink = ChildProcessSink(failing_sink, say=said.append)
    sink.write(events(5))
    sink.close()
    assert len(said) == 1 and "exit code 1" in said[0] and "orchestrator report" in said[0]


def test_rank0_sends_mlflow_exactly_what_it_journaled_from_the_child_process(sqlite_run):
    from types import SimpleNamespace

    from orchestrator.track.journal import journal_path, read_journal
    from orchestrator.track.mlflow_read import read_metric_rows
    from orchestrator.track.pipeline import _rank0_sinks

    uri, run_id, out = sqlite_run
    tracking = SimpleNamespace(
        request_timeout_s=10,
        request_retries=1,
        flush_interval_s=0.2,
        drain_timeout_s=30,
        system_metrics=False,
    )
    spec = SimpleNamespace(tracking=tracking, report=SimpleNamespace(artifacts=True, formats=("json",)))
    plan = SimpleNamespace(spec=spec, tracking_uri=uri, run_id=run_id, checkpoint_dir=str(out))
    (sink,) = _rank0_sinks(plan, resumed=False)
    for step in range(5, 55, 5):
        sink.write(events(step))
    sink.close()
    journaled = {(p.key, p.step, p.timestamp, p.value) for p in read_journal(journal_path(out))}
    rows = read_metric_rows(uri, run_id, ["train_loss", "learning_rate", "epoch", "val_loss"])
    sent = {(key, step, ts, value) for key, got in rows.items() for step, ts, value in got}
    assert sent == journaled and len(sent) == sum(len(events(s)) for s in range(5, 55, 5))
    assert json.loads((out / "training_metrics.json").read_text())["steps"] == list(range(5, 55, 5))


def test_a_restarted_rank0_sends_what_its_killed_attempt_journaled_but_mlflow_never_got(sqlite_run):
    """A worker killed while its tracking child was behind: MLflow holds steps 5-10, the journal 5-20.
    The restarted attempt replays steps 15-20 from its checkpoint; they must not be logged again, the
    first attempt's 15-20 reach MLflow from the restarted attempt (no driver, no replay here), and the
    live report shows all of them."""
    from types import SimpleNamespace

    from orchestrator.track.journal import MetricJournal, journal_path, read_journal
    from orchestrator.track.mlflow_read import read_metric_rows
    from orchestrator.track.mlflow_run import client, log_points
    from orchestrator.track.mlflow_sink import stamp
    from orchestrator.track.pipeline import _rank0_sinks

    uri, run_id, out = sqlite_run
    journal = MetricJournal(journal_path(out))
    for step in (5, 10, 15, 20):  # the killed attempt
        points = stamp(events(step))
        journal.append(points)
        if step <= 10:
            log_points(client(uri), run_id, points)
    journal.close()
    tracking = SimpleNamespace(
        request_timeout_s=10,
        request_retries=1,
        flush_interval_s=0.2,
        drain_timeout_s=30,
        system_metrics=False,
    )
    spec = SimpleNamespace(tracking=tracking, report=SimpleNamespace(artifacts=True, formats=("json",)))
    plan = SimpleNamespace(spec=spec, tracking_uri=uri, run_id=run_id, checkpoint_dir=str(out))
    (sink,) = _rank0_sinks(plan, resumed=True)
    for step in (15, 20, 25):  # the restarted attempt, from its checkpoint at step 10
        sink.write(events(step))
    sink.close()
    journaled = [(p.key, p.step) for p in read_journal(journal_path(out)) if p.key == "train_loss"]
    assert [step for _, step in journaled] == [5, 10, 15, 20, 25], "each step journaled once"
    assert json.loads((out / "training_metrics.json").read_text())["steps"] == [5, 10, 15, 20, 25]
    rows = read_metric_rows(uri, run_id, ["train_loss"])["train_loss"]
    assert sorted(step for step, _, _ in rows) == [5, 10, 15, 20, 25], "in MLflow, each step once"
    first_attempt = {(p.step, p.timestamp) for p in read_journal(journal_path(out)) if p.step in (15, 20)}
    assert {(step, ts) for step, ts, _ in rows if step in (15, 20)} == first_attempt
