"""The run vocabulary shared by every part that talks about runs: MLflow tag names, run statuses and
how they map to job states, the job handle a launcher returns, the run record, and finding a run by
MLflow run id or run name. Nothing else spells these literals.

>>> JobState.STOPPED.mlflow_status, JobState.from_mlflow("FINISHED")
('KILLED', <JobState.SUCCEEDED: 'SUCCEEDED'>)
"""

from __future__ import annotations

import enum
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import NotFoundError
from orchestrator.text import first_line

# Tags the orchestrator sets on every run it creates.
CHECKPOINT_DIR_TAG = "orchestrator.checkpoint_dir"  # where the run's files are (absolute path)
SPEC_SHA256_TAG = "orchestrator.spec_sha256"  # hash of the stored resolved spec.yaml
BACKEND_TAG = "orchestrator.backend"
WORLD_SIZE_TAG = "orchestrator.world_size"
GIT_COMMIT_TAG = "orchestrator.git_commit"
MLFLOW_GIT_COMMIT_TAG = "mlflow.source.git.commit"  # MLflow's own: its UI shows it
# Set later in a run's life.
JOB_ID_TAG = "orchestrator.job_id"  # a detached backend's job (a Ray job submission id, a RayJob)
ADDRESS_TAG = "orchestrator.address"  # where that job runs (no credentials)
STOP_REASON_TAG = "orchestrator.stop_reason"  # why training ended before its last step
RESUME_OVERRIDES_TAG = "orchestrator.resume_overrides"  # `--set` values applied by the last resume
SPEC_ARTIFACT = "spec.yaml"  # the resolved spec, secrets as references
# Sweeps: one parent run holds the sweep; each trial is a child run (MLflow's own parent tag, which
# its UI nests by).
PARENT_RUN_TAG = "mlflow.parentRunId"
SWEEP_TAG = "orchestrator.sweep"  # on a sweep's parent run: the number of trials it plans
TRIAL_ID_TAG = "orchestrator.trial_id"  # on a trial's run: Ray Tune's trial id
TRIAL_PARAMS_TAG = "orchestrator.trial_params"  # on a trial's run: {dotted path: value} as JSON
BEST_TRIAL_TAG = "orchestrator.best_trial"  # on the parent: the best trial's run id
BEST_PARAMS_TAG = "orchestrator.best_params"  # on the parent: its {dotted path: value} as JSON

RUN_STATUSES = ("FINISHED", "FAILED", "KILLED")  # MLflow's final statuses
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


class JobState(enum.Enum):
    PENDING = "PENDING"  # accepted, waiting for resources or for its driver to start
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    STOPPED = "STOPPED"  # cancelled or interrupted

    @property
    def is_final(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.STOPPED)

    @property
    def mlflow_status(self) -> str:
        """The MLflow run status that records this state."""
        return _TO_MLFLOW.get(self, "RUNNING")

    @classmethod
    def from_mlflow(cls, status: str) -> JobState:
        return _FROM_MLFLOW.get(status, cls.RUNNING)


_TO_MLFLOW = {JobState.SUCCEEDED: "FINISHED", JobState.FAILED: "FAILED", JobState.STOPPED: "KILLED"}
_FROM_MLFLOW = {
    "RUNNING": JobState.RUNNING,
    "SCHEDULED": JobState.PENDING,
    "FINISHED": JobState.SUCCEEDED,
    "FAILED": JobState.FAILED,
    "KILLED": JobState.STOPPED,
}


@dataclass(frozen=True)
class JobHandle:
    """What a launcher knows of a job: its state, and why it failed or stopped."""

    backend: str
    run_id: str
    state: JobState
    error: str | None = None
    job_id: str = ""  # the backend's own id (a Ray job submission id); empty for a foreground run
    reason: str | None = None  # the backend's word for the state, when it says more (Retrying ...)


@dataclass(frozen=True)
class RunRecord:
    """An orchestrator run as MLflow records it."""

    tracking_uri: str
    run_id: str
    run_name: str
    experiment_id: str
    backend: str
    checkpoint_dir: str
    mlflow_status: str
    job_id: str
    address: str

    @property
    def state(self) -> JobState:
        return JobState.from_mlflow(self.mlflow_status)

    @classmethod
    def of(cls, tracking_uri: str, run) -> RunRecord:
        tags = run.data.tags
        return cls(
            tracking_uri=tracking_uri,
            run_id=run.info.run_id,
            run_name=run.info.run_name or "",
            experiment_id=run.info.experiment_id,
            backend=tags.get(BACKEND_TAG, ""),
            checkpoint_dir=tags.get(CHECKPOINT_DIR_TAG, ""),
            mlflow_status=run.info.status,
            job_id=tags.get(JOB_ID_TAG, ""),
            address=tags.get(ADDRESS_TAG, ""),
        )


