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
        description="Training image for the head, workers and submitter. Default: "
        "gpt-orchestrator:<version>-cuda when cluster.gpus_per_worker > 0, else ...-cpu "
        "(the tags the README's docker build commands produce).",
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
    workers_per_pod: int = Field(
        1,
        ge=1,
        le=64,
        description="Ray Train workers per worker pod; must divide cluster.num_workers. More than 1 "
        "keeps the GPUs of one node in one pod (NVLink, shared memory).",
    )
    worker_memory: str | None = Field(
        None,
        pattern=QUANTITY,
        description="Host memory per Ray Train worker, without /dev/shm. Default: the memory plan's "
        "host need plus 25%, rounded up to whole GiB (at least 2Gi, 8Gi with a GPU).",
    )
    shm_size: str = Field(
        "2Gi",
        pattern=QUANTITY,
        description="/dev/shm (RAM) per Ray Train worker, for data loaders, NCCL and Ray's object "
        "store (which gets half); counted in the pod's memory.",
    )
    tmp_size: str = Field("20Gi", pattern=QUANTITY, description="Size limit of each pod's /tmp (emptyDir).")
    node_selector: dict[str, str] = Field({}, description="Node labels the worker pods need.")
    tolerations: list[TolerationSpec] = Field([], description="Taints the worker pods tolerate.")
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
        3600,
        ge=0,
        le=INT32_MAX,
        description="How long the Ray cluster stays after the job ends, for inspection. The "
        "submitter Job, and so the driver's log, stays until the RayJob is deleted.",
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
    mlflow_uri: Annotated[str | None, MAY_REFER] = Field(
        None,
        pattern=r"^https?://",
        description="MLflow as the pods reach it; default: the k8s/ tracking server's Service, "
        "http://mlflow.<namespace>.svc.cluster.local:5000.",
    )
    mlflow_secret: str = Field(
        "mlflow-client",
        pattern=DNS_SUBDOMAIN,
        max_length=253,
        description="Secret with keys `username` and `password`: the pods' MLflow credentials.",
    )
    ray_token_secret: str | None = Field(
        "ray-auth-token",
        pattern=DNS_SUBDOMAIN,
        max_length=253,
        description="Secret with key `auth_token` for Ray's token authentication; none: KubeRay "
        "creates one per cluster.",
    )
    secret_env: dict[EnvName, str] = Field(
        {},
        description="Environment variables of the pods taken from Secrets, NAME: secret/key; every "
        "${env:NAME} the spec refers to must be here (MLflow's credentials come from mlflow_secret).",
    )
    checkpoint_claim: str = Field(
        "gpt-orchestrator-checkpoints",
        pattern=DNS_SUBDOMAIN,
        max_length=253,
        description="PersistentVolumeClaim (ReadWriteMany) for checkpoints, the report and the data cache.",
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
RESERVED_MOUNTS = ("/tmp", "/dev/shm", "/etc/orchestrator")


def nested_paths(a: str, b: str) -> bool:
    """One path is the other or lies inside it."""
    a, b = a.rstrip("/") + "/", b.rstrip("/") + "/"
    return a.startswith(b) or b.startswith(a)
