"""A run spec as KubeRay manifests: the RayJob that brings up a Ray cluster and runs the job on it,
and the ConfigMap with the run ticket its driver reads. Plain dicts, no cluster needed.

    from launchers.kubernetes.render import RunIdentity, render_job
    rendered = render_job(spec, RunIdentity(run_id="9f1c...", run_name="quickstart-20250101-120000",
                                            spec_text=resolved_yaml))
    print(rendered.to_yaml())    # what `orchestrator k8s render SPEC` prints

What comes from where:

- the worker group from ``cluster``: one pod per ``kubernetes.workers_per_pod`` Ray Train workers,
  with their CPUs, GPUs (``nvidia.com/gpu``), custom Ray resources and Ray node labels; the head runs
  only the driver (``num-cpus``/``num-gpus`` 0);
- retries (``backoffLimit``) from ``cluster.max_failures``: each retry is a new Ray cluster whose
  driver resumes the same MLflow run from the latest complete checkpoint;
- namespace, image, Secrets, volumes, scheduling and time limits from ``kubernetes``;
- where checkpoints and prepared data live from ``locations`` (the object store by default).

What a shared GPU cluster needs, and schemas do not check: GPU workers tolerate the
``nvidia.com/gpu`` taint and ask for what they limit; the head and the submitter keep off GPU nodes
and see no GPU (``NVIDIA_VISIBLE_DEVICES=void``); memory is the memory plan times ``MEMORY_MARGIN``
plus ``/dev/shm`` per worker; node-local disk (``/scratch``, ``/cache``) is asked for as ephemeral
storage; a node's GPUs stay in one pod when the spec says how many a node has; a finished job's
workers go at once and its head soon after (KubeRay's ``deletionRules``).

The driver runs ``python -m launchers.job_entry /etc/orchestrator/run.json`` on the head; the
ticket holds the spec as the pods run it (secrets still as ``${env:NAME}``, the locations above), the
MLflow run and MLflow's in-cluster URI. Secrets reach the pods only through ``secretKeyRef`` (and
Kubernetes' ``$(NAME)`` expansion inside another variable); a ``${env:...}`` where no Secret can go
(the image, scheduling, names) is refused, and no resolved value is ever written into a manifest.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from launchers.kubernetes import quantities
from launchers.kubernetes.locations import CACHE_DIR, SCRATCH_DIR, PodLocations, pod_locations
from orchestrator.errors import PlanError
from orchestrator.spec import RunSpec

ENTRYPOINT_MODULE = "launchers.job_entry"
TICKET_DIR = "/etc/orchestrator"
TICKET_FILE = "run.json"
ENTRYPOINT = f"python -m {ENTRYPOINT_MODULE} {TICKET_DIR}/{TICKET_FILE}"
MAX_NAME = 47  # KubeRay refuses longer RayJob names (it derives the cluster's names from it)

MANAGED_BY = {"app.kubernetes.io/managed-by": "gpt-orchestrator"}
RUN_ID_LABEL = "gpt-orchestrator/run-id"
RUN_NAME_ANNOTATION = "gpt-orchestrator/run-name"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
# Every training pod (head, workers, submitter) carries these: the NetworkPolicies of k8s/ let
# exactly these pods reach the MLflow tracking server.
POD_LABELS = {"app.kubernetes.io/part-of": "gpt-orchestrator", "app.kubernetes.io/component": "training"}
MLFLOW_SECRET_KEYS = {"MLFLOW_TRACKING_USERNAME": "username", "MLFLOW_TRACKING_PASSWORD": "password"}
STORAGE_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")  # in kubernetes.storage_secret
STORAGE_OPTIONAL_KEYS = ("AWS_ENDPOINT_URL", "AWS_REGION")  # there too, when the store needs them
SETTINGS_CONFIGMAP = "gpt-orchestrator-settings"  # the overlay's: key training-image
IMAGE_KEY = "training-image"
RUN_AS = 1000  # the image's non-root user and group
HEAD_SHM_BYTES = 2**30
GIB = 2**30
# Host memory: the memory plan's estimators measured 1.5-3.5x low in places (DeepSpeed's own ones are
# lower bounds), and an OOMKill loses the run's progress since the last checkpoint: twice the plan.
MEMORY_MARGIN = 2.0
MIN_CPU_WORKER_MEMORY = 2 * GIB  # host memory of one Ray Train worker, at least
MIN_GPU_WORKER_MEMORY = 8 * GIB
# A CUDA worker's host side: the CUDA, cuDNN and NCCL libraries, the pinned staging buffers.
GPU_HOST_BASELINE = 3 * GIB
# Node-local disk for checkpoint shards: two checkpoints (one being written while the last uploads)
# of the pod's shards, times this.
DISK_MARGIN = 1.5
MIN_SCRATCH = 10 * GIB
HEAD_SCRATCH, HEAD_CACHE = "10Gi", "10Gi"  # the driver's run directory; it streams no training data
LOG_DISK = GIB  # container logs count against a pod's ephemeral storage
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
# GPU Feature Discovery labels GPU nodes; the head and the submitter go elsewhere.
OFF_GPU_NODES = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {
                    "matchExpressions": [
                        {"key": "nvidia.com/gpu.present", "operator": "NotIn", "values": ["true"]}
                    ]
                }
            ]
        }
    }
}
NO_GPU_ENV = {"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"}  # else the runtime may expose them all
_ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")
# Spec fields that reach a manifest as a value no Secret can supply (or a name, label or selector).
NO_REFERENCE_FIELDS = (
    "name",
    "tracking.run_name",
    "cluster.label_selector",
    "cluster.resources_per_worker",
    "kubernetes.",
)
REFERENCE_FIELDS = ("kubernetes.mlflow_uri",)  # inside kubernetes: become $(NAME) in an env value


@dataclass(frozen=True)
class RunIdentity:
    """Which run the job belongs to; the MLflow run exists before the job is rendered."""

    run_id: str
    run_name: str
    spec_text: str  # the resolved spec YAML; secrets stay ${env:NAME} references
    tracking_uri: str | None = None  # MLflow as the pods reach it; default: from spec.kubernetes
    attempt: int = 1  # submissions of this run so far (a resumed run gets a new RayJob name)
    image: str | None = None  # the namespace's training image, when spec.kubernetes.image is unset


@dataclass(frozen=True)
class WorkerSizing:
    """One Ray worker pod, and how many of them."""

    replicas: int
    workers_per_pod: int
    cpu: float
    gpus: int
    memory_bytes: int  # the container's memory, /dev/shm included (a RAM-backed emptyDir counts)
    shm_bytes: int
    scratch_bytes: int  # node-local disk for checkpoint shards and run directories
    custom: dict[str, float]


@dataclass(frozen=True)
class RenderedJob:
    rayjob: dict[str, Any]
    configmap: dict[str, Any]
    notes: tuple[str, ...] = ()  # what a person should know: defaults taken, what submit refuses

    @property
    def name(self) -> str:
        return self.rayjob["metadata"]["name"]

    @property
    def namespace(self) -> str:
        return self.rayjob["metadata"]["namespace"]

    def documents(self) -> list[dict[str, Any]]:
        """In the order `kubectl apply` should create them."""
        return [self.configmap, self.rayjob]

    def to_yaml(self) -> str:
        import yaml

        class Dumper(yaml.SafeDumper):
            pass

        def text(dumper, value: str):  # the spec and the ticket as readable blocks, not escaped lines
            style = "|" if "\n" in value else None
            return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

        Dumper.add_representer(str, text)
        return yaml.dump_all(self.documents(), Dumper=Dumper, sort_keys=False, width=100)


def render_job(spec: RunSpec, run: RunIdentity, strict: bool = True) -> RenderedJob:
    """The RayJob and its ConfigMap; PlanError (with a hint) when the spec cannot run on Kubernetes.
    ``strict=False`` (a preview) turns the locations no pod reaches into notes instead."""
    sizing = worker_sizing(spec)
    _check_references(spec)
    _check_env_references(spec, run.spec_text)
    where = pod_locations(spec, run.run_name)
    if where.problems and strict:
        raise PlanError("the run's data or checkpoints would not be reachable from its pods:\n  "
                        + "\n  ".join(where.problems))  # fmt: skip
    notes = [f"submit would refuse: {problem}" for problem in where.problems]
    if not (spec.kubernetes.image or run.image):
        notes.append(
            f"image: the namespace's ({SETTINGS_CONFIGMAP}, key {IMAGE_KEY}) at submit; shown: "
            f"{default_image(spec, run)}"
        )
    name = rayjob_name(run.run_name, run.run_id, run.attempt)
    configmap = _configmap(spec, run, name, where)
    rayjob = _rayjob(spec, run, name, sizing, configmap["metadata"]["name"])
    # Through JSON: plain data with no shared sub-objects (YAML would print those as anchors).
    rendered = RenderedJob(
        rayjob=json.loads(json.dumps(rayjob)), configmap=json.loads(json.dumps(configmap)), notes=tuple(notes)
    )
    _check_no_secret_value(spec, rendered)
    return rendered


def preview_identity(spec: RunSpec, spec_text: str) -> RunIdentity:
    """A stand-in run for showing the manifests before any MLflow run exists (`k8s render`)."""
    import datetime as dt

    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return RunIdentity(
        run_id="0" * 32, run_name=spec.tracking.run_name or f"{spec.name}-{stamp}", spec_text=spec_text
    )


def rayjob_name(run_name: str, run_id: str, attempt: int = 1) -> str:
    """A DNS-1035 name of at most 47 characters: the run name, shortened, then the run id's first
    8 characters (and ``-r<attempt>`` from the second submission on), so names stay unique."""
    suffix = "-" + re.sub(r"[^a-z0-9]", "", run_id.lower())[:8] + (f"-r{attempt}" if attempt > 1 else "")
    slug = re.sub(r"[^a-z0-9]+", "-", run_name.lower()).strip("-")
    if not slug[:1].isalpha():
        slug = f"run-{slug}".rstrip("-")
    return slug[: MAX_NAME - len(suffix)].rstrip("-") + suffix


def tracking_namespace(spec: RunSpec) -> str:
    return spec.kubernetes.tracking_namespace or f"{spec.kubernetes.namespace}-tracking"


def tracking_uri_in_cluster(spec: RunSpec) -> str:
    k8s = spec.kubernetes
    return k8s.mlflow_uri or f"http://mlflow.{tracking_namespace(spec)}.svc.cluster.local:5000"


def default_image(spec: RunSpec, run: RunIdentity | None = None) -> str:
    """The spec's image, else the namespace's (read at submit), else the README's local tag."""
    from orchestrator import __version__

    variant = "cuda" if spec.cluster.gpus_per_worker > 0 else "cpu"
    return spec.kubernetes.image or (run and run.image) or f"gpt-orchestrator:{__version__}-{variant}"


