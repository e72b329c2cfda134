"""The kustomize overlays, built by the real `kubectl kustomize`, checked as an API server would and
for what they promise: locked-down pods, NetworkPolicy ports that are the ports served, namespace-only
RBAC that covers what the launcher does, Secrets only from files the user generates, and an MLflow
server whose host check admits the URI the rendered jobs use. (tests/k8s/test_security.py evaluates
the NetworkPolicies connection by connection, and the admission policy.)"""

from __future__ import annotations

import base64
import configparser
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from launchers.kubernetes.render import tracking_uri_in_cluster
from launchers.kubernetes.validate import validate_builtin, validate_custom_resource
from tests.conftest import REPO
from tests.k8s.conftest import OVERLAYS, build, render_config
from tests.launchers.kubernetes.fake_apiserver import access_of_every_launcher_call

pytestmark = pytest.mark.k8s

NAMESPACES = {"dev": "gpt-orchestrator", "prod": "gpt-orchestrator-prod"}
TRACKING = {overlay: f"{namespace}-tracking" for overlay, namespace in NAMESPACES.items()}
TRAINING = {"ray-head", "ray-workers", "job-head", "job-workers", "job-submitter"}
SECRET_ENV = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|STORE_URI|ROOT_USER")


def objects(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict], kind: str, name: str) -> dict:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def settings(docs: list[dict]) -> dict[str, str]:
    return one(docs, "ConfigMap", "gpt-orchestrator-settings")["data"]


@pytest.fixture(scope="module")
def rendered_jobs(built_overlays):
    """The RayJob a run would create in each overlay's namespace, with the namespace's image."""
    config = REPO / "configs" / "quickstart.yaml"
    return {
        overlay: render_config(
            config,
            f"kubernetes.namespace={namespace}",
            f"kubernetes.image={settings(built_overlays[overlay])['training-image']}",
        )[1]
        for overlay, namespace in NAMESPACES.items()
    }


def pod_templates(docs: list[dict], rayjob: dict | None = None) -> dict[str, dict]:
    """workload name -> pod template, for every pod the overlay (and a rendered RayJob) would run."""
    templates = {}
    for kind in ("Deployment", "StatefulSet", "Job"):
        for workload in objects(docs, kind):
            templates[workload["metadata"]["name"]] = workload["spec"]["template"]
    for cluster in objects(docs, "RayCluster"):
        templates["ray-head"] = cluster["spec"]["headGroupSpec"]["template"]
        templates["ray-workers"] = cluster["spec"]["workerGroupSpecs"][0]["template"]
    if rayjob is not None:
        spec = rayjob["spec"]
        templates["job-head"] = spec["rayClusterSpec"]["headGroupSpec"]["template"]
        templates["job-workers"] = spec["rayClusterSpec"]["workerGroupSpecs"][0]["template"]
        templates["job-submitter"] = spec["submitterPodTemplate"]
    return templates


