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
- namespace, image, Secrets, volumes, scheduling and time limits from ``kubernetes``.

The driver runs ``python -m launchers.job_entry /etc/orchestrator/run.json`` on the head; the
ticket holds the resolved spec (secrets still as ``${env:NAME}``), the MLflow run, the checkpoint
directory on the checkpoint volume and MLflow's in-cluster URI. Credentials reach the pods only
through ``secretKeyRef``, never inline.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from launchers.kubernetes import quantities
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
RUN_AS = 1000  # the image's non-root user and group
HEAD_SHM_BYTES = 2**30
MIN_CPU_WORKER_MEMORY = 2 * 2**30  # host memory of one Ray Train worker, at least
MIN_GPU_WORKER_MEMORY = 8 * 2**30
_ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class RunIdentity:
    """Which run the job belongs to; the MLflow run exists before the job is rendered."""

    run_id: str
    run_name: str
    spec_text: str  # the resolved spec YAML; secrets stay ${env:NAME} references
    tracking_uri: str | None = None  # MLflow as the pods reach it; default: from spec.kubernetes
    attempt: int = 1  # submissions of this run so far (a resumed run gets a new RayJob name)


@dataclass(frozen=True)
class WorkerSizing:
    """One Ray worker pod, and how many of them."""

    replicas: int
    workers_per_pod: int
    cpu: float
    gpus: int
    memory_bytes: int  # the container's memory, /dev/shm included (a RAM-backed emptyDir counts)
    shm_bytes: int
    custom: dict[str, float]


@dataclass(frozen=True)
class RenderedJob:
    rayjob: dict[str, Any]
    configmap: dict[str, Any]

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


def render_job(spec: RunSpec, run: RunIdentity) -> RenderedJob:
    """The RayJob and its ConfigMap; PlanError (with a hint) when the spec cannot run on Kubernetes."""
    sizing = worker_sizing(spec)
    _check_env_references(spec, run.spec_text)
    name = rayjob_name(run.run_name, run.run_id, run.attempt)
    configmap = _configmap(spec, run, name)
    rayjob = _rayjob(spec, run, name, sizing, configmap["metadata"]["name"])
    # Through JSON: plain data with no shared sub-objects (YAML would print those as anchors).
    return RenderedJob(rayjob=json.loads(json.dumps(rayjob)), configmap=json.loads(json.dumps(configmap)))


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


def tracking_uri_in_cluster(spec: RunSpec) -> str:
    k8s = spec.kubernetes
    return k8s.mlflow_uri or f"http://mlflow.{k8s.namespace}.svc.cluster.local:5000"


def default_image(spec: RunSpec) -> str:
    from orchestrator import __version__

    variant = "cuda" if spec.cluster.gpus_per_worker > 0 else "cpu"
    return spec.kubernetes.image or f"gpt-orchestrator:{__version__}-{variant}"


def run_ticket(spec: RunSpec, run: RunIdentity) -> dict[str, str]:
    """What the driver on the cluster reads from /etc/orchestrator/run.json."""
    return {
        "spec": run.spec_text,
        "run_id": run.run_id,
        "run_name": run.run_name,
        "checkpoint_dir": f"{spec.kubernetes.checkpoint_mount_path.rstrip('/')}/{run.run_name}",
        # a secret in the URI stays a reference: the driver resolves it from the pod's environment
        "tracking_uri": spec.with_references(run.tracking_uri or tracking_uri_in_cluster(spec)),
    }


# --- sizing -------------------------------------------------------------------------------------


def worker_sizing(spec: RunSpec) -> WorkerSizing:
    """The worker pods for ``cluster``; PlanError naming every reason it does not fit Kubernetes."""
    cluster, k8s = spec.cluster, spec.kubernetes
    per_pod = k8s.workers_per_pod
    problems = []
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
    return WorkerSizing(
        replicas=cluster.num_workers // per_pod,
        workers_per_pod=per_pod,
        cpu=cluster.cpus_per_worker * per_pod,
        gpus=int(gpus),
        memory_bytes=memory,
        shm_bytes=shm,
        custom={name: amount * per_pod for name, amount in cluster.resources_per_worker.items()},
    )