def run_ticket(spec: RunSpec, run: RunIdentity, where: PodLocations | None = None) -> dict[str, str]:
    """What the driver on the cluster reads from /etc/orchestrator/run.json: the spec as the pods run
    it (the kubernetes backend, the locations every pod reaches)."""
    where = where or pod_locations(spec, run.run_name)
    return {
        "spec": cluster_spec_text(run.spec_text, where),
        "run_id": run.run_id,
        "run_name": run.run_name,
        # the run's own files (journal, logs, status) on the pod's node-local disk; its checkpoints in
        # the store every pod and every later attempt reaches
        "checkpoint_dir": f"{where.local_dir.rstrip('/')}/{run.run_name}",
        "checkpoint_uri": f"{where.checkpoint_dir.rstrip('/')}/{run.run_name}",
        # a secret in the URI stays a reference: the driver resolves it from the pod's environment
        "tracking_uri": spec.with_references(run.tracking_uri or tracking_uri_in_cluster(spec)),
    }


def cluster_spec_text(spec_text: str, where: PodLocations) -> str:
    """The resolved spec with what the pods need instead of what only the submitting machine has."""
    import yaml

    data = yaml.safe_load(spec_text) or {}
    data.setdefault("cluster", {}).update(backend="kubernetes", address=None)
    data.setdefault("checkpoint", {}).update(dir=where.checkpoint_dir, local_dir=where.local_dir)
    data.setdefault("data", {})["prepared"] = where.prepared
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


