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
    spec = parse_spec("name: x\ndata:\n  corpus: files\n  files: ['exp-${env:TEST_DB_PASSWORD}']\n")
    assert spec.data.files == [f"exp-{SECRET}"]
    assert spec.public_dump()["data"]["files"] == ["exp-${env:TEST_DB_PASSWORD}"]
    assert SECRET not in repr(spec.public_dump())


def test_missing_variable_is_a_problem_with_its_line(monkeypatch):
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    with pytest.raises(SpecError) as info:
        parse_spec("name: x\ntracking:\n  uri: ${env:NOT_SET_ANYWHERE}\n", "s.yaml")
    (problem,) = info.value.problems
    assert (problem.path, problem.line) == ("tracking.uri", 3)
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
    text = (
        f"name: x\ntracking:\n  uri: sqlite:///{tmp_path}/m.db\n"
        "deepspeed:\n  raw_config: {wandb: {enabled: false, project: 'r-${env:TEST_DB_PASSWORD}'}}\n"
    )
    spec = parse_spec(text)
    plan = prepared_plan(spec, tmp_path)
    run_id = create_run(plan)
    params = client(plan.tracking_uri).get_run(run_id).data.params
    assert params["deepspeed.raw_config.wandb.project"] == "r-${env:TEST_DB_PASSWORD}"
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
        "deepspeed:\n  raw_config: {wandb: {enabled: false, project: '${env:HARD_SECRET}'}}\n"
    )
    monkeypatch.chdir(tmp_path)
    assert main(["plan", str(spec), "--json"]) == 0
    out = capsys.readouterr().out
    assert not leaked(HARD_SECRET, out)
    plan = json.loads(out)
    assert plan["tracking_uri"] == "http://alice:***@127.0.0.1:5000"
    assert plan["deepspeed_config"]["wandb"]["project"] == "***"
    assert plan["spec"]["deepspeed"]["raw_config"]["wandb"]["project"] == "${env:HARD_SECRET}"
    assert main(["plan", str(spec)]) == 0
    assert not leaked(HARD_SECRET, capsys.readouterr().out)


def test_a_wrong_type_names_the_reference_not_the_value(secret_env):
    with pytest.raises(SpecError) as info:
        parse_spec("name: x\ndata:\n  files: '${env:TEST_DB_PASSWORD}'\n", "s.yaml")
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
    spec = parse_spec("name: x\ndata: {corpus: files, files: ['e-${env:LONG_SECRET}']}\n")
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


# --- where a reference may stand ------------------------------------------------------------------

# A credential, or a URI or path that may carry one: stored and shown with the reference, never the
# value, and never used as a name. Everything else (names, directories, labels, numbers) refuses one.
MAY_REFER = {
    "tracking.uri",
    "cluster.address",
    "kubernetes.mlflow_uri",
    "data.files",
    "deepspeed.raw_config",
    "storage.access_key_id",
    "storage.secret_access_key",
}


def leaf_fields(model=None, prefix: str = "") -> dict[str, object]:
    """{dotted path: annotation} of every field of the spec a user can write, nested sections and the
    models inside lists and mappings (kubernetes.tolerations, sweep.parameters) included."""
    import types
    import typing

    from pydantic import BaseModel

    from orchestrator.spec.models import RunSpec

    fields: dict[str, object] = {}
    for name, field in (model or RunSpec).model_fields.items():
        annotation, path = field.annotation, f"{prefix}{name}"
        present = [a for a in typing.get_args(annotation) if a is not type(None)]
        if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(present) == 1:
            annotation = present[0]  # an optional field: what it holds when set
        inner = [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            fields.update(leaf_fields(annotation, f"{path}."))
        elif inner:  # list[Model] or dict[str, Model]: one element of it
            part = "0" if typing.get_origin(annotation) is list else "k"
            fields.update(leaf_fields(inner[0], f"{path}.{part}."))
        else:
            fields[path] = annotation
    return fields


def reference_document(path: str, annotation) -> str:
    """A spec whose field at `path` holds a reference, written as the field's shape wants it."""
    import typing

    origin = typing.get_origin(annotation)
    value = "'${env:TEST_DB_PASSWORD}'"
    if origin is list:
        value = f"[{value}]"
    elif origin is dict:
        value = f"{{key: {value}}}"
    *parents, leaf = path.split(".")
    lines, indent = ["name: x"] if path != "name" else [], ""
    for part in parents:
        lines.append(f"{indent}- " if part == "0" else f"{indent}{'k' if part == 'k' else part}:")
        if part == "0":  # a list item: its keys follow the dash
            lines[-1] = lines[-1] + f"{leaf}: {value}"
            return "\n".join(lines) + "\n"
        indent += "  "
    lines.append(f"{indent}{leaf}: {value}")
    return "\n".join(lines) + "\n"


FIELDS = leaf_fields()


def test_the_field_walk_sees_every_section():
    assert {"name", "tracking.experiment", "checkpoint.dir", "kubernetes.node_selector"} <= set(FIELDS)
    assert "kubernetes.tolerations.0.key" in FIELDS and "sweep.parameters.k.choice" in FIELDS
    assert set(FIELDS) >= MAY_REFER


@pytest.mark.parametrize("path", sorted(FIELDS))
def test_a_reference_stands_only_where_a_credential_belongs(secret_env, path):
    """Every field of the schema, given a `${env:...}` reference: accepted only where the value is a
    credential or a URI or path that may carry one; refused everywhere else (a number's field too),
    with the field's line, what is wrong and what to do, the secret never shown."""
    document = reference_document(path, FIELDS[path])
    try:
        parse_spec(document, "s.yaml")
        problems = []
    except SpecError as exc:
        problems = exc.problems
        assert SECRET not in exc.render()
    refused = [p for p in problems if "only for credentials" in p.message and p.path.startswith(path)]
    if path in MAY_REFER:
        assert not refused, [p.render("s.yaml") for p in refused]
        return
    assert len(refused) == 1, f"{path}: {[p.render('s.yaml') for p in problems]}"
    (problem,) = refused
    assert problem.line == document.count("\n"), problem.render("s.yaml")
    assert "write the value" in problem.hint


@pytest.mark.parametrize("field", ["tracking.experiment", "tracking.run_name", "checkpoint.dir", "name"])
def test_a_reference_in_a_stored_name_is_refused_by_validate_with_exit_2(secret_env, tmp_path, capsys, field):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: x\n")
    code = main(["validate", str(spec), "--set", f"{field}=${{env:TEST_DB_PASSWORD}}"])
    err = capsys.readouterr().err
    assert code == 2 and f"--set {field}=" in err and "only for credentials" in err, err
    assert SECRET not in err
