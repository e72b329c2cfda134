"""`${env:NAME}` references: resolved at load, never printed or logged."""

from __future__ import annotations

import json

import pytest

from orchestrator.cli import main
from orchestrator.spec import SpecError, parse_spec
from orchestrator.track.mlflow_run import client, create_run
from tests.conftest import prepared_plan

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
    plan = prepared_plan(spec, tmp_path)
    run_id = create_run(plan)
    params = client(plan.tracking_uri).get_run(run_id).data.params
    assert params["tracking.run_name"] == "r-${env:TEST_DB_PASSWORD}"
    assert all(SECRET not in value for value in params.values())


HARD_SECRET = 'pä"ss\\wörd-ünï'  # JSON escapes every character class here


def leaked(secret: str, text: str) -> bool:
    """The secret as written, or as JSON (ASCII-escaped or not) would write it."""
    forms = {secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}
    return any(form in text for form in forms)


def test_plan_json_masks_secrets_that_json_escapes(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HARD_SECRET", HARD_SECRET)
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "name: x\ntracking:\n  uri: 'http://alice:${env:HARD_SECRET}@127.0.0.1:5000'\n"
        "  experiment: 'exp ${env:HARD_SECRET}'\n"
        "deepspeed:\n  raw_config: {wandb: {enabled: false, project: '${env:HARD_SECRET}'}}\n"
    )
    monkeypatch.chdir(tmp_path)
    assert main(["plan", str(spec), "--json"]) == 0
    out = capsys.readouterr().out
    assert not leaked(HARD_SECRET, out)
    plan = json.loads(out)
    assert plan["experiment_name"] == "exp ***"
    assert plan["deepspeed_config"]["wandb"]["project"] == "***"
    assert plan["spec"]["tracking"]["experiment"] == "exp ${env:HARD_SECRET}"
    assert main(["plan", str(spec)]) == 0
    assert not leaked(HARD_SECRET, capsys.readouterr().out)


def test_a_wrong_type_names_the_reference_not_the_value(secret_env):
    with pytest.raises(SpecError) as info:
        parse_spec("name: x\ntrain:\n  epochs: '${env:TEST_DB_PASSWORD}'\n", "s.yaml")
    (problem,) = info.value.problems
    assert "got str '${env:TEST_DB_PASSWORD}'" in problem.message
    assert SECRET not in info.value.render()


def test_a_check_that_quotes_a_value_shows_no_secret(secret_env):
    text = "name: x\ncluster: {backend: ray-job, address: 'dashboard-${env:TEST_DB_PASSWORD}'}\n"
    with pytest.raises(SpecError) as info:
        parse_spec(text, "s.yaml")
    (problem,) = info.value.problems
    assert problem.path == "cluster.address" and "'dashboard-***'" in problem.message
    assert SECRET not in info.value.render()


@pytest.mark.parametrize("value", ["a", "1234567"])
def test_a_secret_too_short_to_mask_is_refused(monkeypatch, value):
    """A one-character secret used to mask every matching character of the output."""
    monkeypatch.setenv("SHORT_SECRET", value)
    with pytest.raises(SpecError) as info:
        parse_spec("name: x\ntracking:\n  uri: 'http://u:${env:SHORT_SECRET}@h:5000'\n", "s.yaml")
    (problem,) = info.value.problems
    assert (problem.path, problem.line) == ("tracking.uri", 3)
    assert f"holds {len(value)} characters" in problem.message and "at least 8" in problem.hint


def test_a_secret_is_masked_as_a_whole_value_only(monkeypatch):
    monkeypatch.setenv("LONG_SECRET", "abcdefgh")
    spec = parse_spec("name: x\ntracking:\n  experiment: 'e-${env:LONG_SECRET}'\n")
    assert spec.redact("abc abcdefgh bcd") == "abc *** bcd"
    assert spec.with_references("at e-abcdefgh") == "at e-${env:LONG_SECRET}"


@pytest.mark.parametrize(
    "uri",
    [
        "http://alice:pw123@127.0.0.1:5000",
        "postgresql://u:p@db/mlflow",
        "http://u:${env:TEST_DB_PASSWORD}x@h",
    ],
)
def test_a_password_written_in_plain_text_is_refused(secret_env, uri):
    """A run stores its spec (MLflow artifact, ray-job ticket, Kubernetes ConfigMap): no password in it."""
    with pytest.raises(SpecError) as info:
        parse_spec(f"name: x\ntracking:\n  uri: '{uri}'\n", "s.yaml")
    (problem,) = info.value.problems
    assert (problem.path, problem.line) == ("tracking.uri", 3)
    assert "password in plain text" in problem.message and "${env:" in problem.hint


def test_a_password_given_as_a_reference_is_stored_as_the_reference(secret_env):
    spec = parse_spec("name: x\ntracking:\n  uri: 'http://alice:${env:TEST_DB_PASSWORD}@h:5000'\n")
    assert spec.tracking.uri == f"http://alice:{SECRET}@h:5000"
    assert "${env:TEST_DB_PASSWORD}" in spec.resolved_text() and SECRET not in spec.resolved_text()
