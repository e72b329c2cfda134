"""RunSpec -> Plan: everything resolved before any worker starts.

The Plan is plain, picklable data: the launcher ships it to every worker unchanged. It carries the
resolved spec's text (file plus overrides, secrets as `${env:...}` references) and its hash: that text
is what the run stores as its ``spec.yaml``, and what a resume or a cluster-side driver loads again.

>>> from orchestrator.spec import parse_spec
>>> plan = build_plan(parse_spec("name: demo"))  # doctest: +SKIP
>>> print(plan.describe())  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from orchestrator.errors import NotRunnableHere, PlanError
from orchestrator.masking import mask_uri_passwords
from orchestrator.plan.data import DataPlan
from orchestrator.plan.deepspeed_config import build_deepspeed_config
from orchestrator.plan.identity import RunIdentity, new_identity
from orchestrator.plan.memory import MemoryPlan, estimate_memory, gpu_memory_bytes, host_memory_per_worker
from orchestrator.spec import RunSpec


@dataclass(frozen=True)
class Plan:
    spec: RunSpec
    spec_text: str  # the resolved spec as YAML, secrets as references: the run's spec.yaml
    identity: RunIdentity
    experiment_name: str
    world_size: int
    deepspeed_config: dict[str, Any]
    data: DataPlan
    steps_per_epoch: int
    total_steps: int
    memory: MemoryPlan | None = None  # the preflight memory estimate per worker
    # A sweep trial: every evaluation also goes to `ray.train.report` (on to Ray Tune), never a step.
    report_to_ray: bool = False

    # Who the run is (see orchestrator.plan.identity), read through the plan.
    @property
    def run_name(self) -> str:
        return self.identity.name

    @property
    def checkpoint_dir(self) -> str:
        """The run's own directory (journal, logs, status, report; checkpoints too when local)."""
        return self.identity.run_dir

    @property
    def checkpoint_uri(self) -> str:
        """Where the run's checkpoints are: ``checkpoint_dir``, or an object-store prefix."""
        return self.identity.checkpoint_uri

    @property
    def tracking_uri(self) -> str:
        return self.identity.tracking_uri

    @property
    def run_id(self) -> str:
        return self.identity.run_id

    @property
    def local_run_dir(self) -> bool:
        return self.identity.local_run_dir

    def checkpoint_store(self):
        """The run's checkpoint location as a ``Store`` (the spec's storage settings, else the
        standard variables of this process)."""
        from orchestrator.storage.store import StoreSettings, open_store

        return open_store(self.checkpoint_uri, StoreSettings.from_env(self.spec.storage))

    def with_identity(self, identity: RunIdentity) -> Plan:
        return replace(self, identity=identity)

    def with_run_id(self, run_id: str) -> Plan:
        return replace(self, identity=self.identity.with_run_id(run_id))

    @property
    def spec_sha256(self) -> str:
        return hashlib.sha256(self.spec_text.encode()).hexdigest()

    @property
    def global_batch_size(self) -> int:
        return self.spec.global_batch_size

    @property
    def tokens_per_step(self) -> int:
        return self.spec.tokens_per_step

    @property
    def flops_per_token(self) -> float:
        """Training FLOPs per token of the model (``orchestrator.plan.flops``): the mfu metric's base."""
        from orchestrator.plan.flops import flops_per_token

        return flops_per_token(self.spec.model)

    def describe(self) -> str:
        """What `validate`, `plan` and `submit` print about the run (secrets masked)."""
        from orchestrator.plan.describe import describe_plan

        return self.spec.redact(describe_plan(self))


def build_plan(
    spec: RunSpec, data: DataPlan, identity: RunIdentity | None = None, cwd: Path | None = None
) -> Plan:
    """The plan of ``spec`` on ``data`` (a prepared dataset, or an estimate), for ``identity`` (a new
    run's when not given)."""
    cwd = (cwd or Path.cwd()).resolve()
    check_local_gpus(spec)
    steps_per_epoch = _steps_per_epoch(spec, data.train_samples)
    total = steps_per_epoch * spec.train.epochs
    if spec.train.max_steps is not None:
        total = min(total, spec.train.max_steps)
    if identity is None:
        identity = new_identity(spec, cwd, resolve_tracking_uri(spec.tracking.uri, cwd))
    return Plan(
        spec=spec,
        spec_text=spec.resolved_text(),
        identity=identity,
        experiment_name=spec.tracking.experiment or spec.name,
        world_size=spec.cluster.num_workers,
        deepspeed_config=build_deepspeed_config(spec),
        data=data,
        steps_per_epoch=steps_per_epoch,
        total_steps=total,
        memory=estimate_memory(spec, spec.cluster.num_workers, _capacity_per_worker(spec)),
    )


def check_local_gpus(spec: RunSpec) -> None:
    """An embedded Ray can only hand out GPUs this machine has; say so before anything starts."""
    cluster = spec.cluster
    if cluster.backend != "ray-local" or cluster.address or cluster.gpus_per_worker == 0:
        return  # a running cluster has its own GPUs; Ray itself reports what it cannot place
    if not list(Path("/dev").glob("nvidia[0-9]*")):
        raise NotRunnableHere(
            f"cluster.gpus_per_worker is {spec.cluster.gpus_per_worker:g}, but this machine has no "
            "NVIDIA GPU for the embedded Ray; hint: set cluster.gpus_per_worker: 0 (and "
            "deepspeed.precision: fp32 or bf16) to train on CPUs, or submit to a GPU cluster"
        )


def _capacity_per_worker(spec: RunSpec) -> int | None:
    """GPU memory when workers use GPUs; this host's RAM shared by its workers for a local launcher."""
    if spec.cluster.gpus_per_worker > 0:
        return gpu_memory_bytes()
    if spec.cluster.backend == "ray-local":
        return host_memory_per_worker(spec.cluster.num_workers)
    return None


def _steps_per_epoch(spec: RunSpec, train_samples: int) -> int:
    per_step = spec.global_batch_size
    steps = train_samples // per_step
    if steps < 1:
        raise PlanError(
            f"the training split has {train_samples} sequences of {spec.model.context_length + 1} "
            f"tokens, fewer than one global batch ({per_step}); hint: lower "
            "train.micro_batch_size, train.gradient_accumulation_steps or cluster.num_workers"
        )
    return steps


def tracking_uri_here(explicit: str | None = None) -> str:
    """The store a command means: ``explicit``, else MLFLOW_TRACKING_URI, else ./mlflow.db."""
    return resolve_tracking_uri(explicit or os.environ.get("MLFLOW_TRACKING_URI"), Path.cwd())


def resolve_tracking_uri(uri: str | None, cwd: Path) -> str:
    """Default to a sqlite store in the working directory; make relative sqlite paths absolute,
    because workers do not share the driver's working directory."""
    if uri is None:
        return f"sqlite:///{cwd / 'mlflow.db'}"
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return f"{prefix}{(cwd / uri.removeprefix(prefix)).resolve()}"
    return uri


def plan_as_dict(plan: Plan) -> dict[str, Any]:
    """The plan as JSON-ready data; the spec part shows secrets as their references."""
    data = asdict(plan)
    data["spec"] = plan.spec.public_dump()
    data.update(data.pop("identity"))
    data["tracking_uri"] = mask_uri_passwords(plan.tracking_uri)
    data["run_name"] = data.pop("name")
    del data["spec_text"]  # the same spec, as YAML
    data["spec_sha256"] = plan.spec_sha256
    data["global_batch_size"] = plan.global_batch_size
    data["tokens_per_step"] = plan.tokens_per_step
    return data