# --- sizing -------------------------------------------------------------------------------------


def worker_sizing(spec: RunSpec) -> WorkerSizing:
    """The worker pods for ``cluster``; PlanError naming every reason it does not fit Kubernetes."""
    cluster, k8s = spec.cluster, spec.kubernetes
    per_pod, problems = _workers_per_pod(spec)
    if cluster.num_workers % per_pod:
        fits = _largest_divisor(cluster.num_workers, per_pod)
        problems.append(
            f"kubernetes.workers_per_pod ({per_pod}) must divide cluster.num_workers "
            f"({cluster.num_workers}); hint: workers_per_pod: {fits}"
        )
    gpus = cluster.gpus_per_worker * per_pod
    if gpus != int(gpus):
        problems.append(
            f"a worker pod would need {gpus:g} GPUs, but Kubernetes allocates whole nvidia.com/gpu; "
            "hint: make cluster.gpus_per_worker x kubernetes.workers_per_pod a whole number"
        )
    if problems:
        raise PlanError("the spec cannot run on Kubernetes:\n  " + "\n  ".join(problems))
    shm = quantities.to_bytes(k8s.shm_size) * per_pod
    memory = _worker_memory_bytes(spec) * per_pod + shm
    sizing = WorkerSizing(
        replicas=cluster.num_workers // per_pod,
        workers_per_pod=per_pod,
        cpu=cluster.cpus_per_worker * per_pod,
        gpus=int(gpus),
        memory_bytes=memory,
        shm_bytes=shm,
        scratch_bytes=0,
        custom={name: amount * per_pod for name, amount in cluster.resources_per_worker.items()},
    )
    if k8s.scratch_size:
        scratch = quantities.to_bytes(k8s.scratch_size)
    else:
        scratch = max(
            MIN_SCRATCH, quantities.ceil_gib(2 * checkpoint_bytes_per_pod(spec, sizing) * DISK_MARGIN + GIB)
        )
    return WorkerSizing(**{**sizing.__dict__, "scratch_bytes": scratch})