def test_every_overlay_builds(built_overlays):
    for overlay, docs in built_overlays.items():
        kinds = {d["kind"] for d in docs}
        assert {"Namespace", "Deployment", "Service", "NetworkPolicy", "Role", "RayCluster"} <= kinds, overlay
        assert {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"} <= kinds, overlay
    for part in ("training", "tracking", "admission"):
        assert build(REPO / "k8s" / "base" / part)  # each part of the base alone builds too


def test_every_builtin_object_passes_strict_validation(built_overlays):
    for overlay, docs in built_overlays.items():
        for doc in docs:
            if not doc["apiVersion"].startswith("ray.io/"):
                assert validate_builtin(doc) == [], f"{overlay}: {doc['kind']}/{doc['metadata']['name']}"


def test_kubernetes_validate_accepts_the_overlays(tmp_path, k8s_tree):
    """The command-line tool too (it skips the RayCluster: a custom resource, checked below)."""
    tool = Path(sys.executable).with_name("kubernetes-validate")
    for overlay, directory in OVERLAYS.items():
        built = tmp_path / f"{overlay}.yaml"
        built.write_text(build(k8s_tree / directory.relative_to(REPO / "k8s")))
        done = subprocess.run(
            [str(tool), "--strict", "-k", "1.32", str(built)], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "ERROR" not in done.stdout and "passed" in done.stdout


def test_every_custom_resource_passes_the_crd_and_the_operator(built_overlays, rendered_jobs):
    for overlay, docs in built_overlays.items():
        customs = [d for d in docs if d["apiVersion"].startswith("ray.io/")] + [rendered_jobs[overlay].rayjob]
        assert len(customs) == 2
        for doc in customs:
            assert validate_custom_resource(doc) == [], f"{overlay}: {doc['kind']}/{doc['metadata']['name']}"


def test_two_namespaces_with_pod_security_restricted(built_overlays):
    for overlay, docs in built_overlays.items():
        names = {n["metadata"]["name"]: n for n in objects(docs, "Namespace")}
        assert set(names) == {NAMESPACES[overlay], TRACKING[overlay]}
        for namespace in names.values():
            assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
        assert names[NAMESPACES[overlay]]["metadata"]["labels"]["gpt-orchestrator/training"] == "true"
        cluster_scoped = {"Namespace", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
        others = [d for d in docs if d["kind"] not in cluster_scoped]
        assert {d["metadata"].get("namespace") for d in others} == set(names)
        assert settings(docs)["tracking-namespace"] == TRACKING[overlay]
    assert NAMESPACES["dev"] == "gpt-orchestrator"  # the spec's default: dev works without --set


def test_the_image_is_one_setting_of_the_overlay(built_overlays, k8s_tree):
    """The overlay's images: entry names the training image; kustomize copies it from the RayCluster
    into the settings ConfigMap that submit and the admission policy read."""
    import yaml

    for overlay, docs in built_overlays.items():
        (entry,) = yaml.safe_load(
            (k8s_tree / "overlays" / overlay / "training" / "kustomization.yaml").read_text()
        )["images"]
        image = f"{entry.get('newName', entry['name'])}:{entry['newTag']}"
        cluster = one(docs, "RayCluster", "ray")["spec"]
        pods = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
        assert {g["template"]["spec"]["containers"][0]["image"] for g in pods} == {image}
        assert settings(docs)["training-image"] == image


def test_every_pod_is_locked_down_and_sized(built_overlays, rendered_jobs):
    for overlay, docs in built_overlays.items():
        for workload, template in pod_templates(docs, rendered_jobs[overlay].rayjob).items():
            where = f"{overlay}/{workload}"
            pod = template["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True, where
            assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
            assert pod.get("automountServiceAccountToken") is False, where
            tmp = {v["name"]: v for v in pod["volumes"]}.get("tmp")
            assert tmp is not None and "emptyDir" in tmp and "sizeLimit" in tmp["emptyDir"], where
            for container in pod.get("initContainers", []) + pod["containers"]:
                security = container["securityContext"]
                assert security["allowPrivilegeEscalation"] is False, f"{where}/{container['name']}"
                assert security["readOnlyRootFilesystem"] is True, f"{where}/{container['name']}"
                assert security["capabilities"] == {"drop": ["ALL"]}, f"{where}/{container['name']}"
                assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"], where
                resources = container["resources"]
                assert {"cpu", "memory"} <= set(resources["requests"]) & set(resources["limits"]), where


def test_network_policy_ports_are_the_ports_served(built_overlays):
    docs = built_overlays["dev"]
    served = {
        name: {p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
        for name, template in pod_templates(docs).items()
    }
    for name in ("mlflow", "postgres", "seaweedfs"):
        ports = {
            p["port"] for rule in one(docs, "NetworkPolicy", name)["spec"]["ingress"] for p in rule["ports"]
        }
        assert ports == served[name], name


def test_rbac_is_namespaced_and_covers_what_the_launcher_does(built_overlays, tmp_path):
    used = access_of_every_launcher_call(tmp_path)
    assert ("patch", "rayjobs.ray.io") in used and ("get", "pods/log") in used
    for overlay, docs in built_overlays.items():
        assert not objects(docs, "ClusterRole") and not objects(docs, "ClusterRoleBinding"), overlay
        assert {r["metadata"]["namespace"] for r in objects(docs, "Role")} == {NAMESPACES[overlay]}
        role = one(docs, "Role", "gpt-orchestrator-submitter")
        granted = set()
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], overlay
            for resource in rule["resources"]:
                name = f"{resource}.{rule['apiGroups'][0]}" if rule["apiGroups"][0] else resource
                granted |= {(verb, name) for verb in rule["verbs"]}
        assert used <= granted, f"{overlay}: the Role lacks {used - granted}"
        assert {v for v, r in granted if r == "rayjobs.ray.io"} == {
            "create",
            "get",
            "list",
            "watch",
            "delete",
            "patch",
        }
        assert {r for _, r in granted} == {"rayjobs.ray.io", "configmaps", "pods", "pods/log"}
        binding = one(docs, "RoleBinding", "gpt-orchestrator-submitter")
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": role["metadata"]["name"],
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "gpt-orchestrator-submitter", "namespace": NAMESPACES[overlay]}
        ]


def test_secrets_come_only_from_files_the_user_generates(built_overlays):
    import yaml

    assert objects(built_overlays["prod"], "Secret") == []
    manifests = [p for p in (REPO / "k8s").rglob("*.yaml") if "crds" not in p.parts]
    assert not [p for p in manifests if re.search(r"^kind:\s*Secret\s*$", p.read_text(), re.M)]
    generators = sorted(
        p for p in (REPO / "k8s").rglob("kustomization.yaml") if "secretGenerator" in p.read_text()
    )
    assert generators == [
        OVERLAYS["dev"] / "tracking" / "kustomization.yaml",
        OVERLAYS["dev"] / "training" / "kustomization.yaml",
    ]
    made = set()
    for generator in generators:
        for entry in yaml.safe_load(generator.read_text())["secretGenerator"]:
            made.add(entry["name"])
            for source in entry.get("envs", []) + [f.split("=")[-1] for f in entry.get("files", [])]:
                path = generator.parent / source
                assert source.startswith("secrets/"), source
                assert _ignored(path), f"{path} would be committed"
    assert made == {s["metadata"]["name"] for s in objects(built_overlays["dev"], "Secret")}


def _ignored(path: Path) -> bool:
    done = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=REPO)
    return done.returncode == 0


def test_no_credential_is_written_into_a_pod(built_overlays, rendered_jobs):
    for overlay, docs in built_overlays.items():
        for workload, template in pod_templates(docs, rendered_jobs[overlay].rayjob).items():
            pod = template["spec"]
            for container in pod.get("initContainers", []) + pod["containers"]:
                for env in container.get("env", []):
                    where = f"{overlay}/{workload}/{container['name']}: {env['name']}"
                    if SECRET_ENV.search(env["name"]):
                        assert "secretKeyRef" in env.get("valueFrom", {}), where
                    assert not re.search(r"://[^/\s]*:[^/\s]*@", env.get("value", "")), where
                assert not any(re.search(r"://[^/\s]*:[^/\s]*@", a) for a in container.get("args", [])), (
                    workload
                )


def _decoded(secret: dict) -> dict[str, str]:
    return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}


