"""The plan of an existing run, to continue it: same spec, MLflow run and checkpoint directory.

The worker restores the latest complete checkpoint by itself; this only finds the run again, by
MLflow run id or run name, and refuses what cannot be continued.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import replace
from pathlib import Path

from orchestrator.plan.plan import Plan, PlanError, build_plan

_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def plan_for_resume(run_ref: str, tracking_uri: str, cwd: Path | None = None) -> tuple[Plan, str]:
    """(plan, spec text) of the run `run_ref` (an MLflow run id or run name)."""
    from orchestrator.spec import parse_spec

    run = find_run(run_ref, tracking_uri)
    spec_text = _spec_text(run, tracking_uri)
    checkpoint_dir = run.data.tags.get("orchestrator.checkpoint_dir")
    if not checkpoint_dir:
        raise PlanError(
            f"MLflow run {run.info.run_id} was not started by this orchestrator (no checkpoint tag)"
        )
    plan = build_plan(parse_spec(spec_text, "spec.yaml (from MLflow)"), spec_text, cwd)
    plan = replace(
        plan,
        run_name=run.info.run_name,
        checkpoint_dir=checkpoint_dir,
        tracking_uri=tracking_uri,
        run_id=run.info.run_id,
    )
    return plan, spec_text


def find_run(run_ref: str, tracking_uri: str):
    """The MLflow run with this id, or the one run with this name (LookupError otherwise)."""
    from mlflow.exceptions import MlflowException

    from orchestrator.track.mlflow_run import client

    mlflow = client(tracking_uri)
    if _RUN_ID.match(run_ref):
        try:
            return mlflow.get_run(run_ref)
        except MlflowException:
            pass  # maybe a run *named* like an id
    experiments = [e.experiment_id for e in mlflow.search_experiments()]
    escaped = run_ref.replace("'", "\\'")
    runs = (
        mlflow.search_runs(experiments, filter_string=f"attributes.run_name = '{escaped}'")
        if experiments
        else []
    )
    if len(runs) == 1:
        return runs[0]
    if not runs:
        raise LookupError(
            f"no MLflow run with id or name {run_ref!r} in {tracking_uri}; check the name printed by "
            "submit, and --tracking-uri if the run was tracked elsewhere"
        )
    ids = ", ".join(r.info.run_id for r in runs)
    raise LookupError(f"{len(runs)} runs are named {run_ref!r} ({ids}); pass the MLflow run id instead")


def _spec_text(run, tracking_uri: str) -> str:
    from orchestrator.track.mlflow_run import client

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client(tracking_uri).download_artifacts(run.info.run_id, "spec.yaml", tmp)
        except Exception as exc:  # MLflow raises several types for a missing artifact
            raise LookupError(f"MLflow run {run.info.run_id} holds no spec.yaml artifact ({exc})") from None
        return Path(path).read_text()
