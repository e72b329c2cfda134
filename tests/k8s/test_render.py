"""The renderer: every shipped spec, switched to backend kubernetes, gives a RayJob and a ConfigMap
that the validator accepts, sized from ``cluster`` and bounded in time and name."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from launchers.kubernetes import render as r
from launchers.kubernetes.validate import validate_manifest
from orchestrator.errors import PlanError
from orchestrator.spec import SpecError, parse_spec
from tests.k8s.conftest import CONFIGS, RUN_ID, render_config

DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def pod_templates(rayjob: dict) -> dict[str, dict]:
    spec = rayjob["spec"]
    return {
        "head": spec["rayClusterSpec"]["headGroupSpec"]["template"],
        "workers": spec["rayClusterSpec"]["workerGroupSpecs"][0]["template"],
        "submitter": spec["submitterPodTemplate"],
    }


@pytest.mark.parametrize("config", [p.name for p in CONFIGS])
def test_every_shipped_spec_renders_to_valid_manifests(config, rendered_configs):
    spec, rendered = rendered_configs[config]
    for document in rendered.documents():
        assert validate_manifest(document) == [], document["kind"]
    job = rendered.rayjob["spec"]
    assert job["entrypoint"] == "python -m launchers.job_entry /etc/orchestrator/run.json"
    assert job["submissionMode"] == "K8sJobMode"
    assert job["shutdownAfterJobFinishes"] is False and "deletionRules" in job["deletionStrategy"]
    assert job["activeDeadlineSeconds"] == 7 * 24 * 3600 and job["preRunningDeadlineSeconds"] == 1800
    assert job["backoffLimit"] == spec.cluster.max_failures
    assert job["rayClusterSpec"]["authOptions"] == {"mode": "token"}  # a token per cluster
    name = rendered.name
    assert len(name) <= 47 and DNS_1035.match(name) and name.endswith("-" + RUN_ID[:8])


@pytest.mark.parametrize("config", [p.name for p in CONFIGS])
def test_the_worker_group_is_sized_from_the_cluster_section(config, rendered_configs):
    spec, rendered = rendered_configs[config]
    group = rendered.rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    per_pod = r.worker_sizing(spec).workers_per_pod  # a node's worth when gpus_per_node says so
    n = spec.cluster.num_workers // per_pod
    assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == n
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    requests = group["template"]["spec"]["containers"][0]["resources"]["requests"]
    assert limits == requests  # Guaranteed QoS
    assert float(limits["cpu"]) == spec.cluster.cpus_per_worker * per_pod
    gpus = int(spec.cluster.gpus_per_worker) * per_pod
    assert limits.get("nvidia.com/gpu") == (str(gpus) if gpus else None)
    head = rendered.rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-gpus"] == "0" and head["rayStartParams"]["num-cpus"] == "0"
    assert "nvidia.com/gpu" not in head["template"]["spec"]["containers"][0]["resources"]["limits"]


def test_dev_shm_is_memory_sized_for_the_workers_and_counted_in_their_limit():
    _, rendered = render_config(
        CONFIGS[0].parent / "gpt2-124m-zero2-bf16.yaml",
        "kubernetes.workers_per_pod=4",
        "kubernetes.worker_memory=16Gi",
        "kubernetes.shm_size=4Gi",
    )
    group = rendered.rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    pod = group["template"]["spec"]
    assert group["replicas"] == 2  # 8 workers, 4 per pod
    shm = next(v for v in pod["volumes"] if v["name"] == "shm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}
    container = pod["containers"][0]
    assert {"name": "shm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    limits = container["resources"]["limits"]
    assert {k: limits[k] for k in ("cpu", "memory", "nvidia.com/gpu")} == {
        "cpu": "16",
        "memory": "80Gi",
        "nvidia.com/gpu": "4",
    }
    assert group["rayStartParams"]["object-store-memory"] == str(8 * 2**30)  # half of /dev/shm


def test_worker_memory_defaults_to_the_memory_plan_with_headroom(rendered_configs):
    _, rendered = rendered_configs["quickstart.yaml"]
    pod = rendered.rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]
    # the quickstart worker needs ~622 MiB: x2 rounds up to 2 GiB (the floor), + 2Gi /dev/shm
    assert pod["containers"][0]["resources"]["limits"]["memory"] == "4Gi"


def test_every_pod_template_is_locked_down(rendered_configs):
    for _, rendered in rendered_configs.values():
        for role, template in pod_templates(rendered.rayjob).items():
            pod = template["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True, role
            assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, role
            assert pod["automountServiceAccountToken"] is False, role
            assert template["metadata"]["labels"]["app.kubernetes.io/component"] == "training", role
            tmp = next(v for v in pod["volumes"] if v["name"] == "tmp")
            assert "emptyDir" in tmp, role
            for container in pod["containers"]:
                security = container["securityContext"]
                assert (
                    security["readOnlyRootFilesystem"] is True
                    and security["allowPrivilegeEscalation"] is False
                )
                assert security["capabilities"] == {"drop": ["ALL"]}
                assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
                assert {"cpu", "memory"} <= set(container["resources"]["requests"]) & set(
                    container["resources"]["limits"]
                )


def test_mlflow_credentials_come_from_a_secret_never_inline(rendered_configs):
    _, rendered = rendered_configs["multinode-16gpu.yaml"]
    for role in ("head", "workers"):
        env = {e["name"]: e for e in pod_templates(rendered.rayjob)[role]["spec"]["containers"][0]["env"]}
        for name, key in (("MLFLOW_TRACKING_USERNAME", "username"), ("MLFLOW_TRACKING_PASSWORD", "password")):
            assert env[name] == {
                "name": name,
                "valueFrom": {"secretKeyRef": {"name": "mlflow-client", "key": key}},
            }
        uri = "http://mlflow.gpt-orchestrator-tracking.svc.cluster.local:5000"  # MLflow's own namespace
        assert env["MLFLOW_TRACKING_URI"]["value"] == uri
        assert env["ORCHESTRATOR_CACHE_DIR"]["value"] == "/cache"
        assert env["MLFLOW_DISABLE_TELEMETRY"]["value"] == env["DO_NOT_TRACK"]["value"] == "true"
    assert "password" not in json.dumps(rendered.rayjob).replace('"key": "password"', "").replace(
        "PASSWORD", ""
    )


def test_the_ticket_is_mounted_where_the_entrypoint_reads_it(rendered_configs):
    _, rendered = rendered_configs["quickstart.yaml"]
    ticket = json.loads(rendered.configmap["data"]["run.json"])
    as_run = yaml.safe_load(ticket.pop("spec"))
    assert ticket == {
        "run_id": RUN_ID,
        "run_name": "quickstart-20250101-120000",
        "checkpoint_dir": "/scratch/runs/quickstart-20250101-120000",
        "checkpoint_uri": "s3://gpt-orchestrator/checkpoints/quickstart-20250101-120000",
        "tracking_uri": "http://mlflow.gpt-orchestrator-tracking.svc.cluster.local:5000",
    }
    # the spec as written, with what the pods use instead of this machine's paths
    written = yaml.safe_load((CONFIGS[0].parent / "quickstart.yaml").read_text())
    assert as_run["checkpoint"] == {"dir": "s3://gpt-orchestrator/checkpoints", "local_dir": "/scratch/runs"}
    assert as_run["data"]["prepared"] == "s3://gpt-orchestrator/datasets"
    assert as_run["cluster"] == {**written["cluster"], "backend": "kubernetes", "address": None}
    assert {k: v for k, v in as_run.items() if k not in ("checkpoint", "data", "cluster")} == {
        k: v for k, v in written.items() if k not in ("checkpoint", "data", "cluster")
    }
    assert (
        yaml.safe_load(rendered.configmap["data"]["spec.yaml"]) == as_run
        and rendered.configmap["immutable"] is True
    )
    head = pod_templates(rendered.rayjob)["head"]["spec"]
    assert {"name": "run-ticket", "configMap": {"name": rendered.configmap["metadata"]["name"]}} in head[
        "volumes"
    ]
    mount = {"name": "run-ticket", "mountPath": "/etc/orchestrator", "readOnly": True}
    assert mount in head["containers"][0]["volumeMounts"]


def test_kubernetes_section_reaches_the_manifests():
    _, rendered = render_config(
        CONFIGS[0].parent / "gpt2-124m-zero2-bf16.yaml",
        "kubernetes.namespace=ml-team",
        "kubernetes.image=registry.example.com/ml/gpt-orchestrator:0.1.0-cuda",
        "kubernetes.queue=team-a",
        "kubernetes.priority_class=training-high",
        "kubernetes.node_selector={cloud.example.com/gpu: a100}",
        "kubernetes.tolerations=[{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]",
        "kubernetes.active_deadline_seconds=null",
        "kubernetes.data_claim=corpus",
        "kubernetes.mlflow_uri=http://tracking.mlops:5000",
        "cluster.resources_per_worker={accelerator_a100: 1}",
        "cluster.label_selector={ray.io/market-type: on-demand}",
    )
    assert [validate_manifest(d) for d in rendered.documents()] == [[], []]
    job = rendered.rayjob
    assert job["metadata"]["namespace"] == rendered.configmap["metadata"]["namespace"] == "ml-team"
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert "activeDeadlineSeconds" not in job["spec"]
    group = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    assert group["resources"] == {"accelerator_a100": "8"} and group["labels"] == {  # 8 workers a pod
        "ray.io/market-type": "on-demand"
    }
    workers, head = group["template"]["spec"], pod_templates(job)["head"]["spec"]
    assert workers["nodeSelector"] == {"cloud.example.com/gpu": "a100"} and "nodeSelector" not in head
    assert workers["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert workers["priorityClassName"] == head["priorityClassName"] == "training-high"
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "corpus", "readOnly": True}} in workers[
        "volumes"
    ]
    image = workers["containers"][0]["image"]
    assert image == head["containers"][0]["image"] == "registry.example.com/ml/gpt-orchestrator:0.1.0-cuda"
    assert json.loads(rendered.configmap["data"]["run.json"])["tracking_uri"] == "http://tracking.mlops:5000"


def test_the_image_defaults_to_the_variant_the_spec_needs(rendered_configs):
    images = {
        c: pod_templates(j.rayjob)["workers"]["spec"]["containers"][0]["image"]
        for c, (_, j) in rendered_configs.items()
    }
    assert images["quickstart.yaml"] == "gpt-orchestrator:0.1.0-cpu"
    assert images["gpt2-124m-zero2-bf16.yaml"] == "gpt-orchestrator:0.1.0-cuda"


@pytest.mark.parametrize(
    ("run_name", "attempt", "expected"),
    [
        ("quickstart-20250101-120000", 1, "quickstart-20250101-120000-9f1c0a2b"),
        ("quickstart-20250101-120000", 3, "quickstart-20250101-120000-9f1c0a2b-r3"),
        ("A_Very.Long_Run-Name" * 4, 1, "a-very-long-run-namea-very-long-run-na-9f1c0a2b"),
        ("7b_model", 1, "run-7b-model-9f1c0a2b"),
        ("___", 2, "run-9f1c0a2b-r2"),
    ],
)
def test_rayjob_names_fit_kuberay(run_name, attempt, expected):
    name = r.rayjob_name(run_name, RUN_ID, attempt)
    assert name == expected and len(name) <= 47 and DNS_1035.match(name)


def test_specs_that_cannot_run_on_kubernetes_say_how_to_fix_them():
    with pytest.raises(PlanError) as caught:
        render_config(
            CONFIGS[0].parent / "quickstart.yaml",
            "kubernetes.workers_per_pod=3",
            "cluster.gpus_per_worker=0.5",
            "deepspeed.precision=bf16",
        )
    message = str(caught.value)
    assert (
        "kubernetes.workers_per_pod (3) must divide cluster.num_workers (2); hint: workers_per_pod: 2"
        in message
    )
    assert "a worker pod would need 1.5 GPUs" in message


def test_secrets_the_spec_refers_to_must_reach_the_pods(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf-token-value")
    text = (
        "name: t\ncluster: {backend: kubernetes}\n"
        "data: {corpus: files, files: ['/data/${env:HF_TOKEN}.txt']}\nkubernetes: {data_claim: corpus}\n"
    )
    run = r.RunIdentity(RUN_ID, "t-1", text)
    with pytest.raises(
        PlanError, match=r"\$\{env:HF_TOKEN\}, which the pods would not have; hint: kubernetes.secret_env"
    ):
        r.render_job(parse_spec(text), run)
    spec = parse_spec(
        text.replace("{data_claim: corpus}", "{data_claim: corpus, secret_env: {HF_TOKEN: hf/token}}")
    )
    env = r.render_job(spec, run).rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"][
        "containers"
    ][0]["env"]
    assert {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}} in env


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        (
            "cluster: {backend: kubernetes, address: auto}",
            "cluster.address: backend kubernetes creates its own Ray",
        ),
        (
            "kubernetes: {tolerations: [{operator: Exists, value: x}]}",
            "kubernetes.tolerations.0.value: operator Exists",
        ),
        (
            "kubernetes: {checkpoint_claim: shared, checkpoint_mount_path: /tmp/ckpt}",
            "kubernetes.checkpoint_mount_path: /tmp/ckpt overlaps /tmp",
        ),
        ("kubernetes: {namespace: ML}", "kubernetes.namespace: String should match pattern"),
        ("kubernetes: {head_memory: 8GB}", "kubernetes.head_memory: String should match pattern"),
        (
            "kubernetes: {pre_running_deadline_seconds: 0}",
            "kubernetes.pre_running_deadline_seconds: Input should be",
        ),
        (
            "kubernetes: {secret_env: {HF_TOKEN: hf}}",
            "kubernetes.secret_env.HF_TOKEN: 'hf' is not <secret name>/<key>",
        ),
    ],
)
def test_the_kubernetes_section_is_checked_at_load(section, problem):
    with pytest.raises(SpecError) as caught:
        parse_spec(f"name: t\n{section}\n")
    assert problem in str(caught.value)


def test_rendered_yaml_reads_back_as_the_same_objects(rendered_configs):
    import yaml

    _, rendered = rendered_configs["gpt-1b-zero3-offload.yaml"]
    text = rendered.to_yaml()
    assert list(yaml.safe_load_all(text)) == rendered.documents()
    assert "&id" not in text and "spec.yaml: |" in text


def test_a_preview_renders_before_any_mlflow_run_exists(rendered_configs):
    spec, _ = rendered_configs["quickstart.yaml"]
    preview = r.render_job(spec, r.preview_identity(spec, "name: quickstart\n"))
    assert [validate_manifest(d) for d in preview.documents()] == [[], []]
    assert re.fullmatch(r"quickstart-\d{8}-\d{6}-00000000", preview.name)
