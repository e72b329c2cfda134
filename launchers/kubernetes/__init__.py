"""Backend ``kubernetes``: a run as a KubeRay RayJob that brings up its own Ray cluster.

    launcher = KubernetesLauncher(namespace="gpt-orchestrator", context="kind-dev")
    handle = launcher.submit_run(spec, RunIdentity(run_id, run_name, spec_text))   # PENDING
    launcher.status(handle.job_id)            # RUNNING, SUCCEEDED, FAILED (with KubeRay's reason)...
    for line in launcher.logs(handle.job_id, follow=True): print(line, end="")
    launcher.cancel(handle.job_id)            # suspend it (delete=True: delete it)
    launcher.list()                           # this orchestrator's RayJobs in the namespace

``submit_run`` renders the RayJob and its run-ticket ConfigMap (``render``), checks them as the API
server and the KubeRay operator would (``validate``), creates the RayJob and then the ConfigMap owned
by it (so deleting the RayJob deletes both). The job's state comes from the RayJob's
``jobDeploymentStatus`` and ``jobStatus`` (``job_state``); its log from the submitter Job's pod,
whose ``ray job logs --follow`` prints the driver's output and outlives the Ray cluster, else
from the head pod.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

from launchers.kubernetes.client import KubeClient
from launchers.kubernetes.render import (
    IMAGE_KEY,
    MANAGED_BY,
    QUEUE_LABEL,
    RUN_ID_LABEL,
    RUN_NAME_ANNOTATION,
    SETTINGS_CONFIGMAP,
    RenderedJob,
    RunIdentity,
    render_job,
)
from orchestrator.errors import NotFoundError, PlanError, UsageError
from orchestrator.spec import RunSpec
from orchestrator.track.runs import ADDRESS_TAG, JOB_ID_TAG, JobHandle, JobState, RunRecord

__all__ = ["JobDetail", "KubernetesLauncher", "RunIdentity", "job_detail", "job_state", "load_for_kubernetes"]

log = logging.getLogger(__name__)
BACKEND = "kubernetes"
CANCELLED_ANNOTATION = "gpt-orchestrator/cancelled"  # set by cancel: a suspension that means stop
JOB_SELECTOR = ",".join(f"{key}={value}" for key, value in MANAGED_BY.items())


@dataclass(frozen=True)
class JobDetail:
    """A RayJob's state in the project's terms, and KubeRay's own words for it."""

    name: str
    run_id: str
    run_name: str
    state: JobState
    reason: str  # why it is in this state, for people ("" when there is nothing to add)
    deployment_status: str  # KubeRay's jobDeploymentStatus ("" before the operator saw it)
    job_status: str  # the Ray job's status (PENDING, RUNNING, SUCCEEDED, ...) or ""
    ray_cluster: str  # name of the RayCluster running it, once created

    def handle(self) -> JobHandle:
        error = self.reason if self.state is JobState.FAILED else None
        return JobHandle(BACKEND, self.run_id, self.state, error=error, job_id=self.name)


