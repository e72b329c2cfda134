"""`status`, `list` and `cancel` on runs whose backend cannot answer: MLflow's word, clear errors."""

from __future__ import annotations

import json
import re

from orchestrator.track.mlflow_run import client
from orchestrator.track.runs import ADDRESS_TAG, BACKEND_TAG, CHECKPOINT_DIR_TAG, JOB_ID_TAG
from orchestrator.track.status import STATUS_FILE
from tests.conftest import run_cli
from tests.launchers.ray_head import free_port


def make_run(tmp_path, backend: str, **tags: str) -> str:
    mlflow = client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_dir = tmp_path / "checkpoints" / "demo"
    run_dir.mkdir(parents=True)
    (run_dir / STATUS_FILE).write_text(
        json.dumps({"step": 5, "total_steps": 10, "metrics": {"train_loss": 4.0}, "updated": 0, "eta_s": 3})
    )
    experiment = mlflow.create_experiment("demo")
    run = mlflow.create_run(
        experiment, run_name="demo", tags={CHECKPOINT_DIR_TAG: str(run_dir), BACKEND_TAG: backend, **tags}
    )
    return run.info.run_id


def test_status_and_list_of_a_job_whose_cluster_is_gone_fall_back_to_mlflow(tmp_path):
    gone = f"http://127.0.0.1:{free_port()}"
    run_id = make_run(tmp_path, "ray-job", **{JOB_ID_TAG: "orchestrator-x", ADDRESS_TAG: gone})
    status = run_cli("status", run_id, cwd=tmp_path, timeout=120)
    assert status.returncode == 0, status.stderr
    assert f"Ray Jobs API at {gone}" in status.stderr and "the state below is MLflow's" in status.stderr
    assert "state      RUNNING" in status.stdout and "5/10 loss 4.0000" in status.stdout
    listed = run_cli("list", cwd=tmp_path, timeout=120)
    assert re.search(rf"^{run_id}  RUNNING +5/10  ray-job +demo$", listed.stdout, re.M), listed.stdout


def test_cancel_of_a_foreground_run_says_how_to_stop_it(tmp_path):
    """A run whose status file was just updated (a driver without a lease: an older version) is
    live: cancel says where to stop it. One whose driver is gone is settled: see
    tests/lifecycle/test_run_state.py."""
    import time

    run_id = make_run(tmp_path, "ray-local")
    status = tmp_path / "checkpoints" / "demo" / STATUS_FILE
    status.write_text(json.dumps({**json.loads(status.read_text()), "updated": time.time()}))
    result = run_cli("cancel", run_id, cwd=tmp_path, timeout=120)
    assert result.returncode == 1
    assert "foreground" in result.stderr and "Ctrl-C" in result.stderr and "Traceback" not in result.stderr