def _workers_per_pod(spec: RunSpec) -> tuple[int, list[str]]:
    """The spec's workers_per_pod, else a node's worth of GPUs, else 1."""
    k8s, cluster = spec.kubernetes, spec.cluster
    if k8s.workers_per_pod is not None:
        return k8s.workers_per_pod, []
    if k8s.gpus_per_node is None or cluster.gpus_per_worker <= 0:
        return 1, []
    per_node = k8s.gpus_per_node / cluster.gpus_per_worker
    if per_node != int(per_node) or cluster.num_workers % int(per_node):
        return 1, [
            f"kubernetes.gpus_per_node ({k8s.gpus_per_node}) is not filled by whole pods of "
            f"{cluster.num_workers} workers with {cluster.gpus_per_worker:g} GPUs each; hint: make "
            "cluster.num_workers x gpus_per_worker a multiple of gpus_per_node, or set "
            "kubernetes.workers_per_pod"
        ]
    return int(per_node), []


def checkpoint_bytes_per_pod(spec: RunSpec, sizing: WorkerSizing) -> int:
    """What one checkpoint writes on one pod: the fp32 master weights and Adam's two moments sharded
    over the workers (unsharded below ZeRO 1), and the model weights once."""
    from orchestrator.plan.memory import count_parameters

    params, _ = count_parameters(spec)
    weight_bytes = 4 if spec.deepspeed.precision == "fp32" else 2
    world = spec.cluster.num_workers if spec.deepspeed.zero_stage >= 1 else 1
    return int(params * 12 / world * sizing.workers_per_pod + params * weight_bytes)


def _worker_memory_bytes(spec: RunSpec) -> int:
    """Host memory of one Ray Train worker: the spec's, else the memory plan's host need times
    MEMORY_MARGIN (on a GPU: the CUDA host side and whatever is offloaded to the host)."""
    if spec.kubernetes.worker_memory:
        return quantities.to_bytes(spec.kubernetes.worker_memory)
    from orchestrator.plan.memory import estimate_memory

    plan = estimate_memory(spec, world_size=spec.cluster.num_workers)
    if plan.device == "cpu":
        return max(MIN_CPU_WORKER_MEMORY, quantities.ceil_gib(plan.per_worker_bytes * MEMORY_MARGIN))
    host = GPU_HOST_BASELINE + plan.offloaded_bytes
    return max(MIN_GPU_WORKER_MEMORY, quantities.ceil_gib(host * MEMORY_MARGIN))


def _largest_divisor(n: int, at_most: int) -> int:
    return max(d for d in range(1, at_most + 1) if n % d == 0)


