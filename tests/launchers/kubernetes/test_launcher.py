"""KubernetesLauncher against an in-process fake API server (no real one can run here).

The launcher goes through the official ``kubernetes`` client and a kubeconfig the test writes, so
configuration loading, HTTP, serialization and error answers are the real client's. The fake checks
every object it receives with the same validator as the renderer (``fake.refused`` must stay empty)
and moves each RayJob through KubeRay's status sequence one read at a time.
"""

from __future__ import annotations

import socket
import threading

import pytest

from launchers.base import JobState
from launchers.kubernetes import KubernetesLauncher, RunIdentity, job_state
from launchers.kubernetes.client import KubeClient
from launchers.kubernetes.render import IMAGE_KEY, RUN_ID_LABEL, SETTINGS_CONFIGMAP, render_job
from orchestrator.errors import LaunchError, NotFoundError, PlanError
from orchestrator.spec import parse_spec
from tests.launchers.kubernetes.fake_apiserver import PROGRESS, FakeApiServer, write_kubeconfig

NAMESPACE = "gpt-orchestrator"
SPEC = """\
name: tiny
model: {n_layers: 2, n_heads: 2, d_model: 32, context_length: 32, vocab_size: 300}
train: {epochs: 1, max_steps: 20, micro_batch_size: 4, log_interval: 5, eval_interval: 10}
schedule: {warmup_steps: 4}
cluster: {backend: kubernetes, num_workers: 2, cpus_per_worker: 1, max_failures: 1}
kubernetes: {pre_running_deadline_seconds: 600, worker_memory: 2Gi}
"""


@pytest.fixture(scope="module")
def server():
    with FakeApiServer(NAMESPACE) as running:
        yield running


@pytest.fixture(scope="module")
def kubeconfig(server, tmp_path_factory):
    return write_kubeconfig(tmp_path_factory.mktemp("kube") / "config", server.url, NAMESPACE)


IMAGE = "registry.example.com/ml/gpt-orchestrator:0.1.0-cpu"


@pytest.fixture
def fake(server):
    server.reset()
    # What the namespace's overlay creates (tests/k8s/test_manifests.py checks the overlays make it).
    server.cluster.configmaps[SETTINGS_CONFIGMAP] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": SETTINGS_CONFIGMAP, "namespace": NAMESPACE},
        "data": {IMAGE_KEY: IMAGE},
    }
    yield server.cluster
    assert server.cluster.refused == [], "the fake API server refused a manifest the launcher sent"


@pytest.fixture
def launcher(kubeconfig, fake):
    return KubernetesLauncher(NAMESPACE, kubeconfig=kubeconfig)


@pytest.fixture(scope="module")
def spec():
    return parse_spec(SPEC)


def run(n: int = 1) -> RunIdentity:
    run_id = f"{n:02d}" + "9f1c0a2b3d4e5f60718293a4b5c6d7"
    return RunIdentity(run_id=run_id, run_name=f"tiny-20250101-12000{n}", spec_text=SPEC)


def states_until_final(launcher, job_id: str) -> list[str]:
    seen = []
    for _ in range(50):
        handle = launcher.status(job_id)
        if not seen or seen[-1] != handle.state.value:
            seen.append(handle.state.value)
        if handle.state.is_final:
            return seen
    raise AssertionError(f"never final: {seen}")


def test_submit_creates_a_valid_rayjob_and_its_ticket_owned_by_it(launcher, fake, spec):
    handle = launcher.submit_run(spec, run())
    assert handle.state is JobState.PENDING and handle.backend == "kubernetes"
    assert handle.run_id == run().run_id
    (rayjob,) = fake.rayjobs.values()
    (configmap,) = (c for n, c in fake.configmaps.items() if n != SETTINGS_CONFIGMAP)
    assert handle.job_id == rayjob["metadata"]["name"]
    assert configmap["metadata"]["ownerReferences"] == [
        {"apiVersion": "ray.io/v1", "kind": "RayJob", "name": handle.job_id, "uid": rayjob["metadata"]["uid"]}
    ]
    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    assert {"name": "run-ticket", "configMap": {"name": configmap["metadata"]["name"]}} in head["volumes"]
    creates = [path for method, path in fake.requests if method == "POST"]
    assert len(creates) == 2 and all("fieldValidation=Strict" in path for path in creates)
    assert creates[0].startswith("/apis/ray.io/v1/namespaces/gpt-orchestrator/rayjobs")  # the owner first


