"""The MLflow run of a job: created by the driver before any worker starts, finished by it after.

Tags under ``orchestrator.`` tell the reporter where the run's artifacts live, so a report can be
rebuilt from MLflow alone.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

from orchestrator.masking import loggable_params, split_uri_credentials
from orchestrator.track.runs import (
    BACKEND_TAG,
    CHECKPOINT_DIR_TAG,
    CHECKPOINT_URI_TAG,
    DATASET_TAG,
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    GIT_COMMIT_TAG,
    MLFLOW_GIT_COMMIT_TAG,
    SPEC_ARTIFACT,
    SPEC_SHA256_TAG,
    WORLD_SIZE_TAG,
)

# MLflow refuses a log_batch request with more than 1000 metrics or more than 100 params.
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
# Retries bounded so that no call blocks for minutes (MLflow's defaults: 7 retries, 120 s timeout,
# about 4 minutes against a dead server). Users may override any of them in the environment.
BOUNDED_HTTP_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


# Where MLflow's HTTP clients read a tracking server's basic-auth credentials.
CREDENTIAL_ENV = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


def quiet_mlflow_env() -> dict[str, str]:
    """Environment for every process that talks to MLflow: no telemetry, no long blocking retries,
    and no "View run ... at:" lines of MLflow's own (this tool prints where to see a run)."""
    env = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    env.update({k: os.environ.get(k, v) for k, v in BOUNDED_HTTP_ENV.items()})
    env["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = os.environ.get(
        "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true"
    )
    return env


def mlflow_uri(tracking_uri: str) -> str:
    """The URI to hand MLflow for a store. An http(s) URI's ``user:password@`` is taken out: the
    credentials go into this process's environment (MLFLOW_TRACKING_USERNAME/PASSWORD, which
    MLflow's clients read and every process started from here inherits), so no URL MLflow prints,
    logs or puts in an error holds the password. Every MlflowClient, store and
    ``mlflow.set_tracking_uri`` of this project gets its URI from here."""
    os.environ.update(quiet_mlflow_env())
    uri, user, password = split_uri_credentials(tracking_uri)
    if password is not None:
        os.environ.update(dict(zip(CREDENTIAL_ENV, (user or "", password), strict=True)))
    return uri


def client(tracking_uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=mlflow_uri(tracking_uri))


def create_run(plan, spec_dir: str | Path = ".", tags: dict[str, str] | None = None) -> str:
    """Create (or reuse) the experiment and a new run; log params, tags (the orchestrator's plus
    ``tags``) and the resolved spec (``spec.yaml``: file plus overrides, secrets as references).
    Returns the run id."""
    mlflow = client(plan.tracking_uri)
    experiment_id = training_experiment(mlflow, plan.experiment_name)
    all_tags = {**run_tags(plan, spec_dir), **(tags or {})}
    run = mlflow.create_run(experiment_id, run_name=plan.run_name, tags=all_tags)
    run_id = run.info.run_id
    from mlflow.entities import Param

    params = loggable_params(
        flatten(plan.spec.public_dump())
    )  # secrets: their ${env:...} reference, never the value
    params.update(
        {
            "plan.global_batch_size": plan.global_batch_size,
            "plan.tokens_per_step": plan.tokens_per_step,
            "plan.total_steps": plan.total_steps,
            "plan.steps_per_epoch": plan.steps_per_epoch,
            "plan.dataset_tokens": plan.data.n_tokens,
            "plan.dataset_documents": plan.data.n_documents,
            "plan.train_samples": plan.data.train_samples,
            "plan.val_samples": plan.data.val_samples,
        }
    )
    items = [Param(k, str(v)) for k, v in sorted(params.items())]
    for start in range(0, len(items), MAX_PARAMS_PER_BATCH):
        mlflow.log_batch(run_id, params=items[start : start + MAX_PARAMS_PER_BATCH])
    mlflow.log_text(run_id, plan.spec_text, SPEC_ARTIFACT)
    return run_id


DATASET_ARTIFACT = "dataset/manifest.json"


def log_dataset(plan) -> None:
    """The prepared dataset as the run's input (the run page's Datasets section: name, digest, source
    and a profile of its counts) and its manifest as an artifact. Nothing when the data is only an
    estimate (a cluster prepares it; its driver logs it then)."""
    data = plan.data
    if data.estimated:
        return
    import json

    from mlflow.entities import Dataset, DatasetInput, InputTag

    from orchestrator.data.prepare import read_manifest
    from orchestrator.storage.store import StoreSettings, open_store

    store = open_store(data.dataset_uri, StoreSettings.from_env(plan.spec.storage))
    manifest = read_manifest(store)
    written = plan.spec.with_references  # a path from a `${env:...}` stays a reference
    source = {"uri": written(data.dataset_uri), "corpus": plan.spec.data.corpus,
              "files": plan.spec.public_dump()["data"]["files"]}  # fmt: skip
    profile = {
        "documents": data.n_documents,
        "tokens": data.n_tokens,
        "shards": data.n_shards,
        "train_sequences": data.train_samples,
        "validation_sequences": data.val_samples,
        "tokenizer_vocab": manifest.tokenizer["vocab_size"],
        "pretrained_tokenizer": manifest.tokenizer["pretrained"],
    }
    dataset = Dataset(
        name=data.dataset_uri.rstrip("/").rsplit("/", 1)[-1],
        digest=data.manifest_digest[:36],  # MLflow keeps at most 36 characters
        source_type="gpt-orchestrator",
        source=json.dumps(source),
        profile=json.dumps(profile),
    )
    mlflow = client(plan.tracking_uri)
    mlflow.log_inputs(
        plan.run_id, datasets=[DatasetInput(dataset, [InputTag("mlflow.data.context", "training")])]
    )
    mlflow.log_text(plan.run_id, manifest.to_json(), DATASET_ARTIFACT)


def training_experiment(mlflow, name: str) -> str:
    """The id of experiment `name`, created if missing, tagged to open in MLflow's model-training
    view (an existing experiment without the tag gets it; one a person set otherwise is left)."""
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        return mlflow.create_experiment(name, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
    if EXPERIMENT_KIND_TAG not in experiment.tags:
        mlflow.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return experiment.experiment_id


def run_tags(plan, spec_dir: str | Path) -> dict[str, str]:
    tags = {
        CHECKPOINT_DIR_TAG: plan.checkpoint_dir,
        CHECKPOINT_URI_TAG: plan.checkpoint_uri,
        DATASET_TAG: plan.data.manifest_digest,
        SPEC_SHA256_TAG: plan.spec_sha256,
        BACKEND_TAG: plan.spec.cluster.backend,
        WORLD_SIZE_TAG: str(plan.world_size),
    }
    commit = git_commit(spec_dir)
    if commit:
        tags[GIT_COMMIT_TAG] = commit
        tags[MLFLOW_GIT_COMMIT_TAG] = commit
    return tags


def git_commit(directory: str | Path) -> str | None:
    """The commit checked out where the spec lives, or None outside a git work tree."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and re.fullmatch(r"[0-9a-f]{40,64}", commit) else None


def log_points(mlflow, run_id: str, points) -> None:
    """One log_batch request with the points' own timestamps (so a resend is an exact duplicate)."""
    from mlflow.entities import Metric

    metrics = [Metric(p.key, p.value, p.timestamp, p.step) for p in points]
    mlflow.log_batch(run_id, metrics=metrics)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"model": {"d_model": 64}} -> {"model.d_model": 64}"""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