def _check_env_references(spec: RunSpec, spec_text: str) -> None:
    provided = set(MLFLOW_SECRET_KEYS) | set(spec.kubernetes.secret_env) | set(_storage_references(spec))
    missing = sorted(set(_ENV_REF.findall(spec_text)) - provided)
    if missing:
        example = ", ".join(f"{name}: my-secret/{name.lower()}" for name in missing)
        raise PlanError(
            f"the spec refers to ${{env:{missing[0]}}}, which the pods would not have"
            f"{f' (nor {len(missing) - 1} more)' if len(missing) > 1 else ''}; "
            f"hint: kubernetes.secret_env: {{{example}}}"
        )


def _check_references(spec: RunSpec) -> None:
    """A ``${env:...}`` in a field that reaches a manifest as a plain value (the image, a selector, a
    name) would write the secret into the cluster's objects: refused, naming the field."""
    refused = sorted(
        path
        for path in spec._secret_refs
        if not path.startswith(REFERENCE_FIELDS)
        and any(path == field or path.startswith(field if field.endswith(".") else field + ".")
                for field in NO_REFERENCE_FIELDS)
    )  # fmt: skip
    if refused:
        raise PlanError(
            f"{refused[0]} holds an ${{env:...}} reference, but a Kubernetes object can only hold its "
            f"value there{f' (so do {len(refused) - 1} more fields)' if len(refused) > 1 else ''}; "
            "hint: write the value itself (it is no secret), or keep secrets to kubernetes.mlflow_uri, "
            "tracking.uri, storage and fields read inside the pods"
        )


def _check_no_secret_value(spec: RunSpec, rendered: RenderedJob) -> None:
    """The last guard: no resolved secret value in any rendered document."""
    text = json.dumps(rendered.documents())
    leaked = [name for name, value in spec._secret_env.items() if value and value in text]
    if leaked:
        raise PlanError(
            f"the value of ${{env:{leaked[0]}}} would be written into the manifests; hint: this is a "
            "bug in the renderer: keep the reference out of the spec until it is fixed"
        )


def _storage_references(spec: RunSpec) -> dict[str, str]:
    """NAME -> key of kubernetes.storage_secret, for the storage credentials written ${env:NAME}."""
    refs = {}
    for field, key in zip(
        ("storage.access_key_id", "storage.secret_access_key"), STORAGE_SECRET_KEYS, strict=True
    ):
        match = _ENV_REF.fullmatch(spec._secret_refs.get(field, ""))
        if match and match.group(1) not in (*spec.kubernetes.secret_env, *STORAGE_SECRET_KEYS):
            refs[match.group(1)] = key
    return refs


# --- manifests ----------------------------------------------------------------------------------


def _configmap(spec: RunSpec, run: RunIdentity, name: str, where: PodLocations) -> dict[str, Any]:
    ticket = run_ticket(spec, run, where)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(spec, run, f"{name}-run"),
        "immutable": True,
        "data": {TICKET_FILE: json.dumps(ticket, indent=2) + "\n", "spec.yaml": ticket["spec"]},
    }


def _metadata(spec: RunSpec, run: RunIdentity, name: str) -> dict[str, Any]:
    labels = {**MANAGED_BY, "app.kubernetes.io/part-of": "gpt-orchestrator", RUN_ID_LABEL: _label(run.run_id)}
    if spec.kubernetes.queue:
        labels[QUEUE_LABEL] = spec.kubernetes.queue
    return {
        "name": name,
        "namespace": spec.kubernetes.namespace,
        "labels": labels,
        "annotations": {RUN_NAME_ANNOTATION: run.run_name},
    }


