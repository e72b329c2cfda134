"""A tracking URI with a password never reaches what people or logs see: `report`, `sync`, `ui`, the
MLflow sink's messages (which land in worker logs and post-mortems) and the commands printed for
later. The tracking server here is a closed loopback port: every request fails at once."""

from __future__ import annotations

import time

import pytest

from orchestrator.cli import main
from orchestrator.net import free_port
from orchestrator.spec import parse_spec
from orchestrator.track.events import MetricEvent
from orchestrator.track.mlflow_sink import MlflowSink, SinkSettings
from orchestrator.track.ui import ui_command, ui_environment

PASSWORD = "uri-pass-7f3a9c"
RUN_ID = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def dead_server(monkeypatch) -> str:
    for name, value in {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("URI_PASSWORD", PASSWORD)
    return f"http://alice:{PASSWORD}@127.0.0.1:{free_port()}"


@pytest.mark.parametrize("command", [["report", RUN_ID], ["sync", RUN_ID], ["status", RUN_ID]])
def test_commands_that_cannot_reach_the_server_do_not_show_its_password(dead_server, capsys, command):
    code = main([*command, "--tracking-uri", dead_server])
    err = capsys.readouterr().err
    assert code == 1 and "http://alice:***@127.0.0.1" in err, err
    assert PASSWORD not in err


def test_tracking_uri_arguments_may_hold_references(dead_server, capsys):
    """What this tool prints for later (`--tracking-uri 'http://alice:${env:URI_PASSWORD}@...'`) works."""
    reference = dead_server.replace(PASSWORD, "${env:URI_PASSWORD}")
    assert main(["report", RUN_ID, "--tracking-uri", reference]) == 1
    err = capsys.readouterr().err
    assert "http://alice:***@127.0.0.1" in err and "${env:" not in err, err  # resolved, then masked
    assert PASSWORD not in err


def test_ui_of_a_server_with_a_password_shows_it_masked(dead_server, capsys, tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(f"name: x\ntracking:\n  uri: '{dead_server.replace(PASSWORD, '${env:URI_PASSWORD}')}'\n")
    assert main(["ui", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "open http://alice:***@127.0.0.1:" in out and PASSWORD not in out


def test_ui_hands_the_store_to_mlflow_in_its_environment_not_its_arguments():
    store = f"postgresql+psycopg2://mlflow:{PASSWORD}@127.0.0.1:5432/mlflow"
    command, url = ui_command(store, 5000)
    assert url == "http://127.0.0.1:5000" and all(PASSWORD not in part for part in command)
    assert ui_environment(store) == {"MLFLOW_BACKEND_STORE_URI": store}


@pytest.mark.timeout(60)
def test_the_sinks_messages_mask_the_password(dead_server):
    said: list[str] = []
    settings = SinkSettings(flush_interval_s=0.05, drain_timeout_s=0.5, max_backoff_s=0.1)
    sink = MlflowSink(dead_server, RUN_ID, settings, said.append)
    sink.write([MetricEvent("train_loss", 1.0, 1)])
    while not said:
        time.sleep(0.05)
    sink.close()
    assert any("MLflow unreachable" in line for line in said), said
    assert any("http://alice:***@127.0.0.1" in line for line in said), said
    assert not any(PASSWORD in line for line in said), said


def test_the_resume_command_names_the_store_with_its_reference(dead_server, tmp_path):
    from dataclasses import replace

    from orchestrator.lifecycle import plan_run
    from orchestrator.lifecycle.run import resume_command

    written = dead_server.replace(PASSWORD, "${env:URI_PASSWORD}")
    plan = plan_run(parse_spec(f"name: x\ntracking:\n  uri: '{written}'\n"), tmp_path)
    command = resume_command(plan.with_identity(replace(plan.identity, name="x-1")))
    assert command == f"orchestrator submit --resume x-1 --tracking-uri '{written}'"
