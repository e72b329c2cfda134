"""The launcher protocol, the job states and the handle every launcher returns.

A launcher turns a Plan into running workers somewhere and answers for the job afterwards:

    launcher = get_launcher("ray-job", address="http://127.0.0.1:8265")
    handle = launcher.submit(plan)          # JobHandle(state=PENDING, job_id=...)
    launcher.status(handle.job_id)          # JobHandle(state=RUNNING, ...)
    for line in launcher.logs(handle.job_id, follow=True): ...
    launcher.cancel(handle.job_id)          # JobHandle(state=STOPPED, ...)
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from orchestrator.plan import Plan


class JobState(enum.Enum):
    PENDING = "PENDING"  # accepted, waiting for resources or for its driver to start
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    STOPPED = "STOPPED"  # cancelled by a user

    @property
    def is_final(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.STOPPED)

    @property
    def mlflow_status(self) -> str:
        return {"SUCCEEDED": "FINISHED", "FAILED": "FAILED", "STOPPED": "KILLED"}.get(self.value, "RUNNING")


@dataclass(frozen=True)
class JobHandle:
    backend: str
    run_id: str
    state: JobState
    error: str | None = None
    job_id: str = ""  # the backend's own id (a Ray job submission id); empty for a foreground run
    post_mortem: str | None = None  # path of the post-mortem file of a failed run


class LauncherError(Exception):
    """The backend could not be reached or refused the request (with what to do about it)."""


class Launcher(Protocol):
    name: str

    def submit(self, plan: Plan) -> JobHandle:
        """Start the job. A foreground launcher returns a handle in a final state."""
        ...

    def status(self, job_id: str) -> JobHandle: ...

    def logs(self, job_id: str, follow: bool = False) -> Iterator[str]: ...

    def cancel(self, job_id: str) -> JobHandle: ...

    def list(self) -> list[JobHandle]: ...


def get_launcher(backend: str, address: str | None = None) -> Launcher:
    if backend == "ray-local":
        from launchers.ray_local import RayLocalLauncher

        return RayLocalLauncher()
    if backend == "ray-job":
        from launchers.ray_job import RayJobLauncher

        if not address:
            raise LauncherError("backend ray-job needs the cluster's dashboard address")
        return RayJobLauncher(address)
    raise ValueError(f"unknown backend {backend!r}; known: ray-local, ray-job")