def test_status_follows_kuberay_to_success(launcher, fake, spec):
    job = launcher.submit_run(spec, run()).job_id
    assert states_until_final(launcher, job) == ["PENDING", "RUNNING", "SUCCEEDED"]
    detail = launcher.describe(job)
    assert (detail.deployment_status, detail.job_status, detail.reason) == ("Complete", "SUCCEEDED", "")
    assert detail.run_name == run().run_name and detail.ray_cluster.startswith(job)


def test_a_failed_job_says_why(launcher, fake, spec):
    fake.scenario = "fails"
    job = launcher.submit_run(spec, run()).job_id
    assert states_until_final(launcher, job)[-1] == "FAILED"
    handle = launcher.status(job)
    assert handle.error == "AppFailed: Job entrypoint command failed with exit code 1"


def test_a_cluster_that_never_gets_ready_fails_at_the_pre_running_deadline(launcher, fake, spec):
    fake.scenario = "preRunningDeadline"
    job = launcher.submit_run(spec, run()).job_id
    assert fake.rayjobs[job]["spec"]["preRunningDeadlineSeconds"] == 600
    assert states_until_final(launcher, job) == ["PENDING", "FAILED"]
    error = launcher.status(job).error
    assert error.startswith("PreRunningDeadlineExceeded: ") and "PreRunningDeadlineSeconds: 600" in error


def test_logs_follow_the_driver_while_it_runs(launcher, fake, spec):
    job = launcher.submit_run(spec, run()).job_id
    seen_while_running = []
    lines = []
    for line in launcher.logs(job, follow=True, poll_s=0):
        lines.append(line)
        if line in PROGRESS:  # what the user sees arrives before the job ends
            seen_while_running.append(fake.rayjobs[job]["status"].get("jobStatus"))
    assert seen_while_running and set(seen_while_running[:-1]) == {"RUNNING"}
    assert lines[0] == f"==> pod {job}-sub01 <==\n"
    assert lines[-1] == "run finished\n"
    assert "".join(lines).count(PROGRESS[0]) == 1, "a line was shown twice"


def test_logs_are_empty_before_any_pod_and_fall_back_to_the_head(launcher, fake, spec):
    job = launcher.submit_run(spec, run()).job_id
    assert list(launcher.logs(job)) == []  # reading advances the fake: Initializing, no pod yet
    launcher.status(job)  # Running: the submitter and the head pod exist
    fake.pods.pop(f"{job}-sub01")  # e.g. its Job was deleted: the head pod is what is left
    lines = list(launcher.logs(job))
    assert lines[0].startswith("==> pod ") and "-head-" in lines[0] and lines[1] == "Ray runtime started.\n"


def test_cancel_suspends_the_rayjob_and_the_run_reads_stopped(launcher, fake, spec):
    job = launcher.submit_run(spec, run()).job_id
    launcher.status(job)
    assert launcher.status(job).state is JobState.PENDING and fake.pods  # Running, the Ray job PENDING
    handle = launcher.cancel(job)
    assert handle.state is JobState.STOPPED
    stored = fake.rayjobs[job]
    assert (
        stored["spec"]["suspend"] is True and stored["metadata"]["annotations"]["gpt-orchestrator/cancelled"]
    )
    assert not fake.pods
    assert launcher.status(job).state is JobState.STOPPED  # Suspended for good
    assert launcher.describe(job).deployment_status == "Suspended"
    patches = [(m, p) for m, p in fake.requests if m == "PATCH"]
    assert len(patches) == 1


def test_cancel_with_delete_removes_the_rayjob_and_its_ticket(launcher, fake, spec):
    job = launcher.submit_run(spec, run()).job_id
    assert launcher.cancel(job, delete=True).state is JobState.STOPPED
    assert fake.rayjobs == {} and list(fake.configmaps) == [SETTINGS_CONFIGMAP]
    with pytest.raises(NotFoundError, match=f"no RayJob {job} in namespace gpt-orchestrator"):
        launcher.status(job)


def test_cancel_after_the_end_changes_nothing(launcher, fake, spec):
    job = launcher.submit_run(spec, run()).job_id
    states_until_final(launcher, job)
    assert launcher.cancel(job).state is JobState.SUCCEEDED
    assert not any(method in ("PATCH", "DELETE") for method, _ in fake.requests)


