"""Damaged or missing stores and files: a message and exit code 1, never a traceback, and nothing
created where nothing was (MLflow creates an empty sqlite store for any URI it is handed)."""

from __future__ import annotations

import json

import pytest

from orchestrator.cli import main
from orchestrator.track.mlflow_run import client
from orchestrator.track.runs import BACKEND_TAG, CHECKPOINT_DIR_TAG
from orchestrator.track.status import STATUS_FILE

RUN_COMMANDS = [
    ["list"],
    ["status", "RUN"],
    ["logs", "RUN"],
    ["report", "RUN"],
    ["sync", "RUN"],
    ["cancel", "RUN"],
    ["generate", "RUN", "--prompt", "x"],
    ["compare", "RUN", "RUN"],
    ["submit", "--resume", "RUN"],
]


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """mlflow.db with one orchestrator run (its directory: ./run), made once: (directory, run id)."""
    work = tmp_path_factory.mktemp("stores")
    mlflow = client(f"sqlite:///{work / 'mlflow.db'}")
    (work / "run").mkdir()
    tags = {CHECKPOINT_DIR_TAG: str(work / "run"), BACKEND_TAG: "ray-local"}
    return work, mlflow.create_run(mlflow.create_experiment("damaged"), tags=tags).info.run_id


@pytest.fixture
def store(template, tmp_path, monkeypatch):
    """A copy of the template's store as ./mlflow.db (tests damage it): (run id, run directory)."""
    work, run_id = template
    (tmp_path / "mlflow.db").write_bytes((work / "mlflow.db").read_bytes())
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return run_id, work / "run"


def _argv(command: list[str], run_id: str) -> list[str]:
    return [run_id if part == "RUN" else part for part in command]


def test_no_command_creates_a_store_where_there_is_none(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for command in RUN_COMMANDS:
        assert main(_argv(command, "0123456789abcdef0123456789abcdef")) == 1, command
        assert "no MLflow store at" in capsys.readouterr().err
        assert list(tmp_path.iterdir()) == [], command


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_damaged_store_is_named_not_a_traceback(store, tmp_path, capsys, damage):
    run_id, _ = store
    db = tmp_path / "mlflow.db"
    db.write_bytes(db.read_bytes()[:5000] if damage == "truncated" else b"not a database\n" * 10)
    for command in RUN_COMMANDS:
        assert main(_argv(command, run_id)) == 1, command
        err = capsys.readouterr().err
        # truncated: what is left may still answer "no such run" for some reads
        expected = ("cannot be used", "no MLflow run") if damage == "truncated" else ("not an SQLite",)
        assert err.startswith("error: ") and any(e in err for e in expected), (command, err)


def test_sync_of_a_run_that_does_not_exist(store, capsys):
    assert main(["sync", "fedcba9876543210fedcba9876543210"]) == 1
    assert "no MLflow run with id or name 'fedcba9876543210fedcba9876543210' in" in capsys.readouterr().err


MALFORMED_STATUS = {
    "text": "not json",
    "list": "[1, 2]",
    "step-text": json.dumps({"step": "x", "total_steps": 10}),
    "metric-text": json.dumps({"step": 1, "total_steps": 2, "metrics": {"loss": "high"}}),
    "worker-incomplete": json.dumps({"step": 1, "total_steps": 2, "workers": [{"rank": 0, "pid": 1e30}]}),
    "huge-pid": json.dumps(
        {"step": 1, "total_steps": 2, "workers": [{"rank": 0, "pid": 10**30, "step": 1, "time": 0}]}
    ),
    "deep": "[" * 100_000 + "]" * 100_000,
}


def test_a_malformed_status_file_shows_as_no_progress(store, capsys):
    run_id, run_dir = store
    for name, content in MALFORMED_STATUS.items():
        (run_dir / STATUS_FILE).write_text(content)
        assert main(["status", run_id]) == 0, name
        out = capsys.readouterr().out
        assert "progress   no step logged yet" in out or "worker 0" in out, name
        assert main(["list"]) == 0, name
        assert run_id in capsys.readouterr().out, name


def test_a_malformed_final_status_record_is_ignored_by_sync(store, capsys):
    run_id, run_dir = store
    record = run_dir / "tracking-status.json"
    record.write_text('{"run_id": ')
    try:
        assert main(["sync", run_id]) == 0
    finally:
        record.unlink()  # the run directory is the template's, shared by the module
    # no status recorded that sync could trust, and no driver left: the run failed, and says why
    assert "status     FAILED" in capsys.readouterr().out
