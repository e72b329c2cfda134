"""`submit --resume` for real, through Ray: a run interrupted (Ctrl-C on the driver) after a
checkpoint continues in the same MLflow run from its latest complete checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.track.mlflow_run import client
from orchestrator.train.checkpoint import latest_complete_checkpoint
from tests.conftest import TINY_SPEC, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.ray]

SPEC = TINY_SPEC.replace("max_steps: 20", "max_steps: 60") + "checkpoint: {interval: 5, keep_last: 2}\n"


def _interrupt_after_first_checkpoint(work: Path) -> None:
    """Start `submit`, wait for a complete checkpoint, then Ctrl-C the driver (it shuts Ray down)."""
    driver = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "submit", "tiny.yaml"],
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and driver.poll() is None:
            runs = list((work / "checkpoints").glob("*"))
            if runs and latest_complete_checkpoint(runs[0]) is not None:
                break
            time.sleep(0.1)
        driver.send_signal(signal.SIGINT)
        driver.wait(timeout=120)
    finally:
        if driver.poll() is None:  # our own session: the driver and the Ray it started
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("resume")
    (work / "tiny.yaml").write_text(SPEC)
    _interrupt_after_first_checkpoint(work)
    (run_dir,) = (work / "checkpoints").iterdir()
    stopped_at = latest_complete_checkpoint(run_dir).step
    result = run_cli("submit", "--resume", run_dir.name, cwd=work)
    return work, run_dir, stopped_at, result


def test_resume_by_run_name_continues_to_the_end(resumed_run):
    _, run_dir, stopped_at, result = resumed_run
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert 5 <= stopped_at < 60, "the first attempt was interrupted mid-run"
    assert f"resumed from {run_dir / f'step-{stopped_at}'}" in result.stdout
    assert latest_complete_checkpoint(run_dir).step == 60
    assert "state      SUCCEEDED" in result.stdout


def test_the_same_mlflow_run_holds_one_value_per_step(resumed_run):
    work, run_dir, _, _ = resumed_run
    mlflow = client(f"sqlite:///{work / 'mlflow.db'}")
    (run,) = mlflow.search_runs([e.experiment_id for e in mlflow.search_experiments()])
    assert run.info.run_name == run_dir.name and run.info.status == "FINISHED"
    steps = [m.step for m in mlflow.get_metric_history(run.info.run_id, "train_loss")]
    assert sorted(steps) == list(range(5, 61, 5))
    lr = dict(sorted((m.step, m.value) for m in mlflow.get_metric_history(run.info.run_id, "learning_rate")))
    assert lr[60] == pytest.approx(3e-4), "the schedule ends where an uninterrupted run ends"
    live = json.loads((run_dir / "training_metrics.json").read_text())
    assert live["steps"] == list(range(5, 61, 5)), "live artifacts still cover the steps before the restart"


def test_resume_of_an_unknown_run_is_a_clear_error(resumed_run):
    work, *_ = resumed_run
    result = run_cli("submit", "--resume", "no-such-run", cwd=work)
    assert result.returncode == 1
    assert "no MLflow run with id or name 'no-such-run'" in result.stderr
    assert "Traceback" not in result.stderr