def test_a_queued_job_is_deleted_on_cancel_since_kueue_owns_suspend(launcher, fake):
    queued = parse_spec(SPEC.replace("worker_memory: 2Gi}", "worker_memory: 2Gi, queue: team-a}"))
    job = launcher.submit_run(queued, run()).job_id
    assert fake.rayjobs[job]["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    launcher.cancel(job)
    assert fake.rayjobs == {}


def test_list_finds_this_orchestrators_jobs_by_label(launcher, fake, spec):
    jobs = [launcher.submit_run(spec, run(n)).job_id for n in (1, 2)]
    foreign = render_job(spec, run(3)).rayjob
    foreign["metadata"]["name"] = "someone-else"
    foreign["metadata"]["labels"] = {"team": "other"}
    fake.rayjobs["someone-else"] = {**foreign, "metadata": {**foreign["metadata"], "uid": "u"}}
    handles = launcher.list()
    assert sorted(h.job_id for h in handles) == sorted(jobs)
    assert sorted(h.run_id for h in handles) == sorted(run(n).run_id for n in (1, 2))
    assert any(
        "labelSelector=app.kubernetes.io%2Fmanaged-by%3Dgpt-orchestrator" in p for _, p in fake.requests
    )


def test_rbac_refusal_says_which_role_is_missing(launcher, fake, spec):
    fake.forbidden.add(("create", "rayjobs.ray.io"))
    with pytest.raises(LaunchError) as caught:
        launcher.submit_run(spec, run())
    message = str(caught.value)
    assert 'cannot create resource "rayjobs" in API group "ray.io"' in message
    assert "Role gpt-orchestrator-submitter" in message
    assert "kubectl auth can-i create rayjobs.ray.io -n gpt-orchestrator" in message
    assert fake.rayjobs == {}


def test_a_refused_ticket_takes_its_rayjob_back(launcher, fake, spec):
    fake.forbidden.add(("create", "configmaps"))
    with pytest.raises(LaunchError, match="cannot create ConfigMap"):
        launcher.submit_run(spec, run())
    assert fake.rayjobs == {}, "a RayJob without its run ticket was left behind"


def test_reading_logs_without_permission_is_a_clear_error(launcher, fake, spec):
    job = launcher.submit_run(spec, run()).job_id
    launcher.status(job)
    fake.forbidden.add(("get", "pods/log"))
    with pytest.raises(LaunchError, match=r"cannot read the log of pod .*kubectl auth can-i get pods/log"):
        list(launcher.logs(job))


def test_the_server_checks_what_it_is_sent(launcher, fake, spec):
    """The fake refuses a broken RayJob with a 422 naming the field, as the API server would."""
    broken = render_job(spec, run()).rayjob
    broken["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] = "2"
    with pytest.raises(LaunchError, match=r"workerGroupSpecs\[0\]\.replicas"):
        launcher._client.create_rayjob(broken)
    assert fake.refused and fake.refused[0][0] == broken["metadata"]["name"]
    fake.refused.clear()


def test_a_cluster_without_kuberay_says_to_install_it(launcher, fake, spec):
    fake.serves_rayjobs = False
    with pytest.raises(
        LaunchError, match=r"does not serve ray\.io/v1 RayJobs; hint: install the KubeRay operator 1\.7\.0"
    ):
        launcher.submit_run(spec, run())


def test_wrong_credentials(server, fake, tmp_path, spec):
    config = write_kubeconfig(tmp_path / "config", server.url, NAMESPACE, token="stale")
    with pytest.raises(LaunchError, match="refused the credentials"):
        KubernetesLauncher(NAMESPACE, kubeconfig=config).list()


def test_an_api_server_that_is_down_is_a_clear_error(tmp_path):
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = write_kubeconfig(tmp_path / "config", f"http://127.0.0.1:{port}", NAMESPACE)
    with pytest.raises(LaunchError) as caught:
        KubernetesLauncher(NAMESPACE, kubeconfig=config).status("quickstart-9f1c0a2b")
    message = str(caught.value)
    assert message.startswith(
        "cannot read RayJob quickstart-9f1c0a2b: the Kubernetes API server (context fake,"
    )
    assert "did not answer" in message and "hint: is the cluster running" in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__  # no chained traceback


@pytest.mark.timeout(60)
def test_an_api_server_that_never_answers_is_given_up_on(tmp_path):
    """Accepts connections, never replies: the read timeout ends the call (pytest-timeout guards it)."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted = []
    threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True).start()
    config = write_kubeconfig(tmp_path / "config", f"http://127.0.0.1:{listener.getsockname()[1]}", NAMESPACE)
    client = KubeClient.connect(NAMESPACE, kubeconfig=config, timeout=(0.5, 0.5))
    try:
        with pytest.raises(LaunchError, match="did not answer"):
            client.list_rayjobs("a=b")
    finally:
        listener.close()


def test_address_names_namespace_and_context(kubeconfig, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", kubeconfig)
    launcher = KubernetesLauncher.from_address("gpt-orchestrator/fake")
    assert (launcher.namespace, launcher.context, launcher.address) == (
        NAMESPACE,
        "fake",
        "gpt-orchestrator/fake",
    )
    assert KubernetesLauncher.from_address("ml").address == "ml"


def test_the_spec_sent_to_the_cluster_is_the_resolved_one(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "s3cr3t-token")
    spec = parse_spec(
        SPEC + "tracking: {uri: 'http://u:${env:HF_TOKEN}@mlflow:5000'}\n", overrides=["train.epochs=3"]
    )
    text = spec.resolved_text()
    assert "s3cr3t-token" not in text and "${env:HF_TOKEN}" in text
    assert parse_spec(text).train.epochs == 3


@pytest.mark.parametrize(
    ("status", "annotations", "expected"),
    [
        ({}, {}, (JobState.PENDING, "starting the Ray cluster (not ready)")),
        (
            {"jobDeploymentStatus": "Initializing", "rayClusterStatus": {"state": "suspended"}},
            {},
            (JobState.PENDING, "starting the Ray cluster (suspended)"),
        ),
        (
            {"jobDeploymentStatus": "Running", "jobStatus": "PENDING"},
            {},
            (JobState.PENDING, "the Ray job is PENDING"),
        ),
        ({"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}, {}, (JobState.RUNNING, "")),
        ({"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}, {}, (JobState.SUCCEEDED, "")),
        (
            {"jobDeploymentStatus": "Complete", "jobStatus": "STOPPED", "message": "stopped by ray job stop"},
            {},
            (JobState.STOPPED, "stopped by ray job stop"),
        ),
        (
            {
                "jobDeploymentStatus": "Failed",
                "reason": "DeadlineExceeded",
                "message": "passed activeDeadlineSeconds",
            },
            {},
            (JobState.FAILED, "DeadlineExceeded: passed activeDeadlineSeconds"),
        ),
        (
            {
                "jobDeploymentStatus": "Failed",
                "reason": "SubmissionFailed",
                "message": "submitter failed 3 times",
            },
            {},
            (JobState.FAILED, "SubmissionFailed: submitter failed 3 times"),
        ),
        (
            {
                "jobDeploymentStatus": "ValidationFailed",
                "reason": "ValidationFailed",
                "message": "name too long",
            },
            {},
            (JobState.FAILED, "KubeRay refused the RayJob: name too long"),
        ),
        (
            {"jobDeploymentStatus": "Retrying", "failed": 1, "reason": "AppFailed", "message": "exit 1"},
            {},
            (JobState.PENDING, "retrying on a new Ray cluster after failure 1: AppFailed: exit 1"),
        ),
        (
            {"jobDeploymentStatus": "Waiting"},
            {},
            (JobState.PENDING, "waiting for a job to be submitted to the Ray cluster"),
        ),
        (
            {"jobDeploymentStatus": "Suspended"},
            {},
            (JobState.PENDING, "suspended: waiting to be admitted (Kueue) or resumed"),
        ),
        (
            {"jobDeploymentStatus": "Suspending"},
            {"gpt-orchestrator/cancelled": "true"},
            (JobState.STOPPED, "cancelled (RayJob suspended)"),
        ),
    ],
)
def test_kuberay_statuses_map_to_job_states(status, annotations, expected):
    rayjob = {
        "metadata": {"name": "x", "annotations": annotations, "labels": {RUN_ID_LABEL: "r"}},
        "status": status,
    }
    assert job_state(rayjob) == expected


def test_the_image_is_the_one_the_namespaces_overlay_names(launcher, fake, spec):
    handle = launcher.submit_run(spec, run())
    pods = fake.rayjobs[handle.job_id]["spec"]["rayClusterSpec"]
    images = {pods["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]}
    images |= {g["template"]["spec"]["containers"][0]["image"] for g in pods["workerGroupSpecs"]}
    images.add(fake.rayjobs[handle.job_id]["spec"]["submitterPodTemplate"]["spec"]["containers"][0]["image"])
    assert images == {IMAGE}


def test_without_an_image_anywhere_submit_says_where_to_set_one(launcher, fake, spec):
    fake.configmaps.pop(SETTINGS_CONFIGMAP)
    with pytest.raises(PlanError, match=r"kubernetes\.image"):
        launcher.submit_run(spec, run())
    assert fake.rayjobs == {}


def test_cancel_leaves_a_rayjob_kuberay_accepts(launcher, fake, spec):
    """Suspending needs shutdownAfterJobFinishes, which deletionRules exclude: the patch swaps them
    (the fake validates the patched RayJob as the operator would)."""
    job = launcher.submit_run(spec, run()).job_id
    launcher.status(job)
    launcher.cancel(job)
    stored = fake.rayjobs[job]["spec"]
    assert stored["suspend"] is True and stored["shutdownAfterJobFinishes"] is True
    assert "deletionStrategy" not in stored
