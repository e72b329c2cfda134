"""The launcher protocol and the registry that finds a launcher by its backend name.

A launcher turns a Plan into running workers somewhere and answers for the job afterwards:

    launcher = launcher_for_spec(spec)      # the class registered for spec.cluster.backend
    handle = launcher.submit(plan)          # JobHandle(state=PENDING, job_id=...) for a detached backend
    launcher.status(handle.job_id)          # JobHandle(state=RUNNING, ...)
    for line in launcher.logs(handle.job_id, follow=True): ...
    launcher.cancel(handle.job_id)          # JobHandle(state=STOPPED, ...)

Launchers register under the entry-point group ``gpt_orchestrator.launchers`` (see pyproject.toml), so
this module never imports an implementation and another package can add a backend.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Protocol

from orchestrator.errors import LaunchError, UsageError
from orchestrator.track.runs import JobHandle, JobState, RunRecord

if TYPE_CHECKING:
    from orchestrator.plan import Plan
    from orchestrator.spec import RunSpec

ENTRY_POINT_GROUP = "gpt_orchestrator.launchers"


class Launcher(Protocol):
    name: str
    detached: bool  # submit returns once the job is accepted (True) or when it has ended (False)

    @classmethod
    def for_spec(cls, spec: RunSpec) -> Launcher:
        """The launcher a spec's ``cluster`` (and backend section) asks for."""
        ...

    @classmethod
    def for_record(cls, record: RunRecord) -> Launcher:
        """The launcher that answers for a run already submitted (found from its MLflow tags)."""
        ...

    def submit(self, plan: Plan) -> JobHandle:
        """Start the job. A foreground launcher returns a handle in a final state."""
        ...

    def status(self, job_id: str) -> JobHandle: ...

    def logs(self, job_id: str, follow: bool = False) -> Iterator[str]: ...

    def cancel(self, job_id: str) -> JobHandle: ...

    def list(self) -> list[JobHandle]: ...

    def job_tags(self, handle: JobHandle) -> dict[str, str]:
        """MLflow tags that let ``for_record`` find the job again (nothing secret)."""
        ...

    def prepares_here(self, spec: RunSpec) -> bool:
        """Whether ``submit`` prepares the data before the job starts (else the job's driver does)."""
        ...

    def piece_runner(self, spec: RunSpec):
        """A context manager giving the runner (``orchestrator.data.prepare.Runner``) that prepares
        the spec's data: Ray tasks where the run's Ray is, or on this machine for a detached job."""
        ...


def backends() -> dict[str, str]:
    """Registered backend names and the classes that implement them (``module:Class``)."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def launcher_class(backend: str) -> type[Launcher]:
    found = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    if backend not in found:
        known = ", ".join(sorted(found)) or "none: is gpt-orchestrator installed (make install)?"
        raise UsageError(f"unknown backend {backend!r}; registered backends: {known}")
    return found[backend].load()


def launcher_for_spec(spec: RunSpec) -> Launcher:
    return launcher_class(spec.cluster.backend).for_spec(spec)


def launcher_for_record(record: RunRecord) -> Launcher:
    return launcher_class(record.backend or "ray-local").for_record(record)


__all__ = [
    "JobHandle",
    "JobState",
    "LaunchError",
    "Launcher",
    "backends",
    "launcher_class",
    "launcher_for_record",
    "launcher_for_spec",
]