class KubernetesLauncher:
    """Detached: ``submit_run`` returns once the API server accepted the RayJob (state PENDING)."""

    name = BACKEND
    detached = True

    def __init__(
        self,
        namespace: str,
        context: str | None = None,
        kubeconfig: str | None = None,
        client: KubeClient | None = None,
    ):
        self.namespace = namespace
        self.context = context
        self._client = client or KubeClient.connect(namespace, context, kubeconfig)

    @classmethod
    def for_spec(cls, spec: RunSpec) -> KubernetesLauncher:
        """The namespace the spec names, through the current kubeconfig context (or in-cluster)."""
        return cls(spec.kubernetes.namespace)

    @classmethod
    def for_record(cls, record: RunRecord) -> KubernetesLauncher:
        return cls.from_address(record.address or "gpt-orchestrator")

    def piece_runner(self, spec: RunSpec):
        """Data named in data.prepared whose sources are here is prepared here first, on an embedded
        Ray, into that store; otherwise the job's driver prepares it on the cluster."""
        from launchers.ray_tasks import task_runner

        return task_runner(spec)

    def prepares_here(self, spec: RunSpec) -> bool:
        from orchestrator.lifecycle.data import sources_here

        return spec.data.prepared is not None and sources_here(spec)

    def job_tags(self, handle: JobHandle) -> dict[str, str]:
        return {JOB_ID_TAG: handle.job_id, ADDRESS_TAG: self.address}

    @classmethod
    def from_address(cls, address: str) -> KubernetesLauncher:
        """From what ``address`` says (``<namespace>`` or ``<namespace>/<context>``; stored with a run)."""
        namespace, _, context = address.partition("/")
        return cls(namespace, context or None)

    @property
    def address(self) -> str:
        return f"{self.namespace}/{self.context}" if self.context else self.namespace

    def submit_run(self, spec: RunSpec, run: RunIdentity) -> JobHandle:
        if spec.kubernetes.namespace != self.namespace:
            raise UsageError(
                f"the spec's kubernetes.namespace is {spec.kubernetes.namespace}, but this launcher works in "
                f"{self.namespace}; hint: use one namespace for both"
            )
        if not (spec.kubernetes.image or run.image):
            run = replace(run, image=self.namespace_image())
        return self.submit_rendered(render_job(spec, run))

    def namespace_image(self) -> str:
        """The training image the namespace's overlay names (kustomize copies its images: entry)."""
        try:
            settings = self._client.get_configmap(SETTINGS_CONFIGMAP)
        except NotFoundError:
            settings = {}
        image = (settings.get("data") or {}).get(IMAGE_KEY)
        if not image:
            raise PlanError(
                f"the spec names no kubernetes.image and namespace {self.namespace} has no ConfigMap "
                f"{SETTINGS_CONFIGMAP} with key {IMAGE_KEY}; hint: apply the namespace's overlay "
                "(kubectl apply -k k8s/overlays/...), or set kubernetes.image"
            )
        return image

    def submit(self, plan) -> JobHandle:
        """The protocol's entry: the Plan's resolved spec and MLflow run (the cluster prepares the
        data). A resumed run gets a new RayJob: one more than those it already has."""
        attempt = 1 + len(self._client.list_rayjobs(f"{RUN_ID_LABEL}={plan.run_id}"))
        return self.submit_run(
            plan.spec, RunIdentity(plan.run_id, plan.run_name, plan.spec_text, attempt=attempt)
        )

    def submit_rendered(self, rendered: RenderedJob) -> JobHandle:
        from launchers.kubernetes.validate import check_manifests

        check_manifests(rendered.documents())
        created = self._client.create_rayjob(rendered.rayjob)
        try:
            self._client.create_configmap(_owned_by(rendered.configmap, created))
        except Exception:
            self._client.delete_rayjob(rendered.name)  # no RayJob whose driver would lack its ticket
            raise
        log.info("created RayJob %s in namespace %s", rendered.name, self.namespace)
        return job_detail(created).handle()

    def describe(self, job_id: str) -> JobDetail:
        return job_detail(self._client.get_rayjob(job_id))

    def status(self, job_id: str) -> JobHandle:
        return self.describe(job_id).handle()

    def logs(self, job_id: str, follow: bool = False, poll_s: float = 2.0) -> Iterator[str]:
        """The driver's output so far (the submitter's pod, else the head's); with ``follow``, then
        what comes until the job ends. A line ``==> pod NAME <==`` marks each change of pod."""
        shown: dict[str, int] = {}
        current = None
        while True:
            detail = self.describe(job_id)  # read before the log: nothing is missed at the end
            source = self._log_source(job_id, detail)
            if source is not None:
                pod, container = source
                text = self._client.pod_log(pod, container)
                if pod != current:
                    current = pod
                    yield f"==> pod {pod} <==\n"
                yield from text[shown.get(pod, 0) :].splitlines(keepends=True)
                shown[pod] = len(text)
            if not follow or detail.state.is_final:
                return
            time.sleep(poll_s)

    def cancel(self, job_id: str, delete: bool = False) -> JobHandle:
        """Stop a job: suspend its RayJob (KubeRay deletes its Ray cluster; the RayJob stays, for
        ``status``), or delete it with everything it owns. A job queued by Kueue is deleted, since
        Kueue owns the suspension of the jobs it admits."""
        rayjob = self._client.get_rayjob(job_id)
        detail = job_detail(rayjob)
        if detail.state.is_final and not delete:
            return detail.handle()
        if delete or QUEUE_LABEL in (rayjob["metadata"].get("labels") or {}):
            self._client.delete_rayjob(job_id)
            return JobHandle(BACKEND, detail.run_id, JobState.STOPPED, job_id=job_id)
        # KubeRay suspends only a RayJob with shutdownAfterJobFinishes, which its deletionRules
        # exclude: the patch swaps them in one step (a merge patch's null removes the rules).
        patch = {
            "metadata": {"annotations": {CANCELLED_ANNOTATION: "true"}},
            "spec": {"suspend": True, "shutdownAfterJobFinishes": True, "deletionStrategy": None},
        }
        return job_detail(self._client.patch_rayjob(job_id, patch)).handle()

    def list(self) -> list[JobHandle]:
        jobs = self._client.list_rayjobs(JOB_SELECTOR)
        jobs.sort(key=lambda job: job["metadata"].get("creationTimestamp") or "")
        return [job_detail(job).handle() for job in jobs]

    def _log_source(self, name: str, detail: JobDetail) -> tuple[str, str | None] | None:
        submitters = self._client.list_pods(f"batch.kubernetes.io/job-name={name}")
        if submitters:
            return _newest(submitters), None
        if detail.ray_cluster:
            heads = self._client.list_pods(f"ray.io/cluster={detail.ray_cluster},ray.io/node-type=head")
            if heads:
                return _newest(heads), "ray-head"
        return None


