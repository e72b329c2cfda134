"""The launcher protocol and the job handle it returns."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from orchestrator.plan import Plan


class JobState(enum.Enum):
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"

    @property
    def mlflow_status(self) -> str:
        return {"SUCCEEDED": "FINISHED", "FAILED": "FAILED"}.get(self.value, "RUNNING")


@dataclass(frozen=True)
class JobHandle:
    backend: str
    run_id: str
    state: JobState
    error: str | None = None


class Launcher(Protocol):
    name: str

    def submit(self, plan: Plan) -> JobHandle:
        """Start the job. Blocking launchers return a handle in a final state."""
        ...


def get_launcher(backend: str) -> Launcher:
    if backend == "ray-local":
        from launchers.ray_local import RayLocalLauncher

        return RayLocalLauncher()
    raise ValueError(f"unknown backend {backend!r}; known: ray-local")