def _rayjob(spec: RunSpec, run: RunIdentity, name: str, sizing: WorkerSizing, ticket: str) -> dict[str, Any]:
    k8s = spec.kubernetes
    body: dict[str, Any] = {
        "entrypoint": ENTRYPOINT,
        "submissionMode": "K8sJobMode",  # the submitter Job, and its log, outlive the Ray cluster
        "metadata": {"orchestrator_run_id": run.run_id, "orchestrator_run_name": run.run_name},
        **deletion_policy(spec),
        "preRunningDeadlineSeconds": k8s.pre_running_deadline_seconds,
        "backoffLimit": spec.cluster.max_failures,
        "rayClusterSpec": _cluster_spec(spec, run, sizing, ticket),
        "submitterPodTemplate": _submitter_template(spec, run),
    }
    if k8s.active_deadline_seconds is not None:
        body["activeDeadlineSeconds"] = k8s.active_deadline_seconds
    return {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": _metadata(spec, run, name), "spec": body}


def deletion_policy(spec: RunSpec) -> dict[str, Any]:
    """When a finished job gives its pods back. KubeRay 1.7's deletionRules (feature gate
    RayJobDeletionPolicy, beta and on by default) delete the workers at once and the head after
    ``ttl_seconds_after_finished``; the RayJob and its submitter Job (the driver's log) stay. The
    operator refuses deletionRules with ``shutdownAfterJobFinishes: true`` (and a TTL needs that), and
    Kueue refuses a job without it: a queued job deletes its whole cluster after the TTL instead."""
    ttl = spec.kubernetes.ttl_seconds_after_finished
    if spec.kubernetes.queue:
        return {"shutdownAfterJobFinishes": True, "ttlSecondsAfterFinished": ttl}
    conditions = [{"jobStatus": "SUCCEEDED"}, {"jobStatus": "FAILED"}, {"jobDeploymentStatus": "Failed"}]
    rules = [
        {"policy": policy, "condition": {**condition, "ttlSeconds": seconds}}
        for condition in conditions
        for policy, seconds in (("DeleteWorkers", 0), ("DeleteCluster", ttl))
    ]
    return {"shutdownAfterJobFinishes": False, "deletionStrategy": {"deletionRules": rules}}


def _cluster_spec(spec: RunSpec, run: RunIdentity, sizing: WorkerSizing, ticket: str) -> dict[str, Any]:
    auth: dict[str, Any] = {"mode": "token"}  # no secretName: KubeRay makes a token for this cluster
    if spec.kubernetes.ray_token_secret:
        auth["secretName"] = spec.kubernetes.ray_token_secret
    return {
        "rayVersion": spec.kubernetes.ray_version or _installed_ray_version(),
        "enableInTreeAutoscaling": False,
        "authOptions": auth,
        "headGroupSpec": _head_group(spec, run, ticket),
        "workerGroupSpecs": [_worker_group(spec, run, sizing)],
    }


def _head_group(spec: RunSpec, run: RunIdentity, ticket: str) -> dict[str, Any]:
    k8s = spec.kubernetes
    memory = quantities.to_bytes(k8s.head_memory) + HEAD_SHM_BYTES
    disks = {"scratch": HEAD_SCRATCH, "cache": HEAD_CACHE}
    container = _ray_container(spec, run, "ray-head", k8s.head_cpus, memory, 0, disks)
    container["env"].append(NO_GPU_ENV)
    container["ports"] = [
        {"name": "gcs-server", "containerPort": 6379},
        {"name": "dashboard", "containerPort": 8265},
        {"name": "client", "containerPort": 10001},
    ]
    container["volumeMounts"].append({"name": "run-ticket", "mountPath": TICKET_DIR, "readOnly": True})
    volumes = [
        *_ray_volumes(spec, HEAD_SHM_BYTES, disks),
        {"name": "run-ticket", "configMap": {"name": ticket}},
    ]
    return {
        # The driver only: Ray Train's workers never land on the head.
        "rayStartParams": {"num-cpus": "0", "num-gpus": "0", "object-store-memory": str(HEAD_SHM_BYTES // 2)},
        "template": _pod_template(spec, run, [container], volumes, workers=False),
    }


def _worker_group(spec: RunSpec, run: RunIdentity, sizing: WorkerSizing) -> dict[str, Any]:
    disks = {"scratch": quantities.memory(sizing.scratch_bytes), "cache": spec.kubernetes.cache_size}
    container = _ray_container(spec, run, "ray-worker", sizing.cpu, sizing.memory_bytes, sizing.gpus, disks)
    volumes = _ray_volumes(spec, sizing.shm_bytes, disks)
    group: dict[str, Any] = {
        "groupName": "gpu-workers" if sizing.gpus else "cpu-workers",
        "replicas": sizing.replicas,
        "minReplicas": sizing.replicas,
        "maxReplicas": sizing.replicas,
        # Ray's object store in half of /dev/shm; the rest is for data loaders and NCCL.
        "rayStartParams": {"object-store-memory": str(sizing.shm_bytes // 2)},
        "template": _pod_template(spec, run, [container], volumes, workers=True, gpus=sizing.gpus),
    }
    if sizing.custom:
        group["resources"] = {name: quantities.amount(value) for name, value in sorted(sizing.custom.items())}
    if spec.cluster.label_selector:
        group["labels"] = dict(spec.cluster.label_selector)  # Ray node labels the workers ask for
    return group


def _ray_container(
    spec: RunSpec,
    run: RunIdentity,
    name: str,
    cpu: float,
    memory_bytes: int,
    gpus: int,
    disks: dict[str, str],
) -> dict[str, Any]:
    # Requests equal limits: training pods get the Guaranteed QoS class and are evicted last. The
    # node-local disks (/tmp, /scratch, /cache) and the logs are asked for as ephemeral storage.
    disk = quantities.to_bytes(spec.kubernetes.tmp_size) + sum(map(quantities.to_bytes, disks.values()))
    amounts = {
        "cpu": quantities.cpu(cpu),
        "memory": quantities.memory(memory_bytes),
        "ephemeral-storage": quantities.memory(disk + LOG_DISK),
    }
    if gpus:
        amounts["nvidia.com/gpu"] = str(gpus)
    mounts = [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "shm", "mountPath": "/dev/shm"},
        {"name": "scratch", "mountPath": SCRATCH_DIR},
        {"name": "cache", "mountPath": CACHE_DIR},
    ]
    if spec.kubernetes.checkpoint_claim:
        mounts.append({"name": "checkpoints", "mountPath": spec.kubernetes.checkpoint_mount_path})
    if spec.kubernetes.data_claim:
        mounts.append({"name": "data", "mountPath": spec.kubernetes.data_mount_path, "readOnly": True})
    return {
        "name": name,
        "image": default_image(spec, run),
        "imagePullPolicy": spec.kubernetes.image_pull_policy,
        "env": _ray_env(spec, run),
        "resources": {"requests": dict(amounts), "limits": dict(amounts)},
        "securityContext": CONTAINER_SECURITY,
        "volumeMounts": mounts,
    }


def _ray_env(spec: RunSpec, run: RunIdentity) -> list[dict[str, Any]]:
    """Secrets first (``secretKeyRef``), so that a value below can name them as ``$(NAME)``."""
    k8s = spec.kubernetes
    secrets = [
        *(_secret_env(name, k8s.mlflow_secret, key) for name, key in MLFLOW_SECRET_KEYS.items()),
        *(
            _secret_env(key, k8s.storage_secret, key)
            for key in STORAGE_SECRET_KEYS
            if key not in k8s.secret_env
        ),
        *(
            _secret_env(name, k8s.storage_secret, key)
            for name, key in sorted(_storage_references(spec).items())
        ),
        *(_secret_env(name, *ref.split("/", 1)) for name, ref in sorted(k8s.secret_env.items())),
    ]
    if spec.storage.endpoint_url:
        store = [_value_env(spec, "AWS_ENDPOINT_URL", spec.storage.endpoint_url)]
    else:
        store = [_secret_env("AWS_ENDPOINT_URL", k8s.storage_secret, "AWS_ENDPOINT_URL", optional=True)]
    if spec.storage.region:
        store.append({"name": "AWS_REGION", "value": spec.storage.region})
    else:
        store.append(_secret_env("AWS_REGION", k8s.storage_secret, "AWS_REGION", optional=True))
    env = [
        *secrets,
        *store,
        _value_env(spec, "MLFLOW_TRACKING_URI", run.tracking_uri or tracking_uri_in_cluster(spec)),
        {"name": "ORCHESTRATOR_SCRATCH_DIR", "value": SCRATCH_DIR},
        {"name": "ORCHESTRATOR_CACHE_DIR", "value": CACHE_DIR},
        {"name": "MLFLOW_DISABLE_TELEMETRY", "value": "true"},
        {"name": "DO_NOT_TRACK", "value": "true"},
    ]
    return [*env, HOME_ENV, {"name": "PYTHONUNBUFFERED", "value": "1"}]


def _value_env(spec: RunSpec, name: str, value: str) -> dict[str, Any]:
    """A plain value whose secrets become Kubernetes' ``$(NAME)``, expanded from the variables
    defined before it (their Secrets), so the value itself never reaches the manifest."""
    return {"name": name, "value": _ENV_REF.sub(r"$(\1)", spec.with_references(value))}


def _secret_env(name: str, secret: str, key: str, optional: bool = False) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": secret, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


def _ray_volumes(spec: RunSpec, shm_bytes: int, disks: dict[str, str]) -> list[dict[str, Any]]:
    k8s = spec.kubernetes
    volumes = [
        {"name": "tmp", "emptyDir": {"sizeLimit": k8s.tmp_size}},
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": quantities.memory(shm_bytes)}},
        *({"name": name, "emptyDir": {"sizeLimit": size}} for name, size in disks.items()),
    ]
    if k8s.checkpoint_claim:
        volumes.append({"name": "checkpoints", "persistentVolumeClaim": {"claimName": k8s.checkpoint_claim}})
    if k8s.data_claim:
        volumes.append(
            {"name": "data", "persistentVolumeClaim": {"claimName": k8s.data_claim, "readOnly": True}}
        )
    return volumes


def _submitter_template(spec: RunSpec, run: RunIdentity) -> dict[str, Any]:
    """The pod of the submitter Job: `ray job submit` then `ray job logs --follow`, whose output is the
    driver's log. KubeRay fills in the command, the dashboard address and the cluster's token."""
    container = {
        "name": "ray-job-submitter",
        "image": default_image(spec, run),
        "imagePullPolicy": spec.kubernetes.image_pull_policy,
        "env": [HOME_ENV, NO_GPU_ENV],  # KubeRay adds PYTHONUNBUFFERED and the dashboard address
        "resources": {
            "requests": {"cpu": "200m", "memory": "512Mi", "ephemeral-storage": "2Gi"},
            "limits": {"cpu": "1", "memory": "1Gi", "ephemeral-storage": "2Gi"},
        },
        "securityContext": CONTAINER_SECURITY,
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    volumes = [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}]
    template = _pod_template(spec, run, [container], volumes, workers=False)
    template["spec"]["restartPolicy"] = "Never"
    return template


def _pod_template(
    spec: RunSpec, run: RunIdentity, containers: list[dict], volumes: list[dict], workers: bool, gpus: int = 0
) -> dict[str, Any]:
    k8s = spec.kubernetes
    pod: dict[str, Any] = {
        "serviceAccountName": k8s.service_account,
        "automountServiceAccountToken": False,  # the pods never call the Kubernetes API
        "enableServiceLinks": False,
        "securityContext": POD_SECURITY,
        "containers": containers,
        "volumes": volumes,
    }
    if k8s.priority_class:
        pod["priorityClassName"] = k8s.priority_class
    if k8s.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": name} for name in k8s.image_pull_secrets]
    if workers and k8s.node_selector:
        pod["nodeSelector"] = dict(k8s.node_selector)
    tolerations = [_toleration(t) for t in k8s.tolerations] if k8s.tolerations is not None else None
    if workers and tolerations is None and gpus:
        tolerations = [dict(GPU_TOLERATION)]  # GPU pools are usually tainted so
    if workers and tolerations:
        pod["tolerations"] = tolerations
    if not workers:
        pod["affinity"] = OFF_GPU_NODES  # neither the head nor the submitter holds a GPU
    labels = {**POD_LABELS, RUN_ID_LABEL: _label(run.run_id)}
    return {"metadata": {"labels": labels}, "spec": pod}


def _toleration(toleration) -> dict[str, Any]:
    data = toleration.model_dump(exclude_none=True)
    if "toleration_seconds" in data:
        data["tolerationSeconds"] = data.pop("toleration_seconds")
    return data


def _label(value: str) -> str:
    """A label value: at most 63 characters of [A-Za-z0-9_.-], alphanumeric at both ends."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", value)[:63].strip("-_.")


def _installed_ray_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ray")
    except PackageNotFoundError:
        raise PlanError(
            "Ray is not installed here; hint: set kubernetes.ray_version to the image's Ray"
        ) from None


# Non-root, nothing writable but the volumes, no capabilities, the runtime's seccomp profile.
POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": RUN_AS,
    "runAsGroup": RUN_AS,
    "fsGroup": RUN_AS,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
# HOME on the writable /tmp: Ray, torch and DeepSpeed keep caches under ~.
HOME_ENV = {"name": "HOME", "value": "/tmp"}
