"""The run ticket: what a driver on a cluster needs to run a run the submitter created.

The Ray Jobs API ships it in the job's working dir, a KubeRay RayJob in a ConfigMap (``run.json``).
It holds the resolved spec as text with secrets still ``${env:NAME}`` references, and so do the
tracking URI, the run name and the directory, so no secret travels with the job: the cluster
resolves them from its own environment. The driver plans again on
the cluster (the data are prepared where they are used) with the submitter's run identity.

    {"spec": "name: quickstart\\n...", "run_id": "3f2c...", "run_name": "quickstart-2025...",
     "checkpoint_dir": "/checkpoints/quickstart-2025...", "tracking_uri": "http://mlflow:5000",
     "cwd": "/home/me/project"}
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from orchestrator.errors import UsageError
from orchestrator.plan import Plan, build_plan
from orchestrator.plan.identity import RunIdentity
from orchestrator.spec import parse_spec, resolve_references
from orchestrator.track.runs import SPEC_ARTIFACT, write_run_record


@dataclass(frozen=True)
class RunTicket:
    spec: str  # resolved spec YAML, secrets as references
    run_id: str
    run_name: str
    checkpoint_dir: str
    tracking_uri: str
    cwd: str | None = None  # where relative paths of the spec (data files) are resolved
    checkpoint_uri: str | None = None  # where its checkpoints are, when not checkpoint_dir
    data_estimated: bool = False  # the submitter did not prepare the data: this driver does

    @classmethod
    def of(cls, plan: Plan, cwd: str | None = None) -> RunTicket:
        as_written = plan.spec.with_references  # a secret the plan resolved goes back to its reference
        return cls(
            plan.spec_text,
            plan.run_id,
            as_written(plan.run_name),
            as_written(plan.checkpoint_dir),
            as_written(plan.tracking_uri),
            cwd,
            as_written(plan.checkpoint_uri),
            plan.data.estimated,
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def read(cls, path: str | Path) -> RunTicket:
        try:
            return cls(**json.loads(Path(path).read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise UsageError(f"{path}: not a run ticket ({exc})") from None


def identity_from_ticket(ticket: RunTicket) -> RunIdentity:
    """The submitter's run, as the driver on the cluster sees it (secrets from this environment)."""
    run_dir = resolve_references(ticket.checkpoint_dir)
    return RunIdentity(
        name=resolve_references(ticket.run_name),
        run_dir=run_dir,
        checkpoint_uri=resolve_references(ticket.checkpoint_uri) if ticket.checkpoint_uri else run_dir,
        tracking_uri=resolve_references(ticket.tracking_uri),
        run_id=ticket.run_id,
        local_run_dir=True,  # here, on the cluster, the run's directory is at hand
    )


def plan_from_ticket(ticket: RunTicket, runner=None) -> Plan:
    """The run's plan on this machine: the ticket's spec (secrets from this environment), its data
    (prepared here with ``runner`` if the submitter's is not reachable), the submitter's run."""
    from orchestrator.lifecycle.data import prepare_data

    spec = parse_spec(ticket.spec, f"{SPEC_ARTIFACT} of run {ticket.run_name}")
    cwd = Path(ticket.cwd) if ticket.cwd and Path(ticket.cwd).is_dir() else None
    plan = build_plan(spec, prepare_data(spec, cwd, runner), identity_from_ticket(ticket), cwd)
    if ticket.data_estimated:  # the submitter had only an estimate: the data was prepared here
        from orchestrator.track.mlflow_run import log_dataset

        log_dataset(plan)
    Path(plan.checkpoint_dir).mkdir(parents=True, exist_ok=True)
    write_run_record(plan.checkpoint_dir, plan.run_id)
    return plan
