"""Rendered manifests carry references to secrets, never their values: a `${env:NAME}` anywhere in the
spec either reaches the pods as a Secret reference (`secretKeyRef`, then `$(NAME)` inside another
variable) or is refused, naming the field. A unique canary value in the environment never appears in
any rendered document, nor in what `orchestrator k8s render` prints."""

from __future__ import annotations

import json
import secrets

import pytest
import yaml

from launchers.kubernetes import render as r
from orchestrator import cli
from orchestrator.errors import UsageError
from orchestrator.spec import load_spec
from tests.k8s.conftest import CONFIGS, RUN_ID

QUICKSTART = CONFIGS[0].parent / "quickstart.yaml"
MAPPED = "kubernetes.secret_env={CANARY: vault/canary}"


@pytest.fixture
def canary(monkeypatch) -> str:
    value = "canary-" + secrets.token_hex(12)
    monkeypatch.setenv("CANARY", value)
    return value


def rendered_text(*overrides: str) -> str:
    spec = load_spec(QUICKSTART, ["cluster.backend=kubernetes", *overrides])
    rendered = r.render_job(spec, r.RunIdentity(RUN_ID, "quickstart-1", spec.resolved_text()))
    return json.dumps(rendered.documents()) + rendered.to_yaml()


# Fields whose value reaches an environment variable: the value becomes a reference there.
@pytest.mark.parametrize(
    "override",
    [
        "kubernetes.mlflow_uri=http://trainer:${env:CANARY}@mlflow.tracking:5000",
        "tracking.uri=http://trainer:${env:CANARY}@mlflow.tracking:5000",
        "storage.access_key_id=${env:CANARY}",
    ],
)
def test_a_reference_reaches_the_pods_as_a_secret_reference(canary, override):
    text = rendered_text(override, MAPPED)
    assert canary not in text
    assert '"secretKeyRef": {"name": "vault", "key": "canary"}' in text


def test_a_password_in_mlflows_uri_is_expanded_by_kubernetes_from_the_secret(canary):
    spec = load_spec(
        QUICKSTART,
        ["cluster.backend=kubernetes", "kubernetes.mlflow_uri=http://u:${env:CANARY}@mlflow.t:5000", MAPPED],
    )
    head = r.render_job(spec, r.RunIdentity(RUN_ID, "q-1", spec.resolved_text())).rayjob["spec"][
        "rayClusterSpec"
    ]["headGroupSpec"]["template"]["spec"]["containers"][0]
    names = [e["name"] for e in head["env"]]
    uri = next(e for e in head["env"] if e["name"] == "MLFLOW_TRACKING_URI")
    assert uri == {"name": "MLFLOW_TRACKING_URI", "value": "http://u:$(CANARY)@mlflow.t:5000"}
    assert names.index("CANARY") < names.index("MLFLOW_TRACKING_URI")  # defined first, as $(...) needs


# Fields no Secret can fill: the image, scheduling, names, labels. Refused, naming the field.
@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("kubernetes.image=registry.example.com/${env:CANARY}:1", "kubernetes.image"),
        ('kubernetes.node_selector={pool: "${env:CANARY}"}', "kubernetes.node_selector"),
        ('kubernetes.tolerations=[{key: pool, value: "${env:CANARY}"}]', "kubernetes.tolerations"),
        ('cluster.label_selector={team: "${env:CANARY}"}', "cluster.label_selector"),
        ("kubernetes.queue=${env:CANARY}", "kubernetes.queue"),
        ("tracking.run_name=${env:CANARY}", "tracking.run_name"),
        ("kubernetes.priority_class=${env:CANARY}", "kubernetes.priority_class"),
    ],
)
def test_a_reference_where_no_secret_can_go_is_refused(canary, override, field):
    with pytest.raises(UsageError, match=field) as refused:  # the spec refuses it: a SpecError
        rendered_text(override, MAPPED)
    assert canary not in str(refused.value)


@pytest.mark.parametrize(
    "override",
    [
        "kubernetes.mlflow_uri=http://trainer:${env:CANARY}@mlflow.tracking:5000",
        "kubernetes.image=registry.example.com/${env:CANARY}:1",
        'kubernetes.node_selector={pool: "${env:CANARY}"}',
    ],
)
def test_k8s_render_never_prints_the_value(canary, override, capsys):
    code = cli.main(["k8s", "render", str(QUICKSTART), "--set", override, "--set", MAPPED])
    out, err = capsys.readouterr()
    assert canary not in out + err
    if code == 0:
        assert any(yaml.safe_load_all(out))
    else:
        assert code == 2 and "kubernetes." in err
