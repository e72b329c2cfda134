"""Against a real `mlflow server --app-name basic-auth`: a tracking URI's `user:password@` reaches
MLflow only as MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD in the environment, never in the
URI it is handed, so nothing MLflow prints (its "View run ... at: <uri>" line at the end of a run,
its errors) or this tool prints holds the password, also with PYTHONIOENCODING=ascii.

One server for the module (about 10 s to start); a run is made in it as `submit` leaves one (tags,
run record, journal, final status), and the commands that read or finish a run go through it."""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

import pytest

from orchestrator.track.journal import MetricJournal, MetricPoint, journal_path
from orchestrator.track.mlflow_run import client, training_experiment
from orchestrator.track.runs import (
    BACKEND_TAG,
    CHECKPOINT_DIR_TAG,
    FINAL_STATUS_FILE,
    FINISHED_STATUS,
    write_run_record,
)
from tests.conftest import run_cli
from tests.servers import MlflowServer

pytestmark = pytest.mark.slow

PASSWORD = "auth-" + secrets.token_hex(8)  # the basic-auth app wants 12 characters at least
CREDENTIAL_ENV = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    work = tmp_path_factory.mktemp("auth-server")
    server = MlflowServer(
        f"sqlite:///{work / 'mlflow.db'}", work / "artifacts", work / "server.log", PASSWORD
    )
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def no_credentials_in_env(monkeypatch):
    """This process starts without MLflow credentials (and gets them back as they were)."""
    for name in CREDENTIAL_ENV:
        monkeypatch.setenv(name, "")  # so that what the test sets is undone too
        monkeypatch.delenv(name)


def with_password(server: MlflowServer, password: str = PASSWORD) -> str:
    return server.url.replace("http://", f"http://admin:{password}@")


@pytest.fixture(scope="module")
def finished_job(auth_server, tmp_path_factory):
    """A run whose job ended while MLflow was away, as `submit` leaves it: orchestrator tags, run
    record, a journal of 10 steps not yet in MLflow and the final status beside it; `sync` finishes
    it. (run id, work directory)"""
    work = tmp_path_factory.mktemp("auth-run")
    run_dir = work / "checkpoints" / "auth-run"
    run_dir.mkdir(parents=True)
    with pytest.MonkeyPatch.context() as patch:
        for name in CREDENTIAL_ENV:
            patch.setenv(name, "")
            patch.delenv(name)
        mlflow = client(with_password(auth_server))
        experiment = training_experiment(mlflow, "auth")
        tags = {CHECKPOINT_DIR_TAG: str(run_dir), BACKEND_TAG: "ray-local"}
        run_id = mlflow.create_run(experiment, run_name="auth-run", tags=tags).info.run_id
    write_run_record(run_dir, run_id)
    journal, stamp = MetricJournal(journal_path(run_dir)), int(time.time() * 1000)
    for step in range(1, 11):
        journal.append(
            [MetricPoint(key, 5.0 - step / 10, step, stamp + step) for key in ("train_loss", "epoch")]
        )
    journal.close()
    (run_dir / FINAL_STATUS_FILE).write_text(json.dumps({"run_id": run_id, "status": FINISHED_STATUS}))
    return run_id, work


def test_mlflow_is_handed_the_uri_without_its_credentials(
    auth_server, no_credentials_in_env, capsys, monkeypatch
):
    monkeypatch.setenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "false")  # MLflow's own line, on purpose
    mlflow = client(with_password(auth_server))
    assert mlflow.tracking_uri == auth_server.url
    assert PASSWORD not in mlflow._tracking_client.store.get_host_creds().host
    experiment = training_experiment(mlflow, "handed")
    run_id = mlflow.create_run(experiment, run_name="handed-run").info.run_id  # the password was used
    mlflow.set_terminated(run_id, FINISHED_STATUS)
    out = capsys.readouterr().out
    assert f"View run handed-run at: {auth_server.url}/#/experiments/" in out, out
    assert PASSWORD not in out
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == PASSWORD, "in the environment of what it starts"


def test_a_wrong_password_is_refused_with_a_message_that_does_not_show_it(auth_server, no_credentials_in_env):
    from orchestrator.track.runs import list_records

    wrong = "wrong-" + secrets.token_hex(8)
    with pytest.raises(Exception) as info:
        list_records(with_password(auth_server, wrong))
    assert "401" in str(info.value) and wrong not in str(info.value)


def test_mlflow_logging_functions_get_the_uri_without_its_credentials(auth_server, no_credentials_in_env):
    import mlflow

    from orchestrator.export.mlflow_model import using_tracking_uri

    with using_tracking_uri(with_password(auth_server)):
        assert mlflow.get_tracking_uri() == auth_server.url
        assert os.environ.get("MLFLOW_TRACKING_URI", "") == auth_server.url


COMMANDS = {
    "sync": ["sync", "RUN"],  # finishes the run: MLflow's end-of-run line
    "report": ["report", "RUN"],  # metric history through the REST endpoint
    "status": ["status", "RUN"],
    "list": ["list"],
}


@pytest.mark.parametrize("name", COMMANDS)
def test_commands_on_a_password_protected_server_never_show_the_password(auth_server, finished_job, name):
    """Each command as a user runs it, the store named as printed commands name it (with a
    reference), output to an ASCII terminal: no traceback, no password, MLflow's lines included."""
    run_id, work = finished_job
    reference = auth_server.url.replace("http://", "http://admin:${env:AUTH_TEST_PASSWORD}@")
    env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_ENV}
    env.update({"AUTH_TEST_PASSWORD": PASSWORD, "PYTHONIOENCODING": "ascii", "PYTHONPATH": str(Path.cwd())})
    argv = [run_id if part == "RUN" else part for part in COMMANDS[name]]
    result = run_cli(*argv, "--tracking-uri", reference, cwd=work, env=env, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Traceback" not in output and PASSWORD not in output, output[-3000:]
    if name == "sync":
        assert "status     FINISHED" in output, output
    if name == "list":
        assert run_id in output
