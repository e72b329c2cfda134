"""The MLflow run of a job: created by the driver before any worker starts, finished by it after.

Tags under ``orchestrator.`` tell the reporter where the run's artifacts live, so a report can be
rebuilt from MLflow alone.
"""

from __future__ import annotations

import os
from typing import Any

CHECKPOINT_DIR_TAG = "orchestrator.checkpoint_dir"


def quiet_mlflow_env() -> dict[str, str]:
    """Environment for every process that talks to MLflow: no telemetry, no long blocking retries."""
    return {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}


def client(tracking_uri: str):
    os.environ.update(quiet_mlflow_env())
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def create_run(plan, spec_text: str) -> str:
    """Create (or reuse) the experiment and a new run; log params, tags and the spec. Returns run id."""
    mlflow = client(plan.tracking_uri)
    experiment = mlflow.get_experiment_by_name(plan.experiment_name)
    experiment_id = experiment.experiment_id if experiment else mlflow.create_experiment(plan.experiment_name)
    tags = {
        CHECKPOINT_DIR_TAG: plan.checkpoint_dir,
        "orchestrator.spec_sha256": plan.spec_sha256,
        "orchestrator.backend": plan.spec.cluster.backend,
        "orchestrator.world_size": str(plan.world_size),
    }
    run = mlflow.create_run(experiment_id, run_name=plan.run_name, tags=tags)
    run_id = run.info.run_id
    from mlflow.entities import Param

    params = flatten(plan.spec.public_dump())  # secrets appear as their ${env:...} reference
    params.update(
        {
            "plan.global_batch_size": plan.global_batch_size,
            "plan.tokens_per_step": plan.tokens_per_step,
            "plan.total_steps": plan.total_steps,
            "plan.steps_per_epoch": plan.steps_per_epoch,
            "plan.dataset_tokens": plan.data.n_tokens,
        }
    )
    mlflow.log_batch(run_id, params=[Param(k, str(v)) for k, v in sorted(params.items())])
    mlflow.log_text(run_id, spec_text, "spec.yaml")
    return run_id


def finish_run(tracking_uri: str, run_id: str, status: str, artifact_dir: str | None) -> None:
    """Upload the report artifacts and set the run's final status (FINISHED, FAILED or KILLED)."""
    mlflow = client(tracking_uri)
    if artifact_dir and os.path.isdir(artifact_dir):
        for name in sorted(os.listdir(artifact_dir)):
            if name.endswith((".json", ".png")):
                mlflow.log_artifact(run_id, os.path.join(artifact_dir, name), "report")
    mlflow.set_terminated(run_id, status=status)


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