def test_every_secret_a_pod_needs_exists_in_its_namespace(built_overlays, rendered_jobs):
    docs = built_overlays["dev"]
    secrets = {
        (s["metadata"]["namespace"], s["metadata"]["name"]): _decoded(s) for s in objects(docs, "Secret")
    }
    namespace_of = {}
    for kind in ("Deployment", "StatefulSet", "Job", "RayCluster"):
        for workload in objects(docs, kind):
            namespace_of[workload["metadata"]["name"]] = workload["metadata"]["namespace"]
    for workload, template in pod_templates(docs, rendered_jobs["dev"].rayjob).items():
        namespace = namespace_of.get(workload, "gpt-orchestrator")  # ray-*, job-*: the training namespace
        pod = template["spec"]
        for container in pod.get("initContainers", []) + pod["containers"]:
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref and not ref.get("optional"):
                    assert ref["key"] in secrets.get((namespace, ref["name"]), {}), f"{workload}: {ref}"
        for volume in pod["volumes"]:
            if "secret" in volume:
                items = volume["secret"].get("items")
                keys = [item["key"] for item in items] if items else []
                assert set(keys) <= set(secrets[(namespace, volume["secret"]["secretName"])]), workload
    for cluster in [
        one(docs, "RayCluster", "ray")["spec"],
        rendered_jobs["dev"].rayjob["spec"]["rayClusterSpec"],
    ]:
        assert cluster["authOptions"] == {"mode": "token"}  # KubeRay makes each cluster's token


