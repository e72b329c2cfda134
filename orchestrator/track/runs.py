"""The run vocabulary shared by every part that talks about runs: MLflow tag names, run statuses and
how they map to job states, the job handle a launcher returns, the run record, and finding a run by
MLflow run id or run name. Nothing else spells these literals.

>>> JobState.STOPPED.mlflow_status, JobState.from_mlflow("FINISHED")
('KILLED', <JobState.SUCCEEDED: 'SUCCEEDED'>)
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import NotFoundError, OrchestratorError, TrackingError
from orchestrator.fsutil import atomic_write
from orchestrator.masking import mask_uri_passwords
from orchestrator.text import first_line

# Tags the orchestrator sets on every run it creates.
CHECKPOINT_DIR_TAG = "orchestrator.checkpoint_dir"  # where the run's files are (absolute path)
CHECKPOINT_URI_TAG = "orchestrator.checkpoint_uri"  # where its checkpoints are (a path or s3:// prefix)
DATASET_TAG = "orchestrator.dataset"  # the prepared dataset's manifest digest
SPEC_SHA256_TAG = "orchestrator.spec_sha256"  # hash of the stored resolved spec.yaml
BACKEND_TAG = "orchestrator.backend"
WORLD_SIZE_TAG = "orchestrator.world_size"
GIT_COMMIT_TAG = "orchestrator.git_commit"
MLFLOW_GIT_COMMIT_TAG = "mlflow.source.git.commit"  # MLflow's own: its UI shows it
# Set later in a run's life.
JOB_ID_TAG = "orchestrator.job_id"  # a detached backend's job (a Ray job submission id, a RayJob)
ADDRESS_TAG = "orchestrator.address"  # where that job runs (no credentials)
STOP_REASON_TAG = "orchestrator.stop_reason"  # why training ended before its last step
ERROR_TAG = "orchestrator.error"  # why a run ended FAILED (its first lines)
RESUME_OVERRIDES_TAG = "orchestrator.resume_overrides"  # `--set` values applied by the last resume
# On experiments: MLflow 3's UI kind of experiment (model training, not GenAI traces)
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
SPEC_ARTIFACT = "spec.yaml"  # the resolved spec, secrets as references
RUN_RECORD_FILE = ".orchestrator-run.json"  # in the run's directory: {"run_id": ...}
FINAL_STATUS_FILE = "tracking-status.json"  # beside it when the job ended: {"run_id", "status", "reason"}
# Sweeps: one parent run holds the sweep; each trial is a child run (MLflow's own parent tag, which
# its UI nests by).
PARENT_RUN_TAG = "mlflow.parentRunId"
SWEEP_TAG = "orchestrator.sweep"  # on a sweep's parent run: the number of trials it plans
TRIAL_ID_TAG = "orchestrator.trial_id"  # on a trial's run: Ray Tune's trial id
TRIAL_PARAMS_TAG = "orchestrator.trial_params"  # on a trial's run: {dotted path: value} as JSON
BEST_TRIAL_TAG = "orchestrator.best_trial"  # on the parent: the best trial's run id
BEST_PARAMS_TAG = "orchestrator.best_params"  # on the parent: its {dotted path: value} as JSON

# MLflow's run statuses: the final ones, and those of a run in progress
FINISHED_STATUS, FAILED_STATUS, KILLED_STATUS = "FINISHED", "FAILED", "KILLED"
RUN_STATUSES = (FINISHED_STATUS, FAILED_STATUS, KILLED_STATUS)
RUNNING_STATUS, SCHEDULED_STATUS = "RUNNING", "SCHEDULED"
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
        return _TO_MLFLOW.get(self, RUNNING_STATUS)

    @classmethod
    def from_mlflow(cls, status: str) -> JobState:
        return _FROM_MLFLOW.get(status, cls.RUNNING)


_TO_MLFLOW = {
    JobState.SUCCEEDED: FINISHED_STATUS,
    JobState.FAILED: FAILED_STATUS,
    JobState.STOPPED: KILLED_STATUS,
}
_FROM_MLFLOW = {
    RUNNING_STATUS: JobState.RUNNING,
    SCHEDULED_STATUS: JobState.PENDING,
    FINISHED_STATUS: JobState.SUCCEEDED,
    FAILED_STATUS: JobState.FAILED,
    KILLED_STATUS: JobState.STOPPED,
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
    checkpoint_uri: str
    job_id: str
    address: str
    spec_sha256: str = ""  # the hash of the spec.yaml the run stored (empty: runs from before it)

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
            checkpoint_uri=tags.get(CHECKPOINT_URI_TAG, tags.get(CHECKPOINT_DIR_TAG, "")),
            job_id=tags.get(JOB_ID_TAG, ""),
            address=tags.get(ADDRESS_TAG, ""),
            spec_sha256=tags.get(SPEC_SHA256_TAG, ""),
        )


def get_run(tracking_uri: str, run_id: str):
    """The MLflow run with this id, or a NotFoundError that says where we looked (a TrackingError
    when the store itself cannot be used)."""
    run = _run_by_id(tracking_uri, run_id)
    if run is None:
        raise NotFoundError(
            f"no MLflow run {run_id} in {mask_uri_passwords(tracking_uri)}; check the run id printed "
            "by submit, and --tracking-uri if the run was tracked elsewhere"
        )
    return run


def find_run(tracking_uri: str, run_ref: str):
    """The MLflow run with this id, or the one run with this name."""
    from orchestrator.track.mlflow_run import client

    require_store(tracking_uri)
    run = _run_by_id(tracking_uri, run_ref) if _RUN_ID.match(run_ref) else None
    if run is not None:
        return run  # else maybe a run *named* like an id
    escaped = run_ref.replace("\\", "\\\\").replace("'", "\\'")
    with store_errors(tracking_uri):
        runs = _search(client(tracking_uri), f"attributes.run_name = '{escaped}'")
    if len(runs) == 1:
        return runs[0]
    if not runs:
        raise NotFoundError(
            f"no MLflow run with id or name {run_ref!r} in {mask_uri_passwords(tracking_uri)}; check "
            "the name printed by submit, and --tracking-uri if the run was tracked elsewhere"
        )
    ids = ", ".join(r.info.run_id for r in runs)
    raise NotFoundError(f"{len(runs)} runs are named {run_ref!r} ({ids}); pass the MLflow run id instead")


def _run_by_id(tracking_uri: str, run_id: str):
    """The run, or None when the store has no run with this id (or the id is malformed)."""
    from mlflow.exceptions import MlflowException

    from orchestrator.track.mlflow_run import client

    require_store(tracking_uri)
    try:
        with store_errors(tracking_uri, unless=MlflowException):
            return client(tracking_uri).get_run(run_id)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "BAD_REQUEST"):
            return None
        raise store_failure(exc, tracking_uri) from None


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

    require_store(tracking_uri)
    with store_errors(tracking_uri):
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


def write_run_record(run_dir: str | Path, run_id: str) -> None:
    """Mark a run's directory as this run's: what `report` checks before writing into a directory
    an MLflow tag names."""
    payload = json.dumps({"run_id": run_id}).encode()
    atomic_write(Path(run_dir) / RUN_RECORD_FILE, payload)


def holds_run(run_dir: str | Path, run_id: str) -> bool:
    """Whether the directory is that run's: its record, or its final status (runs from before
    the record was written)."""
    for name in (RUN_RECORD_FILE, FINAL_STATUS_FILE):
        try:
            record = json.loads((Path(run_dir) / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and record.get("run_id") == run_id:
            return True
    return False


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
        try:
            return Path(path).read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise TrackingError(
                f"the {SPEC_ARTIFACT} artifact of MLflow run {run_id} cannot be read as text "
                f"({first_line(exc)}): it was damaged or edited; hint: restore it as the run stored it"
            ) from None


def set_tags(tracking_uri: str, run_id: str, tags: dict[str, str]) -> None:
    from orchestrator.track.mlflow_run import client

    mlflow = client(tracking_uri)
    for key, value in tags.items():
        mlflow.set_tag(run_id, key, value)


def require_store(tracking_uri: str) -> None:
    """A sqlite store that does not exist is named, not created empty by MLflow; a file that is not
    a SQLite database is named too, before SQLAlchemy fails on it. Every command that only reads a
    store (or continues a run it holds) checks this first."""
    if not tracking_uri.startswith("sqlite:///"):
        return
    path = tracking_uri.removeprefix("sqlite:///")
    if not os.path.exists(path):
        raise NotFoundError(
            f"no MLflow store at {path}; run this where you ran submit, or pass --tracking-uri"
        )
    try:
        with open(path, "rb") as handle:
            header = handle.read(len(_SQLITE_HEADER))
    except OSError as exc:
        raise TrackingError(f"cannot read the MLflow store {path} ({exc.strerror})") from None
    if header != _SQLITE_HEADER:
        raise TrackingError(
            f"{path} is not an SQLite database, so not an MLflow store; hint: pass --tracking-uri, or "
            "restore the file from a backup"
        )


_SQLITE_HEADER = b"SQLite format 3\x00"


@contextlib.contextmanager
def store_errors(tracking_uri: str, unless: type[BaseException] | tuple = ()) -> Iterator[None]:
    """MLflow's, SQLAlchemy's and the HTTP client's errors (a damaged database, a server that does
    not answer) as a TrackingError naming the store; ``unless``: errors the caller handles itself."""
    try:
        yield
    except OrchestratorError:
        raise
    except Exception as exc:
        if isinstance(exc, unless) or not is_store_error(exc):
            raise
        raise store_failure(exc, tracking_uri) from None


def is_store_error(exc: BaseException, http: bool = True) -> bool:
    """An error raised by MLflow or what it stands on, by the module that defines it (``http``:
    the HTTP client's too, which only a call to the store can have raised)."""
    roots = ("mlflow", "sqlalchemy", "sqlite3", "alembic", *(("requests", "urllib3") if http else ()))
    return any(cls.__module__.split(".")[0] in roots for cls in type(exc).__mro__)


def store_failure(exc: BaseException, tracking_uri: str | None = None) -> TrackingError:
    """The error a person reads for a store error (its URI without a password)."""
    where = f" at {mask_uri_passwords(tracking_uri)}" if tracking_uri else ""
    return TrackingError(
        f"the MLflow store{where} cannot be used: "
        f"{mask_uri_passwords(first_line(exc))}; hint: check --tracking-uri (a server must be up, a "
        "sqlite file an undamaged MLflow database)"
    )


__all__ = [
    "FAILED_STATUS",
    "FINISHED_STATUS",
    "KILLED_STATUS",
    "RUNNING_STATUS",
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
    "require_store",
    "run_checkpoint_dir",
]
