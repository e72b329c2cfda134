"""A `cluster.address` where nothing listens: `submit` tries for `cluster.connect_timeout_s`, then
says what it could not reach and what to do, exits 1, and leaves no run RUNNING (and no resume hint
for a run that has no checkpoint). SIGTERM while it tries ends it within seconds.

The address is a real loopback port nothing listens on; each case runs the real command line in
its own process, so a hang fails on the subprocess timeout instead of blocking the suite."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from orchestrator.net import free_port
from orchestrator.track.mlflow_run import client
from orchestrator.track.runs import RUNNING_STATUS
from tests.conftest import REPO, TINY_SPEC

pytestmark = pytest.mark.slow


def write_spec(tmp_path, timeout_s: float) -> str:
    address = f"127.0.0.1:{free_port()}"
    settings = (
        f"cluster: {{backend: ray-local, num_workers: 2, address: '{address}', "
        f"connect_timeout_s: {timeout_s}}}"
    )
    spec = TINY_SPEC.replace("cluster: {backend: ray-local, num_workers: 2, cpus_per_worker: 1}", settings)
    (tmp_path / "spec.yaml").write_text(spec)
    return address


def running_runs(tmp_path) -> list:
    store = tmp_path / "mlflow.db"
    if not store.exists():
        return []
    mlflow = client(f"sqlite:///{store}")
    runs = mlflow.search_runs([e.experiment_id for e in mlflow.search_experiments()])
    return [run for run in runs if run.info.status == RUNNING_STATUS]


def submit(tmp_path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "submit", "spec.yaml", "--progress", "off"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def test_a_dead_address_fails_within_the_connect_timeout_and_says_what_to_do(tmp_path):
    address = write_spec(tmp_path, timeout_s=3)
    process = submit(tmp_path)
    try:
        output, _ = process.communicate(timeout=90)
    finally:
        stop(process)
    assert process.returncode == 1, output[-3000:]
    assert f"cannot reach the Ray cluster at {address}" in output and "connect_timeout_s" in output, output
    assert "Traceback" not in output and "--resume" not in output, output[-3000:]
    assert running_runs(tmp_path) == []


def test_sigterm_while_connecting_ends_submit_within_seconds(tmp_path):
    write_spec(tmp_path, timeout_s=600)
    process = submit(tmp_path)
    try:
        deadline = time.monotonic() + 60
        seen = ""
        while "connecting" not in seen and time.monotonic() < deadline and process.poll() is None:
            seen += process.stdout.readline()
        assert "connecting" in seen, seen
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        rest, _ = process.communicate(timeout=30)
        took = time.monotonic() - started
    finally:
        stop(process)
    output = seen + rest
    assert took < 5, f"{took:.1f}s after SIGTERM: {output[-2000:]}"
    assert process.returncode == 130 and "Traceback" not in output, output[-3000:]
    assert "--resume" not in output, output
    assert running_runs(tmp_path) == []