def test_the_dev_secrets_work_together(built_overlays):
    import json

    docs = built_overlays["dev"]
    secrets = {s["metadata"]["name"]: _decoded(s) for s in objects(docs, "Secret")}
    db, auth = secrets["mlflow-db"], secrets["mlflow-auth"]
    uri = db["backend-store-uri"]
    assert (
        uri.startswith("postgresql+psycopg2://mlflow:")
        and f":{db['postgres-password']}@postgres:5432/mlflow" in uri
    )
    ini = configparser.ConfigParser()
    ini.read_string(db["basic_auth.ini"])
    assert ini["mlflow"]["database_uri"] == uri and "admin_password" not in ini["mlflow"]
    assert len(auth["admin-password"]) >= 12  # MLflow refuses shorter admin passwords
    assert secrets["mlflow-client"] == {"username": "admin", "password": auth["admin-password"]}
    # SeaweedFS's identities: each Secret's keys, scoped to its own bucket
    identities = {i["name"]: i for i in json.loads(secrets["s3-config"]["s3.json"])["identities"]}
    for name, secret, bucket in (
        ("mlflow", "mlflow-artifacts", "mlflow-artifacts"),
        ("training", "object-store", "gpt-orchestrator"),
    ):
        keys = secrets[secret]
        assert identities[name]["credentials"] == [
            {"accessKey": keys["AWS_ACCESS_KEY_ID"], "secretKey": keys["AWS_SECRET_ACCESS_KEY"]}
        ]
        assert {a.split(":")[1] for a in identities[name]["actions"]} == {bucket}
    store = secrets["object-store"]["AWS_ENDPOINT_URL"]
    assert store == "http://seaweedfs.gpt-orchestrator-tracking.svc.cluster.local:8333"
    assert one(docs, "Service", "seaweedfs")["spec"]["ports"][0]["port"] == 8333
    job = one(docs, "Job", "s3-buckets")["spec"]["template"]["spec"]["containers"][0]
    buckets = next(e["value"] for e in job["env"] if e["name"] == "BUCKETS").split()
    assert set(buckets) == {"mlflow-artifacts", "gpt-orchestrator"}


def _expanded(arg: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env[m.group(1)], arg)


def test_the_tracking_server_is_configured_as_documented(built_overlays):
    for overlay, docs in built_overlays.items():
        pod = one(docs, "Deployment", "mlflow")["spec"]["template"]["spec"]
        (server,) = pod["containers"]
        env = {e["name"]: e.get("value") for e in server["env"]}
        env["POD_NAMESPACE"] = TRACKING[overlay]  # what the downward API gives the pod
        args = [_expanded(a, env) for a in server["args"]]
        assert server["command"] == ["mlflow", "server"]
        assert {"--app-name=basic-auth", "--serve-artifacts"} <= set(args), overlay
        destination = next(a for a in args if a.startswith("--artifacts-destination="))
        assert destination.startswith("--artifacts-destination=s3://"), overlay
        upgrade = next(c for c in pod["initContainers"] if c["name"] == "db-upgrade")
        assert "mlflow db upgrade" in " ".join(upgrade["command"])
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert server[probe]["httpGet"]["path"] == "/health", f"{overlay}: {probe}"
        assert env["MLFLOW_AUTH_CONFIG_PATH"] == "/etc/mlflow-auth/basic_auth.ini"


