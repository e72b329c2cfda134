"""Params and tags of the MLflow run: the spec flattened, secrets never, the git commit."""

from __future__ import annotations

import re

from orchestrator.masking import loggable_params, mask_uri_passwords
from orchestrator.track.mlflow_run import flatten, git_commit
from tests.conftest import REPO


def test_params_are_the_flattened_spec_without_secrets():
    spec = {
        "model": {"d_model": 64},
        "tracking": {"uri": "postgresql+psycopg2://mlflow:s3cr3t@db:5432/mlflow", "api_key": "abc"},
        "storage": {"password": "hunter2", "access_token": "t"},
    }
    params = loggable_params(flatten(spec))
    assert params == {"model.d_model": 64, "tracking.uri": "postgresql+psycopg2://mlflow:***@db:5432/mlflow"}
    assert "s3cr3t" not in str(params) and "hunter2" not in str(params)


def test_spec_text_is_logged_with_uri_passwords_masked():
    text = "tracking: {uri: http://alice:pw@127.0.0.1:5000}\n"
    assert mask_uri_passwords(text) == "tracking: {uri: http://alice:***@127.0.0.1:5000}\n"


def test_git_commit_of_a_work_tree_and_none_outside(tmp_path):
    assert re.fullmatch(r"[0-9a-f]{40}", git_commit(REPO) or "")
    assert git_commit(tmp_path) is None


def test_experiments_open_in_the_model_training_view(tmp_path):
    from orchestrator.track.mlflow_run import client, training_experiment
    from orchestrator.track.runs import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG

    mlflow = client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    created = training_experiment(mlflow, "fresh")
    assert (
        mlflow.get_experiment(created).tags[EXPERIMENT_KIND_TAG]
        == EXPERIMENT_KIND
        == "custom_model_development"
    )
    older = mlflow.create_experiment("made-before-the-tag")
    assert EXPERIMENT_KIND_TAG not in mlflow.get_experiment(older).tags
    assert training_experiment(mlflow, "made-before-the-tag") == older
    assert mlflow.get_experiment(older).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    chosen = mlflow.create_experiment("genai-on-purpose", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    training_experiment(mlflow, "genai-on-purpose")  # a person's choice is kept
    assert mlflow.get_experiment(chosen).tags[EXPERIMENT_KIND_TAG] == "genai_development"


def test_the_run_page_url_is_the_servers_own_or_the_local_ui(sqlite_run):
    from orchestrator.track.ui import run_page_url

    uri, run_id, _ = sqlite_run
    view = "?workflowType=machine_learning"  # MLflow 3's UI: the model-training view, not GenAI
    assert run_page_url("https://bob:pw@mlflow.example.org/", "r1", "7") == (
        f"https://mlflow.example.org/#/experiments/7/runs/r1{view}"
    )
    assert (
        run_page_url("http://127.0.0.1:5555", "r1", "0")
        == f"http://127.0.0.1:5555/#/experiments/0/runs/r1{view}"
    )
    assert run_page_url(uri, run_id) == f"http://127.0.0.1:5000/#/experiments/1/runs/{run_id}{view}"
    assert run_page_url(uri, run_id, port=5001).startswith("http://127.0.0.1:5001/#/experiments/1/runs/")
