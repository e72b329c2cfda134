"""A run's saved state is never left wrong: every way a run ends gives its MLflow run a truthful final
status (FAILED with the reason), a run left RUNNING by a driver that is gone can be settled by a
command, an edited stored spec is refused before anything starts, places that cannot hold a run or
the data cache are messages (exit 2), and a submit that fails or is interrupted before its run
exists leaves no directory behind. (A run still training is refused by `submit --resume`: see
tests/track/test_tracking_server.py, which has one training against a real server.)"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.track.mlflow_run import client
from orchestrator.track.runs import STOP_REASON_TAG
from tests.conftest import REPO, TINY_SPEC, run_main, wait_for
from tests.mounts import require_private_mounts, with_mounts

ERROR_TAG = "orchestrator.error"  # why a run failed


def driver_lines(output: str) -> str:
    """What the command itself printed: without the lines Ray forwards from its actors and workers
    (`(RayTrainWorker pid=...) ...`), which carry the workers' own failure, also in the post-mortem."""
    return "\n".join(line for line in output.splitlines() if not line.startswith("("))


def started(work: Path, spec: str = TINY_SPEC, name: str | None = None):
    """A run as `submit` starts it (its directory and MLflow run), whose driver is gone."""
    from orchestrator.lifecycle import plan_run, start_run
    from orchestrator.spec import parse_spec

    text = spec if name is None else spec + f"tracking: {{run_name: {name}}}\n"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        return start_run(plan_run(parse_spec(text)), work)


# --- every way a run ends: a full disk -------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(600)
def test_a_full_disk_ends_the_run_failed_with_the_reason(tmp_path):
    """The run's directory on a 64 KiB tmpfs: the workers fail on it, and so would every file the
    driver writes there at the end (the post-mortem, the final status); the MLflow store is
    elsewhere, so the run must end FAILED there, saying why."""
    require_private_mounts()
    (tmp_path / "spec.yaml").write_text(TINY_SPEC)
    (tmp_path / "checkpoints").mkdir()
    command = with_mounts(
        [sys.executable, "-m", "orchestrator", "submit", "spec.yaml"],
        small_tmpfs={tmp_path / "checkpoints": 64 * 1024},
    )
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=540)
    output = result.stdout + result.stderr
    ours = driver_lines(output)
    assert result.returncode == 1, output[-4000:]
    assert "Traceback" not in ours, ours[-4000:]
    mlflow = client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = mlflow.search_runs([e.experiment_id for e in mlflow.search_experiments()])
    assert run.info.status == "FAILED", ours[-3000:]
    reason = run.data.tags.get(ERROR_TAG, "")
    assert "No space left on device" in reason, reason
    assert "No space left on device" in ours and run.info.run_id in ours, ours[-3000:]


# --- a run left RUNNING by a driver that is gone ----------------------------------------------------


def test_sync_and_cancel_settle_a_run_whose_driver_is_gone(tmp_path, capsys, monkeypatch):
    first, second = started(tmp_path), started(tmp_path)
    monkeypatch.chdir(tmp_path)
    mlflow = client(first.tracking_uri)
    assert mlflow.get_run(first.run_id).info.status == "RUNNING"

    code, output = run_main(["sync", first.run_name], capsys)
    run = mlflow.get_run(first.run_id)
    assert code == 0 and run.info.status == "FAILED", output
    assert "ended without finishing" in run.data.tags.get(ERROR_TAG, ""), run.data.tags
    assert "FAILED" in output, output

    code, output = run_main(["cancel", second.run_name], capsys)
    run = mlflow.get_run(second.run_id)
    assert code == 0 and run.info.status == "KILLED", output
    assert "cancel" in run.data.tags.get(STOP_REASON_TAG, ""), run.data.tags


# --- an edited stored spec -------------------------------------------------------------------------


def stored_spec_file(plan) -> Path:
    artifacts = client(plan.tracking_uri).get_run(plan.run_id).info.artifact_uri
    return Path(artifacts.removeprefix("file://")) / "spec.yaml"


@pytest.mark.parametrize(
    "argv",
    [
        ["submit", "--resume", "RUN"],
        ["generate", "RUN", "--prompt", "x"],
        ["export", "RUN", "--format", "safetensors", "--out", "exported"],
    ],
    ids=["resume", "generate", "export"],
)
def test_an_edited_stored_spec_is_refused_before_anything_starts(tmp_path, capsys, monkeypatch, argv):
    plan = started(tmp_path)
    spec_file = stored_spec_file(plan)
    spec_file.write_text(spec_file.read_text().replace("d_model: 32", "d_model: 64"))
    monkeypatch.chdir(tmp_path)
    code, output = run_main([plan.run_name if part == "RUN" else part for part in argv], capsys)
    assert code == 2 and "orchestrator.spec_sha256" in output and "spec.yaml" in output, output
    assert client(plan.tracking_uri).get_run(plan.run_id).info.status == "RUNNING"  # not touched


