"""The ``kubernetes`` section of a run spec: where and how `cluster.backend: kubernetes` runs.

The Ray cluster's size comes from ``cluster`` (workers, CPUs and GPUs per worker, custom resources,
node labels, restarts); this section says what only Kubernetes needs: the namespace, the image, the
Secrets and volumes the pods use, scheduling (node selector, tolerations, priority, a Kueue queue)
and the time limits of the KubeRay RayJob. ``launchers.kubernetes.render`` turns both into manifests.

>>> from orchestrator.spec import parse_spec
>>> spec = parse_spec("name: x\\ncluster: {backend: kubernetes}\\nkubernetes: {namespace: ml}")
>>> spec.kubernetes.namespace, spec.kubernetes.pre_running_deadline_seconds
('ml', 1800)
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from orchestrator.spec.section import MAY_REFER
from orchestrator.spec.section import Section as _Section

# RFC 1123 label (namespaces, Secret and claim names used here); qualified label keys; quantities
# as Kubernetes writes them (plain, decimal or binary suffixes).
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
QUANTITY = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"
ABSOLUTE_PATH = r"^/[A-Za-z0-9._/-]*$"
INT32_MAX = 2**31 - 1
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
SECRET_KEY = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[-._a-zA-Z0-9]+$")


class TolerationSpec(_Section):
    """One pod toleration, as in a Pod's ``tolerations`` (snake_case keys)."""

    key: str | None = Field(None, min_length=1, max_length=316, description="Taint key; none with Exists.")
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = Field(None, max_length=63, description="Taint value (operator Equal).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="The taint effect to tolerate; none tolerates every effect."
    )
    toleration_seconds: int | None = Field(
        None, ge=0, description="NoExecute only: how long the pod stays once the taint appears."
    )