def _worker_memory_bytes(spec: RunSpec) -> int:
    """Host memory of one Ray Train worker: the spec's, else the memory plan's host need + 25%."""
    if spec.kubernetes.worker_memory:
        return quantities.to_bytes(spec.kubernetes.worker_memory)
    from orchestrator.plan.memory import CPU_FRAMEWORK_BASELINE, estimate_memory

    plan = estimate_memory(spec, world_size=spec.cluster.num_workers)
    if plan.device == "cpu":
        return max(MIN_CPU_WORKER_MEMORY, quantities.ceil_gib(plan.per_worker_bytes * 1.25))
    # On a GPU the host holds the CUDA libraries, pinned buffers and any offloaded states.
    host = CPU_FRAMEWORK_BASELINE + plan.offloaded_bytes
    return max(MIN_GPU_WORKER_MEMORY, quantities.ceil_gib(host * 1.25))


def _largest_divisor(n: int, at_most: int) -> int:
    return max(d for d in range(1, at_most + 1) if n % d == 0)


def _check_env_references(spec: RunSpec, spec_text: str) -> None:
    provided = set(MLFLOW_SECRET_KEYS) | set(spec.kubernetes.secret_env)
    missing = sorted(set(_ENV_REF.findall(spec_text)) - provided)
    if missing:
        example = ", ".join(f"{name}: my-secret/{name.lower()}" for name in missing)
        raise PlanError(
            f"the spec refers to ${{env:{missing[0]}}}, which the pods would not have"
            f"{f' (nor {len(missing) - 1} more)' if len(missing) > 1 else ''}; "
            f"hint: kubernetes.secret_env: {{{example}}}"
        )


# --- manifests ----------------------------------------------------------------------------------