# --- places that cannot hold a run or the data cache ------------------------------------------------


def test_a_run_name_whose_directory_exists_is_a_message(tmp_path, capsys, monkeypatch):
    first = started(tmp_path, name="taken")
    (tmp_path / "spec.yaml").write_text(TINY_SPEC + "tracking: {run_name: taken}\n")
    monkeypatch.chdir(tmp_path)
    code, output = run_main(["submit", "spec.yaml"], capsys)
    assert code == 2 and "tracking.run_name" in output and first.checkpoint_dir in output, output


@pytest.mark.parametrize("where", ["a-file", "/proc/orchestrator-runs"])
def test_a_checkpoint_dir_that_cannot_hold_runs_is_a_message(tmp_path, capsys, monkeypatch, where):
    (tmp_path / "a-file").write_text("not a directory\n")
    (tmp_path / "spec.yaml").write_text(TINY_SPEC + f"checkpoint: {{dir: {where}}}\n")
    monkeypatch.chdir(tmp_path)
    code, output = run_main(["submit", "spec.yaml"], capsys)
    assert code == 2 and "checkpoint.dir" in output and where in output, output
    assert not list(tmp_path.glob("mlflow.db")), "no run was created"


def test_a_cache_directory_that_is_a_file_is_a_message(tmp_path, capsys, monkeypatch):
    cache = tmp_path / "cache-file"
    cache.write_text("not a directory\n")
    (tmp_path / "spec.yaml").write_text(TINY_SPEC)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ORCHESTRATOR_CACHE_DIR", str(cache))
    for command in (["submit", "spec.yaml"], ["prepare", "spec.yaml"], ["validate", "spec.yaml"]):
        code, output = run_main(command, capsys)
        assert code == 2 and "ORCHESTRATOR_CACHE_DIR" in output and str(cache) in output, output


@pytest.mark.timeout(300)
@pytest.mark.parametrize("command", ["submit", "prepare"])
def test_a_read_only_cache_directory_is_a_message(tmp_path, command):
    require_private_mounts()
    cache = tmp_path / "cache"
    cache.mkdir()
    (tmp_path / "spec.yaml").write_text(TINY_SPEC)
    argv = with_mounts([sys.executable, "-m", "orchestrator", command, "spec.yaml"], read_only=(cache,))
    env = {**os.environ, "ORCHESTRATOR_CACHE_DIR": str(cache / "orchestrator")}
    result = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=240, env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 2 and "Traceback" not in output, output[-3000:]
    assert "ORCHESTRATOR_CACHE_DIR" in output and "read-only" in output, output[-3000:]
    assert not (tmp_path / "checkpoints").exists() or not list((tmp_path / "checkpoints").iterdir())


# --- no orphan run directories --------------------------------------------------------------------


def test_a_submit_whose_tracking_store_fails_leaves_no_run_directory(tmp_path, capsys, monkeypatch):
    from orchestrator.net import free_port

    nobody = f"http://127.0.0.1:{free_port()}"
    (tmp_path / "spec.yaml").write_text(TINY_SPEC + f"tracking: {{uri: '{nobody}'}}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    code, output = run_main(["submit", "spec.yaml"], capsys)
    assert code == 1 and "MLflow" in output, output
    assert not list((tmp_path / "checkpoints").glob("*")), list((tmp_path / "checkpoints").glob("*"))


def _accepted(server: socket.socket) -> socket.socket | None:
    """A connection made to ``server``, if one is waiting (a short wait)."""
    server.settimeout(0.2)
    try:
        return server.accept()[0]
    except TimeoutError:
        return None


@pytest.mark.timeout(300)
def test_a_submit_interrupted_while_its_run_is_created_leaves_no_run_directory(tmp_path):
    """The tracking server takes the connection and never answers: Ctrl-C while submit waits."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        (tmp_path / "spec.yaml").write_text(TINY_SPEC + f"tracking: {{uri: '{uri}'}}\n")
        log = tmp_path / "submit.log"
        driver = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "submit", "spec.yaml"],
            cwd=tmp_path, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )  # fmt: skip
        try:
            # The driver's MLflow request has reached the server, which never answers: Ctrl-C now.
            connection = wait_for(lambda: _accepted(silent) or driver.poll() is not None, 240, "a request")
            assert driver.poll() is None, log.read_text()[-3000:]
            os.killpg(driver.pid, signal.SIGINT)
            returncode = driver.wait(60)
        finally:
            if driver.poll() is None:
                os.killpg(driver.pid, signal.SIGKILL)
                driver.wait(10)
        connection.close()
    finally:
        silent.close()
    output = log.read_text()
    assert returncode == 130 and "interrupted" in output, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert not list((tmp_path / "checkpoints").glob("*")), output[-3000:]
