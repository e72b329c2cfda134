"""Arguments a command cannot use are refused with a message (exit 2, or 1 for what is not found),
before anything starts: a port out of range or taken, a sqlite store that does not exist (no
command that only reads a store creates one)."""

from __future__ import annotations

import socket

import pytest

from orchestrator.cli import main

RUN_ID = "0123456789abcdef0123456789abcdef"
# Every command that only reads a tracking store (or continues what it holds), with a run given by
# id and by name: none may create the store it is pointed at.
READ_ONLY = {
    "status": ["status", "RUN"],
    "logs": ["logs", "RUN"],
    "cancel": ["cancel", "RUN"],
    "report": ["report", "RUN"],
    "report-watch": ["report", "RUN", "--watch"],
    "sync": ["sync", "RUN"],
    "compare": ["compare", "RUN", "RUN"],
    "list": ["list"],
    "generate": ["generate", "RUN", "--prompt", "x"],
    "export": ["export", "RUN", "--format", "hf", "--out", "OUT"],
    "resume": ["submit", "--resume", "RUN"],
    "sweep-resume": ["sweep", "--resume", "RUN"],
    "ui": ["ui"],
}


class Exec(Exception):
    """`ui` got as far as starting MLflow's server."""


@pytest.fixture
def no_exec(monkeypatch):
    def refuse(*args):
        raise Exec(args)

    monkeypatch.setattr("os.execve", refuse)


@pytest.mark.parametrize("run", [RUN_ID, "a-run-name"])
@pytest.mark.parametrize("name", READ_ONLY)
def test_no_read_only_command_creates_a_missing_store(tmp_path, capsys, monkeypatch, no_exec, name, run):
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "missing.db"
    argv = [
        run if part == "RUN" else str(tmp_path / "out") if part == "OUT" else part for part in READ_ONLY[name]
    ]
    code = main([*argv, "--tracking-uri", f"sqlite:///{store}"])
    err = capsys.readouterr().err
    assert not store.exists(), f"{name} created the store"
    assert code == 1 and f"no MLflow store at {store}" in err, err


@pytest.mark.parametrize("port", ["99999", "0", "-1", "65536", "http", "1e3"])
def test_ui_refuses_a_port_out_of_range(capsys, no_exec, port):
    with pytest.raises(SystemExit) as info:
        main(["ui", "--port", port])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--port" in err and "1 to 65535" in err, err


def test_ui_refuses_a_port_in_use(tmp_path, capsys, monkeypatch, no_exec, sqlite_run):
    uri = sqlite_run[0]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["ui", "--tracking-uri", uri, "--port", str(port)])
    err = capsys.readouterr().err
    assert code == 2 and f"127.0.0.1:{port} is in use" in err and "--port" in err, err


def test_ui_of_an_existing_store_starts_mlflow(no_exec, sqlite_run):
    with pytest.raises(Exec):
        main(["ui", "--tracking-uri", sqlite_run[0], "--port", "5999"])
