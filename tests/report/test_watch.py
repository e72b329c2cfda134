"""`orchestrator report RUN --watch` refreshes the files while the run trains and stops when it ends."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from orchestrator.track.events import MetricEvent
from orchestrator.track.mlflow_run import client
from orchestrator.track.mlflow_sink import MlflowSink
from orchestrator.track.runs import CHECKPOINT_DIR_TAG
from tests.servers import stop_process_group


def log_steps(uri: str, run_id: str, steps) -> None:
    sink = MlflowSink(uri, run_id)
    for step in steps:
        sink.write(
            [MetricEvent("train_loss", 5.0 - step / 100, step), MetricEvent("learning_rate", 1e-3, step)]
        )
    sink.close()


def wait_for(path, text: str, process, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in path.read_text():
        assert process.poll() is None and time.monotonic() < deadline, path.read_text()
        time.sleep(0.2)


def test_watch_follows_a_running_run_until_it_finishes(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow = client(uri)
    run_id = mlflow.create_run(
        mlflow.create_experiment("watch"), tags={CHECKPOINT_DIR_TAG: str(tmp_path)}
    ).info.run_id
    log_steps(uri, run_id, [5, 10])
    log = tmp_path / "watch.log"
    command = [sys.executable, "-m", "orchestrator", "report", run_id, "--watch", "--interval", "0.3"]
    command += ["--tracking-uri", uri, "--out", str(tmp_path / "out")]
    process = subprocess.Popen(
        command, cwd=tmp_path, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        wait_for(log, "[report] step 10: loss 4.9000 (RUNNING)", process)
        log_steps(uri, run_id, [15, 20])
        wait_for(log, "[report] step 20", process)
        mlflow.set_terminated(run_id, "FINISHED")
        assert process.wait(120) == 0
    finally:
        if process.poll() is None:
            stop_process_group(process)
    out = log.read_text()
    assert f"run {run_id} FINISHED" in out and "steps        20 (4 logged)" in out
    assert json.loads((tmp_path / "out" / "training_metrics.json").read_text())["steps"] == [5, 10, 15, 20]
