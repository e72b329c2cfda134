"""Nothing the command line prints can drive the terminal: run names, worker hosts, log lines and
errors come from MLflow, files and clusters, and their control characters (escape sequences that
clear the screen or set the title, carriage returns, U+202E that reverses text) come out escaped."""

from __future__ import annotations

import json
import time

import pytest

from orchestrator.cli import main
from orchestrator.track.mlflow_run import client
from orchestrator.track.runs import BACKEND_TAG, CHECKPOINT_DIR_TAG
from orchestrator.track.status import STATUS_FILE

HOSTILE = "\x1b[2J\x1b]0;owned\x07\r\u202eexe.txt"
ESCAPED = "\\x1b[2J\\x1b]0;owned\\x07\\x0d\\u202eexe.txt"


def unsafe(text: str) -> list[str]:
    return [c for c in text if (ord(c) < 32 and c not in "\n\t") or 0x7F <= ord(c) <= 0x9F or c == "\u202e"]


@pytest.fixture(scope="module")
def hostile_store(tmp_path_factory):
    """./mlflow.db with a finished run whose name, status file and worker log hold control characters."""
    tmp_path = tmp_path_factory.mktemp("hostile")
    mlflow = client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_dir = tmp_path / "run"
    (run_dir / "logs").mkdir(parents=True)
    (run_dir / "logs" / "worker-0.log").write_text(f"[train] step 1 {HOSTILE}\n")
    worker = {"rank": 0, "step": 1, "time": time.time(), "pid": 1, "host": HOSTILE, "node": HOSTILE}
    status = {"step": 1, "total_steps": 2, "metrics": {HOSTILE: 1.0}, "workers": [worker]}
    (run_dir / STATUS_FILE).write_text(json.dumps(status))
    tags = {CHECKPOINT_DIR_TAG: str(run_dir), BACKEND_TAG: "ray-local"}
    run = mlflow.create_run(mlflow.create_experiment("e"), run_name=f"name{HOSTILE}", tags=tags)
    mlflow.set_terminated(run.info.run_id, "FINISHED")
    return tmp_path, run.info.run_id


@pytest.fixture
def hostile_run(hostile_store, monkeypatch):
    work, run_id = hostile_store
    monkeypatch.chdir(work)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return run_id


@pytest.mark.parametrize("command", [["status", "RUN"], ["logs", "RUN"], ["list"]])
def test_names_hosts_and_log_lines_are_escaped(hostile_run, capsys, command):
    assert main([hostile_run if part == "RUN" else part for part in command]) == 0
    out = capsys.readouterr().out
    assert not unsafe(out), out
    # `logs` splits lines at the carriage return; everything else shows the name whole
    assert (ESCAPED in out) if command[0] != "logs" else ("\\x1b]0;owned\\x07" in out and "\\u202e" in out)


def test_an_argument_echoed_in_an_error_is_escaped(hostile_run, capsys):
    assert main(["status", f"run{HOSTILE}"]) == 1
    err = capsys.readouterr().err
    assert not unsafe(err) and "\\x1b]0;owned" in err, err


def test_colours_are_dropped_rather_than_escaped(capsys):
    import sys

    from orchestrator.text import PrintableStream

    stream = PrintableStream(sys.stdout)
    stream.write("\x1b[36m(RayTrainWorker pid=1)\x1b[0m [train] step 5\n")
    assert capsys.readouterr().out == "(RayTrainWorker pid=1) [train] step 5\n"
