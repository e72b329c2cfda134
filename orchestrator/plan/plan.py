"""RunSpec -> Plan: everything resolved before any worker starts.

The Plan is plain, picklable data: the launcher ships it to every worker unchanged. It carries the
resolved spec's text (file plus overrides, secrets as `${env:...}` references) and its hash: that text
is what the run stores as its ``spec.yaml``, and what a resume or a cluster-side driver loads again.

>>> from orchestrator.spec import parse_spec
>>> plan = build_plan(parse_spec("name: demo"))  # doctest: +SKIP
>>> print(plan.describe())  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from orchestrator.data.dataset import TokenDataset, prepare_dataset
from orchestrator.errors import NotRunnableHere, PlanError
from orchestrator.masking import mask_uri_passwords
from orchestrator.plan.deepspeed_config import build_deepspeed_config
from orchestrator.plan.memory import MemoryPlan, estimate_memory, gpu_memory_bytes, host_memory_per_worker
from orchestrator.spec import RunSpec


@dataclass(frozen=True)
class DataPlan:
    tokens_path: str
    tokenizer_path: str
    n_tokens: int
    train_blocks: int
    val_blocks: int


@dataclass(frozen=True)
class Plan:
    spec: RunSpec
    spec_text: str  # the resolved spec as YAML, secrets as references: the run's spec.yaml
    run_name: str
    checkpoint_dir: str
    tracking_uri: str
    experiment_name: str
    world_size: int
    deepspeed_config: dict[str, Any]
    data: DataPlan
    steps_per_epoch: int
    total_steps: int
    run_id: str = ""  # filled in once the MLflow run exists
    memory: MemoryPlan | None = None  # the preflight memory estimate per worker
    local_run_dir: bool = True  # False: checkpoint_dir is a path on the cluster (kubernetes)
    # A sweep trial: every evaluation also goes to `ray.train.report` (on to Ray Tune), never a step.
    report_to_ray: bool = False

    @property
    def spec_sha256(self) -> str:
        return hashlib.sha256(self.spec_text.encode()).hexdigest()

    @property
    def global_batch_size(self) -> int:
        return self.spec.global_batch_size

    @property
    def tokens_per_step(self) -> int:
        return self.spec.tokens_per_step

    def describe(self) -> str:
        """What `validate`, `plan` and `submit` print about the run (secrets masked)."""
        from orchestrator.plan.describe import describe_plan

        return self.spec.redact(describe_plan(self))


def build_plan(spec: RunSpec, cwd: Path | None = None) -> Plan:
    cwd = (cwd or Path.cwd()).resolve()
    check_local_gpus(spec)
    world = spec.cluster.num_workers
    prepared = _prepare_data(spec, cwd)
    dataset = TokenDataset(
        prepared.tokens_path,
        spec.model.context_length,
        spec.data.validation_fraction,
        spec.data.seed,
    )
    steps_per_epoch = _steps_per_epoch(spec, len(dataset.train_blocks))
    total = steps_per_epoch * spec.train.epochs
    if spec.train.max_steps is not None:
        total = min(total, spec.train.max_steps)
    root = checkpoint_root(spec, cwd)
    run_name = spec.tracking.run_name or _timestamped(spec.name, root)
    on_cluster = spec.cluster.backend == "kubernetes"  # the run's files live on the cluster's volume
    return Plan(
        spec=spec,
        spec_text=spec.resolved_text(),
        run_name=run_name,
        checkpoint_dir=f"{str(root).rstrip('/')}/{run_name}" if on_cluster else str(root / run_name),
        local_run_dir=not on_cluster,
        tracking_uri=resolve_tracking_uri(spec.tracking.uri, cwd),
        experiment_name=spec.tracking.experiment or spec.name,
        world_size=world,
        deepspeed_config=build_deepspeed_config(spec),
        data=DataPlan(
            tokens_path=str(prepared.tokens_path),
            tokenizer_path=str(prepared.tokenizer_path),
            n_tokens=prepared.n_tokens,
            train_blocks=len(dataset.train_blocks),
            val_blocks=len(dataset.val_blocks),
        ),
        steps_per_epoch=steps_per_epoch,
        total_steps=total,
        memory=estimate_memory(spec, world, _capacity_per_worker(spec)),
    )


def checkpoint_root(spec: RunSpec, cwd: Path) -> Path:
    """Where the spec's runs keep their directories: ``checkpoint.dir`` (from ``cwd``), or the
    checkpoint volume's mount path on a Kubernetes cluster."""
    if spec.cluster.backend == "kubernetes":
        return Path(spec.kubernetes.checkpoint_mount_path)
    return (cwd / spec.checkpoint.dir).resolve()


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


def _prepare_data(spec: RunSpec, cwd: Path):
    from orchestrator.data.corpus import read_files

    data = spec.data
    if data.corpus != "files":
        return prepare_dataset(data.corpus, spec.model.vocab_size)
    try:
        text = read_files(data.files, data.format, data.jsonl_field, cwd)
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # the message names the (resolved) paths
        raise NotRunnableHere(
            spec.redact(f"{exc}; hint: check data.files, data.format and data.jsonl_field")
        ) from None
    return prepare_dataset("files", spec.model.vocab_size, text=text)


def _steps_per_epoch(spec: RunSpec, train_blocks: int) -> int:
    per_step = spec.global_batch_size
    steps = train_blocks // per_step
    if steps < 1:
        raise PlanError(
            f"the training split has {train_blocks} sequences of {spec.model.context_length + 1} "
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


def _timestamped(name: str, parent: Path) -> str:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    candidate, n = f"{name}-{stamp}", 1
    while (parent / candidate).exists():
        n += 1
        candidate = f"{name}-{stamp}-{n}"
    return candidate


def plan_as_dict(plan: Plan) -> dict[str, Any]:
    """The plan as JSON-ready data; the spec part shows secrets as their references."""
    data = asdict(plan)
    data["spec"] = plan.spec.public_dump()
    data["tracking_uri"] = mask_uri_passwords(plan.tracking_uri)
    del data["spec_text"]  # the same spec, as YAML
    data["spec_sha256"] = plan.spec_sha256
    data["global_batch_size"] = plan.global_batch_size
    data["tokens_per_step"] = plan.tokens_per_step
    return data
