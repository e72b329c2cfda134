"""Params and tags of the MLflow run: the spec flattened, secrets never, the git commit."""

from __future__ import annotations

import re

from orchestrator.track.mlflow_run import flatten, git_commit, redact, redact_text
from tests.conftest import REPO


def test_params_are_the_flattened_spec_without_secrets():
    spec = {
        "model": {"d_model": 64},
        "tracking": {"uri": "postgresql+psycopg2://mlflow:s3cr3t@db:5432/mlflow", "api_key": "abc"},
        "storage": {"password": "hunter2", "access_token": "t"},
    }
    params = redact(flatten(spec))
    assert params == {"model.d_model": 64, "tracking.uri": "postgresql+psycopg2://mlflow:***@db:5432/mlflow"}
    assert "s3cr3t" not in str(params) and "hunter2" not in str(params)


def test_spec_text_is_logged_with_uri_passwords_masked():
    text = "tracking: {uri: http://alice:pw@127.0.0.1:5000}\n"
    assert redact_text(text) == "tracking: {uri: http://alice:***@127.0.0.1:5000}\n"


def test_git_commit_of_a_work_tree_and_none_outside(tmp_path):
    assert re.fullmatch(r"[0-9a-f]{40}", git_commit(REPO) or "")
    assert git_commit(tmp_path) is None