def load_for_kubernetes(path, overrides: list[str]) -> tuple[RunSpec, list[str]]:
    """A spec file as the kubernetes backend runs it, and notes on what that ignores: a spec written
    for a running Ray cluster names ``cluster.address``, which a RayJob (its own cluster) has no use
    for. Checks that need the data files stay with the cluster, as with ``validate``."""
    from orchestrator.errors import OrchestratorError
    from orchestrator.spec import load_spec

    notes, extra = [], ["cluster.backend=kubernetes"]
    try:
        as_written = load_spec(path, overrides)
    except OrchestratorError:
        as_written = None  # what is wrong is reported below, for the kubernetes backend
    if as_written is not None and as_written.cluster.address is not None:
        extra.append("cluster.address=null")
        notes.append(
            f"cluster.address ({as_written.cluster.address}) is ignored: a RayJob brings its own Ray cluster"
        )
    return load_spec(path, [*overrides, *extra]), notes


def job_state(rayjob: dict) -> tuple[JobState, str]:
    """(state, reason) of a RayJob from KubeRay's jobDeploymentStatus and the Ray job's status."""
    status = rayjob.get("status") or {}
    deployment, job = status.get("jobDeploymentStatus", ""), status.get("jobStatus", "")
    said = ": ".join(part for part in (status.get("reason", ""), status.get("message", "")) if part)
    cancelled = (rayjob.get("metadata", {}).get("annotations") or {}).get(CANCELLED_ANNOTATION) == "true"
    if rayjob.get("metadata", {}).get("deletionTimestamp"):
        return JobState.STOPPED, "the RayJob is being deleted"
    if deployment in ("Suspending", "Suspended"):
        if cancelled:
            return JobState.STOPPED, "cancelled (RayJob suspended)"
        return JobState.PENDING, "suspended: waiting to be admitted (Kueue) or resumed"
    if deployment == "Complete":
        final = {"SUCCEEDED": JobState.SUCCEEDED, "STOPPED": JobState.STOPPED}.get(job, JobState.FAILED)
        return final, "" if final is JobState.SUCCEEDED else (
            said or f"the Ray job ended {job or 'without a status'}"
        )
    if deployment == "Failed":
        return JobState.FAILED, said or "KubeRay marked the RayJob Failed"
    if deployment == "ValidationFailed":
        return JobState.FAILED, f"KubeRay refused the RayJob: {status.get('message', '')}".rstrip(": ")
    if deployment == "Retrying":
        return (
            JobState.PENDING,
            f"retrying on a new Ray cluster after failure {status.get('failed', '?')}: {said}",
        )
    if deployment == "Running":
        if job == "RUNNING":
            return JobState.RUNNING, ""
        return JobState.PENDING, f"the Ray job is {job or 'being submitted'}"
    if deployment == "Waiting":
        return JobState.PENDING, "waiting for a job to be submitted to the Ray cluster"
    cluster_state = (status.get("rayClusterStatus") or {}).get("state") or "not ready"
    return JobState.PENDING, f"starting the Ray cluster ({cluster_state})"


def job_detail(rayjob: dict) -> JobDetail:
    metadata, status = rayjob.get("metadata") or {}, rayjob.get("status") or {}
    state, reason = job_state(rayjob)
    job_metadata = (rayjob.get("spec") or {}).get("metadata") or {}
    return JobDetail(
        name=metadata.get("name", ""),
        run_id=job_metadata.get("orchestrator_run_id")
        or (metadata.get("labels") or {}).get(RUN_ID_LABEL, ""),
        run_name=(metadata.get("annotations") or {}).get(RUN_NAME_ANNOTATION, ""),
        state=state,
        reason=reason,
        deployment_status=status.get("jobDeploymentStatus", ""),
        job_status=status.get("jobStatus", ""),
        ray_cluster=status.get("rayClusterName", ""),
    )


def _owned_by(configmap: dict, rayjob: dict) -> dict:
    """The ConfigMap with the RayJob as its owner: the garbage collector deletes it with the RayJob."""
    meta = rayjob["metadata"]
    owner = {
        "apiVersion": rayjob["apiVersion"],
        "kind": rayjob["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
    }
    return {**configmap, "metadata": {**configmap["metadata"], "ownerReferences": [owner]}}


def _newest(pods: list[dict]) -> str:
    return max(pods, key=lambda pod: pod["metadata"].get("creationTimestamp") or "")["metadata"]["name"]