def _configmap(spec: RunSpec, run: RunIdentity, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(spec, run, f"{name}-run"),
        "immutable": True,
        "data": {TICKET_FILE: json.dumps(run_ticket(spec, run), indent=2) + "\n", "spec.yaml": run.spec_text},
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
        "shutdownAfterJobFinishes": True,
        "ttlSecondsAfterFinished": k8s.ttl_seconds_after_finished,
        "preRunningDeadlineSeconds": k8s.pre_running_deadline_seconds,
        "backoffLimit": spec.cluster.max_failures,
        "rayClusterSpec": _cluster_spec(spec, run, sizing, ticket),
        "submitterPodTemplate": _submitter_template(spec, run),
    }
    if k8s.active_deadline_seconds is not None:
        body["activeDeadlineSeconds"] = k8s.active_deadline_seconds
    return {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": _metadata(spec, run, name), "spec": body}


def _cluster_spec(spec: RunSpec, run: RunIdentity, sizing: WorkerSizing, ticket: str) -> dict[str, Any]:
    auth: dict[str, Any] = {"mode": "token"}
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
    container = _ray_container(spec, run, "ray-head", cpu=k8s.head_cpus, memory_bytes=memory, gpus=0)
    container["ports"] = [
        {"name": "gcs-server", "containerPort": 6379},
        {"name": "dashboard", "containerPort": 8265},
        {"name": "client", "containerPort": 10001},
    ]
    container["volumeMounts"].append({"name": "run-ticket", "mountPath": TICKET_DIR, "readOnly": True})
    volumes = [*_ray_volumes(spec, HEAD_SHM_BYTES), {"name": "run-ticket", "configMap": {"name": ticket}}]
    return {
        # The driver only: Ray Train's workers never land on the head.
        "rayStartParams": {"num-cpus": "0", "num-gpus": "0", "object-store-memory": str(HEAD_SHM_BYTES // 2)},
        "template": _pod_template(spec, run, [container], volumes, workers=False),
    }


def _worker_group(spec: RunSpec, run: RunIdentity, sizing: WorkerSizing) -> dict[str, Any]:
    container = _ray_container(spec, run, "ray-worker", sizing.cpu, sizing.memory_bytes, sizing.gpus)
    group: dict[str, Any] = {
        "groupName": "gpu-workers" if sizing.gpus else "cpu-workers",
        "replicas": sizing.replicas,
        "minReplicas": sizing.replicas,
        "maxReplicas": sizing.replicas,
        # Ray's object store in half of /dev/shm; the rest is for data loaders and NCCL.
        "rayStartParams": {"object-store-memory": str(sizing.shm_bytes // 2)},
        "template": _pod_template(spec, run, [container], _ray_volumes(spec, sizing.shm_bytes), workers=True),
    }
    if sizing.custom:
        group["resources"] = {name: quantities.amount(value) for name, value in sorted(sizing.custom.items())}
    if spec.cluster.label_selector:
        group["labels"] = dict(spec.cluster.label_selector)  # Ray node labels the workers ask for
    return group


def _ray_container(
    spec: RunSpec, run: RunIdentity, name: str, cpu: float, memory_bytes: int, gpus: int
) -> dict[str, Any]:
    # Requests equal limits: training pods get the Guaranteed QoS class and are evicted last.
    amounts = {"cpu": quantities.cpu(cpu), "memory": quantities.memory(memory_bytes)}
    if gpus:
        amounts["nvidia.com/gpu"] = str(gpus)
    mounts = [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "shm", "mountPath": "/dev/shm"},
        {"name": "checkpoints", "mountPath": spec.kubernetes.checkpoint_mount_path},
    ]
    if spec.kubernetes.data_claim:
        mounts.append({"name": "data", "mountPath": spec.kubernetes.data_mount_path, "readOnly": True})
    return {
        "name": name,
        "image": default_image(spec),
        "imagePullPolicy": spec.kubernetes.image_pull_policy,
        "env": _ray_env(spec, run),
        "resources": {"requests": dict(amounts), "limits": dict(amounts)},
        "securityContext": CONTAINER_SECURITY,
        "volumeMounts": mounts,
    }


def _ray_env(spec: RunSpec, run: RunIdentity) -> list[dict[str, Any]]:
    k8s = spec.kubernetes
    env: list[dict[str, Any]] = [
        {"name": "MLFLOW_TRACKING_URI", "value": run.tracking_uri or tracking_uri_in_cluster(spec)},
        *(_secret_env(name, k8s.mlflow_secret, key) for name, key in MLFLOW_SECRET_KEYS.items()),
        *(_secret_env(name, *ref.split("/", 1)) for name, ref in sorted(k8s.secret_env.items())),
        {"name": "ORCHESTRATOR_CACHE_DIR", "value": f"{k8s.checkpoint_mount_path.rstrip('/')}/.cache"},
        {"name": "MLFLOW_DISABLE_TELEMETRY", "value": "true"},
        {"name": "DO_NOT_TRACK", "value": "true"},
    ]
    return [*env, HOME_ENV, {"name": "PYTHONUNBUFFERED", "value": "1"}]


def _secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def _ray_volumes(spec: RunSpec, shm_bytes: int) -> list[dict[str, Any]]:
    k8s = spec.kubernetes
    volumes = [
        {"name": "tmp", "emptyDir": {"sizeLimit": k8s.tmp_size}},
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": quantities.memory(shm_bytes)}},
        {"name": "checkpoints", "persistentVolumeClaim": {"claimName": k8s.checkpoint_claim}},
    ]
    if k8s.data_claim:
        volumes.append(
            {"name": "data", "persistentVolumeClaim": {"claimName": k8s.data_claim, "readOnly": True}}
        )
    return volumes


def _submitter_template(spec: RunSpec, run: RunIdentity) -> dict[str, Any]:
    """The pod of the submitter Job: `ray job submit` then `ray job logs --follow`, whose output is the
    driver's log. KubeRay fills in the command and the dashboard address."""
    container = {
        "name": "ray-job-submitter",
        "image": default_image(spec),
        "imagePullPolicy": spec.kubernetes.image_pull_policy,
        "env": [HOME_ENV],  # KubeRay adds PYTHONUNBUFFERED and the dashboard address
        "resources": {
            "requests": {"cpu": "200m", "memory": "512Mi"},
            "limits": {"cpu": "1", "memory": "1Gi"},
        },
        "securityContext": CONTAINER_SECURITY,
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    volumes = [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}]
    template = _pod_template(spec, run, [container], volumes, workers=False)
    template["spec"]["restartPolicy"] = "Never"
    return template


def _pod_template(
    spec: RunSpec, run: RunIdentity, containers: list[dict], volumes: list[dict], workers: bool
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
    if workers and k8s.tolerations:
        pod["tolerations"] = [_toleration(t) for t in k8s.tolerations]
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