class KubernetesSpec(_Section):
    """What `cluster.backend: kubernetes` needs besides the ``cluster`` section."""

    namespace: str = Field(
        "gpt-orchestrator",
        max_length=63,
        pattern=DNS_LABEL,
        description="Namespace of the RayJob, its ConfigMap and pods (k8s/overlays/* create it).",
    )
    image: str | None = Field(
        None,
        min_length=1,
        description="Training image for the head, workers and submitter. Default: the image the "
        "namespace's overlay names (ConfigMap gpt-orchestrator-settings, key training-image, which "
        "kustomize fills from the overlay's images: entry), read at submit.",
    )
    image_pull_policy: Literal["IfNotPresent", "Always", "Never"] = "IfNotPresent"
    image_pull_secrets: list[str] = Field([], description="Names of docker-registry Secrets.")
    service_account: str = Field(
        "gpt-orchestrator-training",
        pattern=DNS_SUBDOMAIN,
        max_length=253,
        description="ServiceAccount of the Ray pods (no API permissions needed; its token is not mounted).",
    )
    ray_version: str | None = Field(
        None,
        pattern=r"^\d+\.\d+\.\d+$",
        description="Ray version in the image (KubeRay needs it for token auth); default: the Ray "
        "installed where the spec is rendered.",
    )
    head_cpus: float = Field(2.0, gt=0.0, le=1024.0, description="CPUs of the head pod (the driver).")
    head_memory: str = Field("8Gi", pattern=QUANTITY, description="Memory of the head pod.")
    gpus_per_node: int | None = Field(
        None,
        ge=1,
        le=64,
        description="GPUs of one node of the GPU pool. Then one worker pod per node holds all of "
        "them (workers_per_pod defaults to gpus_per_node / cluster.gpus_per_worker), so NCCL uses "
        "NVLink and shared memory inside the node instead of TCP between pods.",
    )
    workers_per_pod: int | None = Field(
        None,
        ge=1,
        le=64,
        description="Ray Train workers per worker pod; must divide cluster.num_workers. Default: "
        "a node's worth when gpus_per_node is set, else 1.",
    )
    worker_memory: str | None = Field(
        None,
        pattern=QUANTITY,
        description="Host memory per Ray Train worker, without /dev/shm. Default: the memory plan's "
        "host need (on a GPU: 3 GiB of CUDA host side plus what is offloaded) times 2, rounded up "
        "to whole GiB (at least 2Gi, 8Gi with a GPU).",
    )
    shm_size: str = Field(
        "2Gi",
        pattern=QUANTITY,
        description="/dev/shm (RAM) per Ray Train worker, for data loaders, NCCL and Ray's object "
        "store (which gets half); counted in the pod's memory.",
    )
    tmp_size: str = Field("20Gi", pattern=QUANTITY, description="Size limit of each pod's /tmp (emptyDir).")
    scratch_size: str | None = Field(
        None,
        pattern=QUANTITY,
        description="Node-local disk per worker pod for checkpoint shards before their upload and the "
        "run's journal and logs (/scratch, ORCHESTRATOR_SCRATCH_DIR). Default: two checkpoints of "
        "the pod's shards times 1.5, plus 1 GiB, at least 10Gi.",
    )
    cache_size: str = Field(
        "50Gi",
        pattern=QUANTITY,
        description="Node-local disk per worker pod for the prepared data streamed from the object "
        "store (/cache, ORCHESTRATOR_CACHE_DIR).",
    )
    node_selector: dict[str, str] = Field({}, description="Node labels the worker pods need.")
    tolerations: list[TolerationSpec] | None = Field(
        None,
        description="Taints the worker pods tolerate. Default: nvidia.com/gpu (NoSchedule) for GPU "
        "workers, as GPU pools are usually tainted; [] for none.",
    )
    priority_class: str | None = Field(
        None, pattern=DNS_SUBDOMAIN, max_length=253, description="PriorityClass of every pod."
    )
    queue: str | None = Field(
        None,
        pattern=DNS_SUBDOMAIN,
        max_length=63,
        description="Kueue LocalQueue: sets the kueue.x-k8s.io/queue-name label, so Kueue admits the job.",
    )
    ttl_seconds_after_finished: int = Field(
        300,
        ge=0,
        le=INT32_MAX,
        description="How long the Ray head stays after the job ends, for inspection; the workers, "
        "and their GPUs, go at once (KubeRay's deletionRules). The submitter Job, and so the "
        "driver's log, stays until the RayJob is deleted.",
    )
    active_deadline_seconds: int | None = Field(
        7 * 24 * 3600, ge=1, le=INT32_MAX, description="The job fails once it ran this long; none: no limit."
    )
    pre_running_deadline_seconds: int = Field(
        1800,
        ge=1,
        le=INT32_MAX,
        description="The job fails if its Ray cluster is not ready and the job submitted by then "
        "(pods that never schedule, an image that never pulls).",
    )
    tracking_namespace: str | None = Field(
        None,
        max_length=63,
        pattern=DNS_LABEL,
        description="Namespace of the MLflow server and its stores (k8s/ keeps them out of the "
        "training namespace). Default: <namespace>-tracking.",
    )
    mlflow_uri: Annotated[str | None, MAY_REFER] = Field(
        None,
        pattern=r"^https?://",
        description="MLflow as the pods reach it; default: the k8s/ tracking server's Service, "
        "http://mlflow.<tracking_namespace>.svc.cluster.local:5000.",
    )
    mlflow_secret: str = Field(
        "mlflow-client",
        pattern=DNS_SUBDOMAIN,
        max_length=253,
        description="Secret with keys `username` and `password`: the pods' MLflow credentials.",
    )
    ray_token_secret: str | None = Field(
        None,
        pattern=DNS_SUBDOMAIN,
        max_length=253,
        description="Secret with key `auth_token` for Ray's token authentication. Default: none, "
        "and KubeRay creates a token per Ray cluster when it creates the cluster.",
    )
    secret_env: dict[EnvName, str] = Field(
        {},
        description="Environment variables of the pods taken from Secrets, NAME: secret/key; every "
        "${env:NAME} the spec refers to must be here (MLflow's credentials come from mlflow_secret).",
    )
    object_store: str = Field(
        "s3://gpt-orchestrator",
        pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[A-Za-z0-9._-]+)*/?$",
        description="Where runs keep checkpoints (<store>/checkpoints, unless checkpoint.dir names "
        "a place) and prepared data (<store>/datasets/<run name>, unless data.prepared does). "
        "The dev overlay's SeaweedFS has this bucket; elsewhere name yours.",
    )
    storage_secret: str = Field(
        "object-store",
        pattern=DNS_SUBDOMAIN,
        max_length=253,
        description="Secret with the object store's AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY and, "
        "optionally, AWS_ENDPOINT_URL and AWS_REGION, given to every pod through secretKeyRef.",
    )
    checkpoint_claim: str | None = Field(
        None,
        pattern=DNS_SUBDOMAIN,
        max_length=253,
        description="A ReadWriteMany PersistentVolumeClaim mounted at checkpoint_mount_path, for "
        "checkpoint.dir on a shared volume instead of the object store (none by default).",
    )
    checkpoint_mount_path: str = Field("/checkpoints", pattern=ABSOLUTE_PATH)
    data_claim: str | None = Field(
        None,
        pattern=DNS_SUBDOMAIN,
        max_length=253,
        description="PersistentVolumeClaim with the training text, mounted read-only at data_mount_path "
        "(data.files then name paths under it).",
    )
    data_mount_path: str = Field("/data", pattern=ABSOLUTE_PATH)


# Mount points the rendered pods use for themselves (emptyDirs and the run ticket).
RESERVED_MOUNTS = ("/tmp", "/dev/shm", "/etc/orchestrator", "/scratch", "/cache")


def nested_paths(a: str, b: str) -> bool:
    """One path is the other or lies inside it."""
    a, b = a.rstrip("/") + "/", b.rstrip("/") + "/"
    return a.startswith(b) or b.startswith(a)