def test_mlflows_host_check_admits_the_jobs_and_the_ingress(built_overlays):
    """MLflow 3 answers 403 to a Host header it does not know: the in-cluster URI the renderer gives
    the pods, `kubectl port-forward` (localhost) and the ingress host must all be allowed."""
    for overlay, docs in built_overlays.items():
        (server,) = one(docs, "Deployment", "mlflow")["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in server["env"]} | {"POD_NAMESPACE": TRACKING[overlay]}
        flag = next(a for a in server["args"] if a.startswith("--allowed-hosts="))
        allowed = _expanded(flag, env).removeprefix("--allowed-hosts=").split(",")
        spec, _ = render_config(
            REPO / "configs" / "quickstart.yaml", f"kubernetes.namespace={NAMESPACES[overlay]}"
        )
        host = tracking_uri_in_cluster(spec).removeprefix("http://")
        assert host in allowed and "localhost:*" in allowed, overlay
        service = one(docs, "Service", "mlflow")
        assert service["spec"]["ports"][0]["port"] == int(host.rsplit(":", 1)[1])
        for ingress in objects(docs, "Ingress"):
            rule_host = ingress["spec"]["rules"][0]["host"]
            assert rule_host in allowed
            assert ingress["spec"]["tls"] == [{"hosts": [rule_host], "secretName": "mlflow-tls"}]
    assert (
        objects(built_overlays["dev"], "Ingress") == []
        and len(objects(built_overlays["prod"], "Ingress")) == 1
    )


def test_prod_has_gpu_workers_with_node_local_disks(built_overlays):
    prod, dev = built_overlays["prod"], built_overlays["dev"]
    workers = one(prod, "RayCluster", "ray")["spec"]["workerGroupSpecs"][0]["template"]["spec"]
    limits = workers["containers"][0]["resources"]["limits"]
    assert int(limits["nvidia.com/gpu"]) >= 1 and workers["containers"][0]["image"].endswith("-cuda")
    disks = {v["name"]: v["emptyDir"]["sizeLimit"] for v in workers["volumes"] if "emptyDir" in v}
    assert disks["scratch"] == disks["cache"] == "500Gi"
    assert limits["ephemeral-storage"] == "1101Gi"  # tmp 100Gi + scratch + cache + 1Gi of logs
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in workers["tolerations"]
    assert not objects(prod, "PersistentVolumeClaim")  # checkpoints go to the object store
    dev_workers = one(dev, "RayCluster", "ray")["spec"]["workerGroupSpecs"][0]["template"]["spec"]
    assert "nvidia.com/gpu" not in dev_workers["containers"][0]["resources"]["limits"]


def test_the_standing_ray_cluster_runs_the_images_ray(built_overlays):
    """KubeRay needs the image's Ray version (token auth, probes); the image installs this project's."""
    for docs in built_overlays.values():
        assert one(docs, "RayCluster", "ray")["spec"]["rayVersion"] == version("ray")


def test_what_a_rendered_job_refers_to_exists_in_each_overlay(built_overlays, rendered_jobs):
    for overlay, docs in built_overlays.items():
        here = [d for d in docs if d["metadata"].get("namespace") == NAMESPACES[overlay]]
        accounts = {a["metadata"]["name"] for a in objects(here, "ServiceAccount")}
        claims = {c["metadata"]["name"] for c in objects(here, "PersistentVolumeClaim")}
        for workload, template in pod_templates([], rendered_jobs[overlay].rayjob).items():
            pod = template["spec"]
            assert pod["serviceAccountName"] in accounts, f"{overlay}/{workload}"
            for volume in pod["volumes"]:
                if "persistentVolumeClaim" in volume:
                    assert volume["persistentVolumeClaim"]["claimName"] in claims, f"{overlay}/{workload}"
