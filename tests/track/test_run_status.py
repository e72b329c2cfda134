"""The MLflow run's final status is the truth: Ctrl-C during training marks it KILLED, and what was
logged before the interrupt is in MLflow (delivered from the journal when the driver finishes)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from orchestrator.track.mlflow_run import client
from tests.servers import stop_process_group

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def test_ctrl_c_marks_the_run_killed_and_keeps_its_metrics(tmp_path, write_spec, tiny_spec_text):
    spec = write_spec(tiny_spec_text.replace("max_steps: 20", "max_steps: 2000"))
    log = tmp_path / "submit.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "submit", str(spec)],
        cwd=tmp_path,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 400
        while "[train] step 10/" not in log.read_text() and time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
        os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends: the whole group
        returncode = process.wait(300)
    finally:
        if process.poll() is None:
            stop_process_group(process)
    out = log.read_text()
    assert returncode == 130, out[-3000:]
    run_id = re.search(r"MLflow run (\w+)\)", out).group(1)
    mlflow = client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert mlflow.get_run(run_id).info.status == "KILLED"
    steps = sorted(m.step for m in mlflow.get_metric_history(run_id, "train_loss"))
    assert steps[:2] == [5, 10] and len(steps) == len(set(steps))
    run_dir = next((tmp_path / "checkpoints").iterdir())
    assert (run_dir / "metrics.journal.jsonl").is_file()