def get_run(tracking_uri: str, run_id: str):
    """The MLflow run with this id, or a NotFoundError that says where we looked."""
    from mlflow.exceptions import MlflowException

    from orchestrator.track.mlflow_run import client

    _require_store(tracking_uri)
    try:
        return client(tracking_uri).get_run(run_id)
    except MlflowException as exc:
        raise NotFoundError(
            f"no MLflow run {run_id} in {tracking_uri} ({exc.message}); check the run id printed by "
            "submit, and --tracking-uri if the run was tracked elsewhere"
        ) from None


def find_run(tracking_uri: str, run_ref: str):
    """The MLflow run with this id, or the one run with this name."""
    from mlflow.exceptions import MlflowException

    from orchestrator.track.mlflow_run import client

    _require_store(tracking_uri)
    mlflow = client(tracking_uri)
    if _RUN_ID.match(run_ref):
        try:
            return mlflow.get_run(run_ref)
        except MlflowException:
            pass  # maybe a run *named* like an id
    escaped = run_ref.replace("\\", "\\\\").replace("'", "\\'")
    runs = _search(mlflow, f"attributes.run_name = '{escaped}'")
    if len(runs) == 1:
        return runs[0]
    if not runs:
        raise NotFoundError(
            f"no MLflow run with id or name {run_ref!r} in {tracking_uri}; check the name printed by "
            "submit, and --tracking-uri if the run was tracked elsewhere"
        )
    ids = ", ".join(r.info.run_id for r in runs)
    raise NotFoundError(f"{len(runs)} runs are named {run_ref!r} ({ids}); pass the MLflow run id instead")


def find_record(tracking_uri: str, run_ref: str) -> RunRecord:
    return RunRecord.of(tracking_uri, find_run(tracking_uri, run_ref))


def is_sweep_parent(run) -> bool:
    """Whether an MLflow run is the parent run of a sweep."""
    return SWEEP_TAG in run.data.tags


def child_runs(tracking_uri: str, parent_run_id: str) -> list:
    """The runs whose parent is this run (a sweep's trials), oldest first."""
    from orchestrator.track.mlflow_run import client

    mlflow = client(tracking_uri)
    parent = get_run(tracking_uri, parent_run_id)
    runs = mlflow.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`{PARENT_RUN_TAG}` = '{parent_run_id}'",
        order_by=["attributes.start_time ASC"],
        max_results=10000,
    )
    return list(runs)


def list_records(tracking_uri: str) -> list[RunRecord]:
    """Every run this orchestrator started in the tracking store, newest first."""
    from orchestrator.track.mlflow_run import client

    _require_store(tracking_uri)
    runs = _search(client(tracking_uri), f"tags.`{BACKEND_TAG}` != ''")
    return [RunRecord.of(tracking_uri, run) for run in runs]


def _search(mlflow, filter_string: str) -> list:
    experiments = [e.experiment_id for e in mlflow.search_experiments()]
    return mlflow.search_runs(experiments, filter_string=filter_string) if experiments else []


def run_checkpoint_dir(run) -> str:
    try:
        return run.data.tags[CHECKPOINT_DIR_TAG]
    except KeyError:
        raise NotFoundError(
            f"MLflow run {run.info.run_id} has no {CHECKPOINT_DIR_TAG} tag: it was not started by this "
            "orchestrator; pass --out DIR to choose where the report goes"
        ) from None


def read_stored_spec(tracking_uri: str, run_id: str) -> str:
    """The resolved spec a run stored when it was created (secrets as references)."""
    from orchestrator.track.mlflow_run import client

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client(tracking_uri).download_artifacts(run_id, SPEC_ARTIFACT, tmp)
        except Exception as exc:  # MLflow raises several types for a missing artifact
            raise NotFoundError(
                f"MLflow run {run_id} holds no {SPEC_ARTIFACT} artifact ({first_line(exc)}); "
                "it was not started by this orchestrator"
            ) from None
        return Path(path).read_text()


def set_tags(tracking_uri: str, run_id: str, tags: dict[str, str]) -> None:
    from orchestrator.track.mlflow_run import client

    mlflow = client(tracking_uri)
    for key, value in tags.items():
        mlflow.set_tag(run_id, key, value)


def _require_store(tracking_uri: str) -> None:
    """A sqlite store that does not exist is named, not created empty by MLflow."""
    path = tracking_uri.removeprefix("sqlite:///")
    if tracking_uri.startswith("sqlite:///") and not os.path.exists(path):
        raise NotFoundError(
            f"no MLflow store at {path}; run this where you ran submit, or pass --tracking-uri"
        )


__all__ = [
    "RUN_STATUSES",
    "JobHandle",
    "JobState",
    "RunRecord",
    "child_runs",
    "find_record",
    "find_run",
    "get_run",
    "is_sweep_parent",
    "list_records",
    "read_stored_spec",
    "run_checkpoint_dir",
]
