"""A run as a Ray job, submitted through the Jobs API of a running cluster (its dashboard address).

The job's runtime environment carries a working dir with the run ticket (``run.json``: the resolved
spec with secrets as references, and the run's identity) and this project's own packages, so the
cluster runs the submitter's code even where it is not installed. On the cluster the job's driver is
``launchers.job_entry``: it plans the run there (secrets from the cluster's environment), runs the
same Ray Train code as ``ray-local`` against ``address="auto"`` and finishes the MLflow run through the
same lifecycle as a foreground run.

Token authentication: the token is sent as ``Authorization: Bearer <token>``, read from
``RAY_AUTH_TOKEN``, else the file named by ``RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token`` (the
places Ray's own clients look). It is never written into the spec, the job or MLflow. A dashboard
behind a proxy with basic authentication (``http://me:${env:PROXY_PASSWORD}@host``): the URL's
credentials go to the proxy in ``Authorization`` and the token in ``X-Ray-Authorization``, the header
Ray reads when a proxy stands in front of it. The address is stored (MLflow tag) as written, with
its references, and resolved again from the environment of whoever reads it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from orchestrator.errors import LaunchError
from orchestrator.lifecycle import RunTicket
from orchestrator.masking import mask_uri_passwords
from orchestrator.plan import Plan
from orchestrator.spec import RunSpec, resolve_references
from orchestrator.text import first_line
from orchestrator.track.runs import ADDRESS_TAG, JOB_ID_TAG, JobHandle, JobState, RunRecord

RUN_ID_KEY = "orchestrator_run_id"  # job metadata: which MLflow run a job belongs to
TICKET_FILE = "run.json"
_PACKAGES = ("orchestrator", "launchers")


def read_auth_token() -> str | None:
    token = os.environ.get("RAY_AUTH_TOKEN")
    if token:
        return token.strip()
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def job_id_for(run_id: str) -> str:
    # One MLflow run may be submitted more than once (submit --resume): each job gets its own id.
    return f"orchestrator-{run_id}-{time.strftime('%Y%m%d%H%M%S')}"


class RayJobLauncher:
    """Detached: ``submit`` returns once the cluster accepted the job (state PENDING)."""

    name = "ray-job"
    detached = True

    def __init__(self, address: str, token: str | None = None, address_as_written: str | None = None):
        self.address = address
        self._address_as_written = address_as_written or address  # `${env:...}` kept: stored in tags
        self._client = _connect(
            address, token if token is not None else read_auth_token(), self._address_as_written
        )

    @classmethod
    def for_spec(cls, spec: RunSpec) -> RayJobLauncher:
        return cls(spec.cluster.address, address_as_written=spec.public_dump()["cluster"]["address"])

    @classmethod
    def for_record(cls, record: RunRecord) -> RayJobLauncher:
        if not record.address:
            raise LaunchError(f"run {record.run_id} has no {ADDRESS_TAG} tag: it was not submitted as a job")
        return cls(resolve_references(record.address), address_as_written=record.address)

    def prepares_here(self, spec: RunSpec) -> bool:
        return True

    def piece_runner(self, spec: RunSpec):
        """The job reads prepared data: it is prepared here first, on an embedded Ray, into
        data.prepared (which the cluster must reach)."""
        from launchers.ray_tasks import task_runner

        return task_runner(spec)

    def job_tags(self, handle: JobHandle) -> dict[str, str]:
        return {JOB_ID_TAG: handle.job_id, ADDRESS_TAG: self._address_as_written}

    def submit(self, plan: Plan) -> JobHandle:
        with tempfile.TemporaryDirectory(prefix="orchestrator-job-") as bundle:
            _write_bundle(plan, Path(bundle))
            job_id = self._client.submit_job(
                entrypoint=f"python -m launchers.job_entry {TICKET_FILE}",
                submission_id=job_id_for(plan.run_id),
                runtime_env={"working_dir": bundle},
                metadata={
                    RUN_ID_KEY: plan.run_id,
                    "orchestrator_run_name": plan.spec.with_references(plan.run_name),
                },
                entrypoint_num_cpus=0,  # the driver only waits; the workers need the CPUs
            )
        return JobHandle(self.name, plan.run_id, JobState.PENDING, job_id=job_id)

    def status(self, job_id: str) -> JobHandle:
        return _handle(self.name, self._info(job_id))

    def logs(self, job_id: str, follow: bool = False) -> Iterator[str]:
        """The job's output so far; with ``follow``, then everything new until the job ends."""
        shown = 0
        while True:
            final = self.status(job_id).state.is_final  # read before the logs: nothing is missed
            text = self._client.get_job_logs(job_id)
            yield from text[shown:].splitlines(keepends=True)
            shown = len(text)
            if not follow or final:
                return
            time.sleep(1.0)

    def cancel(self, job_id: str, wait_s: float = 60.0) -> JobHandle:
        self._info(job_id)  # a clear error for an unknown id
        self._client.stop_job(job_id)
        deadline = time.monotonic() + wait_s
        handle = self.status(job_id)
        while not handle.state.is_final and time.monotonic() < deadline:
            time.sleep(0.5)
            handle = self.status(job_id)
        return handle

    def list(self) -> list[JobHandle]:
        jobs = [j for j in self._client.list_jobs() if RUN_ID_KEY in (j.metadata or {})]
        return [_handle(self.name, j) for j in sorted(jobs, key=lambda j: j.start_time or 0)]

    def _info(self, job_id: str):
        try:
            return self._client.get_job_info(job_id)
        except RuntimeError as exc:
            reason = _shown(first_line(exc), self.address, self._address_as_written)
            raise LaunchError(
                f"no job {job_id} on the cluster at {self._address_as_written}: {reason}"
            ) from None


def _connect(address: str, token: str | None, address_as_written: str):
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    # With credentials in the URL, `Authorization` carries them (to the proxy); Ray then reads its
    # token from `X-Ray-Authorization`.
    header = "X-Ray-Authorization" if urlsplit(address).password else "Authorization"
    headers = {header: f"Bearer {token}"} if token else None
    try:
        return JobSubmissionClient(address, headers=headers)
    except (ConnectionError, RuntimeError, AuthenticationError) as exc:
        hint = (
            "the cluster refused the token: check RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH / ~/.ray/auth_token"
            if token
            else "no Ray auth token found: set RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH, or run "
            "`ray get-auth-token` on the head node and save it to ~/.ray/auth_token"
        )
        if not isinstance(exc, AuthenticationError) and "nauthorized" not in str(exc):
            hint = "is the cluster running and its dashboard at this address?"
        reason = _shown(first_line(exc), address, address_as_written)
        raise LaunchError(f"the Ray Jobs API at {address_as_written}: {reason}; {hint}") from None


def _shown(text: str, address: str, address_as_written: str) -> str:
    """An error of Ray's client, which quotes the URL it was given, as the user wrote that URL."""
    return mask_uri_passwords(text.replace(address, address_as_written))


def _write_bundle(plan: Plan, bundle: Path) -> None:
    (bundle / TICKET_FILE).write_text(RunTicket.of(plan, cwd=os.getcwd()).to_json())
    for package in _PACKAGES:
        source = Path(__import__(package).__file__).parent
        shutil.copytree(source, bundle / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def _handle(backend: str, info) -> JobHandle:
    # Ray's JobStatus values (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED) are the project's job states.
    state = JobState(str(getattr(info.status, "value", info.status)))
    return JobHandle(
        backend,
        (info.metadata or {}).get(RUN_ID_KEY, ""),
        state,
        error=info.message if state is JobState.FAILED else None,
        job_id=info.submission_id or info.job_id or "",
    )
