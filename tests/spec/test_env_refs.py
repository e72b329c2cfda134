"""`${env:NAME}` references: resolved at load, never printed or logged."""

from __future__ import annotations

import json

import pytest

from orchestrator.cli import main
from orchestrator.plan import build_plan
from orchestrator.spec import SpecError, parse_spec
from orchestrator.track.mlflow_run import client, create_run

SECRET = "s3cr3t-value-42"


@pytest.fixture
def secret_env(monkeypatch):
    monkeypatch.setenv("TEST_DB_PASSWORD", SECRET)


def test_reference_is_resolved_but_shown_as_written(secret_env):
    spec = parse_spec("name: x\ntracking:\n  experiment: exp-${env:TEST_DB_PASSWORD}\n")
    assert spec.tracking.experiment == f"exp-{SECRET}"
    assert spec.public_dump()["tracking"]["experiment"] == "exp-${env:TEST_DB_PASSWORD}"
    assert SECRET not in repr(spec.public_dump())


def test_missing_variable_is_a_problem_with_its_line(monkeypatch):
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    with pytest.raises(SpecError) as info:
        parse_spec("name: x\ntracking:\n  run_name: ${env:NOT_SET_ANYWHERE}\n", "s.yaml")
    (problem,) = info.value.problems
    assert (problem.path, problem.line) == ("tracking.run_name", 3)
    assert "NOT_SET_ANYWHERE is not set" in problem.message
    assert "export NOT_SET_ANYWHERE=" in problem.hint


@pytest.mark.parametrize("command", [["plan", "--json"], ["plan"], ["validate"]])
def test_command_output_never_shows_the_secret(secret_env, tmp_path, capsys, monkeypatch, command):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: x\ntracking:\n  uri: http://alice:${env:TEST_DB_PASSWORD}@127.0.0.1:5000\n")
    monkeypatch.chdir(tmp_path)
    assert main([command[0], str(spec), *command[1:]]) == 0
    out = capsys.readouterr().out
    assert SECRET not in out
    assert "http://alice:***@127.0.0.1:5000" in out
    if "--json" in command:
        assert (
            json.loads(out)["spec"]["tracking"]["uri"]
            == "http://alice:${env:TEST_DB_PASSWORD}@127.0.0.1:5000"
        )


def test_mlflow_params_hold_the_reference_not_the_value(secret_env, tmp_path):
    text = f"name: x\ntracking:\n  uri: sqlite:///{tmp_path}/m.db\n  run_name: r-${{env:TEST_DB_PASSWORD}}\n"
    spec = parse_spec(text)
    plan = build_plan(spec, cwd=tmp_path)
    run_id = create_run(plan)
    params = client(plan.tracking_uri).get_run(run_id).data.params
    assert params["tracking.run_name"] == "r-${env:TEST_DB_PASSWORD}"
    assert all(SECRET not in value for value in params.values())
