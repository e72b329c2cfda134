"""`orchestrator ui` serves the MLflow UI and API for the configured store on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest

from orchestrator.net import free_port
from orchestrator.track.mlflow_run import client
from tests.servers import stop_process_group

pytestmark = pytest.mark.slow


def wait_healthy(url: str, process: subprocess.Popen, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, "orchestrator ui exited"
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} not healthy after {timeout_s}s")


def test_ui_serves_the_spec_store_on_loopback(tmp_path, write_spec, tiny_spec_text):
    spec = write_spec(tiny_spec_text + "tracking: {uri: sqlite:///store/ui.db, experiment: ui-exp}\n")
    (tmp_path / "store").mkdir()
    mlflow = client(f"sqlite:///{tmp_path / 'store' / 'ui.db'}")
    run_id = mlflow.create_run(mlflow.create_experiment("ui-exp"), run_name="ui-run").info.run_id
    port = free_port()
    log = tmp_path / "ui.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "ui", str(spec), "--port", str(port)],
        cwd=tmp_path,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, process)
        query = urllib.request.Request(
            f"{url}/api/2.0/mlflow/runs/search",
            data=json.dumps(
                {"experiment_ids": [mlflow.get_experiment_by_name("ui-exp").experiment_id]}
            ).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(query, timeout=30) as response:
            runs = json.loads(response.read())["runs"]
        assert [r["info"]["run_id"] for r in runs] == [run_id]
    finally:
        stop_process_group(process)
    first_line = log.read_text().splitlines()[0]
    assert first_line.startswith(f"MLflow UI on http://127.0.0.1:{port}")


def test_ui_of_a_tracking_server_just_points_to_it(tmp_path):
    from tests.conftest import run_cli

    result = run_cli("ui", "--tracking-uri", "http://127.0.0.1:5999", cwd=tmp_path, timeout=60)
    assert result.returncode == 0
    assert "open http://127.0.0.1:5999" in result.stdout
