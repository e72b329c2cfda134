"""The namespace stays closed, as built by `kubectl kustomize` from each overlay:

- MLflow, its database and its object store live in a namespace of their own, away from whoever may
  create RayJobs;
- a ValidatingAdmissionPolicy limits what a RayJob (or RayCluster) in a training namespace may mount,
  which images and ServiceAccount it may run; its CEL is evaluated here with cel-python against the
  rendered RayJobs and against hostile ones;
- egress is denied by default; what the NetworkPolicies allow is evaluated connection by connection
  (DNS, MLflow, the object store, pod to pod inside the training namespace; never the cloud metadata
  address), by the rules of NetworkPolicy, not by reading their text;
- no overlay commits a credential, every cluster gets a Ray token of its own, every image has an
  exact tag, and the prod overlay shows how to pin digests.
"""

from __future__ import annotations

import copy
import ipaddress
import subprocess
from dataclasses import dataclass, field

import pytest
import yaml

from tests.conftest import REPO
from tests.k8s.conftest import CONFIGS, kubectl, render_config

TRAINING = {"dev": "gpt-orchestrator", "prod": "gpt-orchestrator-prod"}
TRACKING = {name: f"{ns}-tracking" for name, ns in TRAINING.items()}
METADATA = "169.254.169.254"


def objects(built, kind: str, namespace: str | None = None) -> list[dict]:
    return [
        o
        for o in built
        if o["kind"] == kind and (namespace is None or o["metadata"].get("namespace") == namespace)
    ]


# --- MLflow and its stores in their own namespace -------------------------------------------------


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_mlflow_and_its_stores_live_apart_from_the_training_namespace(overlay, built_overlays):
    built = built_overlays[overlay]
    training, tracking = TRAINING[overlay], TRACKING[overlay]
    namespaces = {o["metadata"]["name"]: o for o in objects(built, "Namespace")}
    assert set(namespaces) == {training, tracking}
    for name in namespaces.values():
        assert name["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    workloads = [o for o in built if o["kind"] in ("Deployment", "StatefulSet", "Job")]
    assert workloads and all(o["metadata"]["namespace"] == tracking for o in workloads)
    secrets_in_training = {o["metadata"]["name"] for o in objects(built, "Secret", training)}
    assert not secrets_in_training & {"mlflow-db", "mlflow-auth", "mlflow-artifacts", "s3-config"}
    assert objects(built, "RayCluster", training) and objects(built, "Role", training)


# --- the admission policy ---------------------------------------------------------------------------


@dataclass
class Policy:
    policy: dict
    binding: dict
    params: dict

    def denials(self, obj: dict, namespace_labels: dict) -> list[str]:
        """The messages of the validations that deny ``obj``, as the API server evaluates them."""
        import celpy

        selector = self.binding["spec"]["matchResources"]["namespaceSelector"]["matchLabels"]
        if not all(namespace_labels.get(k) == v for k, v in selector.items()):
            return []
        rules = self.policy["spec"]["matchConstraints"]["resourceRules"]
        kinds = {resource for rule in rules for resource in rule["resources"]}
        if obj["kind"].lower() + "s" not in kinds:
            return []
        env = celpy.Environment()
        activation = {"object": celpy.json_to_cel(obj), "params": celpy.json_to_cel(self.params)}
        variables = {}
        for variable in self.policy["spec"].get("variables", []):
            activation["variables"] = (
                celpy.json_to_cel(variables) if not variables else variables_map(variables)
            )
            value = env.program(env.compile(variable["expression"])).evaluate(activation)
            variables[variable["name"]] = value
        activation["variables"] = variables_map(variables)
        denied = []
        for validation in self.policy["spec"]["validations"]:
            result = env.program(env.compile(validation["expression"])).evaluate(activation)
            if not (isinstance(result, celpy.celtypes.BoolType) and bool(result)):
                denied.append(validation["message"])
        return denied


def variables_map(values: dict):
    import celpy

    return celpy.celtypes.MapType({celpy.celtypes.StringType(k): v for k, v in values.items()})


@pytest.fixture(scope="module", params=["dev", "prod"])
def admission(request, built_overlays):
    built = built_overlays[request.param]
    (policy,) = objects(built, "ValidatingAdmissionPolicy")
    (binding,) = objects(built, "ValidatingAdmissionPolicyBinding")
    assert policy["apiVersion"] == "admissionregistration.k8s.io/v1"  # GA from Kubernetes 1.30
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert policy["spec"]["failurePolicy"] == "Fail"
    name = binding["spec"]["paramRef"]["name"]
    (params,) = [
        o for o in objects(built, "ConfigMap", TRAINING[request.param]) if o["metadata"]["name"] == name
    ]
    (namespace,) = [
        o for o in objects(built, "Namespace") if o["metadata"]["name"] == TRAINING[request.param]
    ]
    image = next(
        o for o in objects(built, "ConfigMap", TRAINING[request.param]) if "training-image" in o["data"]
    )
    return (
        Policy(policy, binding, params),
        namespace["metadata"]["labels"],
        image["data"]["training-image"],
        built,
    )


def rendered_rayjob(image: str, config: str = "quickstart.yaml") -> dict:
    _, rendered = render_config(CONFIGS[0].parent / config, f"kubernetes.image={image}")
    return copy.deepcopy(rendered.rayjob)


def test_the_rendered_rayjobs_and_the_standing_cluster_are_admitted(admission):
    policy, labels, image, built = admission
    for config in CONFIGS:
        assert policy.denials(rendered_rayjob(image, config.name), labels) == [], config.name
    for cluster in objects(built, "RayCluster"):
        assert policy.denials(cluster, labels) == []


def pod(rayjob: dict, where: str) -> dict:
    spec = rayjob["spec"]
    if where == "submitter":
        return spec["submitterPodTemplate"]["spec"]
    if where == "head":
        return spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    return spec["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]


HOSTILE = {
    "a hostPath volume": lambda j: pod(j, "workers")["volumes"].append(
        {"name": "h", "hostPath": {"path": "/"}}
    ),
    "a Secret volume": lambda j: pod(j, "head")["volumes"].append(
        {"name": "s", "secret": {"secretName": "x"}}
    ),
    "a projected token": lambda j: (
        pod(j, "submitter")
        .setdefault("volumes", [])
        .append({"name": "t", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}})
    ),
    "another image": lambda j: pod(j, "workers")["containers"][0].update(image="evil.example.com/miner:1"),
    "a look-alike image": lambda j: pod(j, "head")["containers"][0].update(
        image=pod(j, "head")["containers"][0]["image"].split(":")[0] + "-evil:1"
    ),
    "an init container's image": lambda j: (
        pod(j, "workers").setdefault("initContainers", []).append({"name": "i", "image": "busybox:1.37"})
    ),
    "the submitter's ServiceAccount": lambda j: pod(j, "head").update(
        serviceAccountName="gpt-orchestrator-submitter"
    ),
    "a mounted API token": lambda j: pod(j, "workers").update(automountServiceAccountToken=True),
    "the host's network": lambda j: pod(j, "workers").update(hostNetwork=True),
    "a privileged container": lambda j: pod(j, "workers")["containers"][0]["securityContext"].update(
        privileged=True
    ),
    "a runtime environment": lambda j: j["spec"].update(runtimeEnvYAML="pip: [evil]"),
}


@pytest.mark.parametrize("attack", sorted(HOSTILE))
def test_a_hostile_rayjob_is_denied(admission, attack):
    policy, labels, image, _ = admission
    rayjob = rendered_rayjob(image)
    HOSTILE[attack](rayjob)
    assert policy.denials(rayjob, labels), attack


def test_the_policy_binds_to_training_namespaces_only(admission):
    policy, _, image, _ = admission
    rayjob = rendered_rayjob(image)
    HOSTILE["a hostPath volume"](rayjob)
    assert policy.denials(rayjob, {"kubernetes.io/metadata.name": "elsewhere"}) == []
    assert policy.binding["spec"]["paramRef"]["parameterNotFoundAction"] == "Deny"


# --- egress: denied by default, allowed where the job needs it --------------------------------------


@dataclass(frozen=True)
class Peer:
    namespace: str
    labels: dict = field(default_factory=dict)
    ip: str = "10.0.0.1"


def _selects(selector: dict | None, labels: dict) -> bool:
    if selector is None:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, op, values = expression["key"], expression["operator"], expression.get("values", [])
        if (op == "In" and labels.get(key) not in values) or (op == "NotIn" and labels.get(key) in values):
            return False
        if (op == "Exists" and key not in labels) or (op == "DoesNotExist" and key in labels):
            return False
    return True


def _peer_matches(rule_peer: dict, peer: Peer, own_namespace: str, namespaces: dict) -> bool:
    if "ipBlock" in rule_peer:
        block = rule_peer["ipBlock"]
        address = ipaddress.ip_address(peer.ip)
        inside = address in ipaddress.ip_network(block["cidr"])
        return inside and not any(address in ipaddress.ip_network(e) for e in block.get("except", []))
    if "namespaceSelector" in rule_peer:
        if not _selects(rule_peer["namespaceSelector"], namespaces.get(peer.namespace, {})):
            return False
    elif peer.namespace != own_namespace:
        return False
    return _selects(rule_peer.get("podSelector"), peer.labels)


def _port_matches(ports: list | None, port: int, protocol: str) -> bool:
    return not ports or any(
        p.get("protocol", "TCP") == protocol and p.get("port") in (None, port) for p in ports
    )


def allowed(policies: list[dict], namespaces: dict, src: Peer, dst: Peer, port: int, protocol="TCP") -> bool:
    """Whether NetworkPolicies let ``src`` open ``port`` on ``dst``: egress of the source's namespace
    and ingress of the destination's must both allow it (a pod no policy selects is open)."""

    def direction(pod: Peer, other: Peer, kind: str, peers_key: str) -> bool:
        selecting = [
            p
            for p in policies
            if p["metadata"]["namespace"] == pod.namespace
            and kind in p["spec"].get("policyTypes", ["Ingress"])
            and _selects(p["spec"]["podSelector"], pod.labels)
        ]
        if not selecting:
            return True
        for p in selecting:
            for rule in p["spec"].get(kind.lower(), []) or []:
                peers = rule.get(peers_key)
                if (
                    peers is None or any(_peer_matches(x, other, pod.namespace, namespaces) for x in peers)
                ) and (_port_matches(rule.get("ports"), port, protocol)):
                    return True
        return False

    egress_ok = src.ip == "external" or direction(src, dst, "Egress", "to")
    ingress_ok = dst.namespace == "" or direction(dst, src, "Ingress", "from")
    return egress_ok and ingress_ok


@pytest.fixture(scope="module", params=["dev", "prod"])
def network(request, built_overlays):
    built = built_overlays[request.param]
    # The API server labels every namespace with its name (kubernetes.io/metadata.name).
    namespaces = {
        o["metadata"]["name"]: {
            **o["metadata"].get("labels", {}),
            "kubernetes.io/metadata.name": o["metadata"]["name"],
        }
        for o in objects(built, "Namespace")
    }
    namespaces["kube-system"] = {"kubernetes.io/metadata.name": "kube-system"}
    namespaces["kuberay-system"] = {"kubernetes.io/metadata.name": "kuberay-system"}
    training, tracking = TRAINING[request.param], TRACKING[request.param]
    part = {"app.kubernetes.io/part-of": "gpt-orchestrator"}
    peers = {
        "training": Peer(training, {**part, "app.kubernetes.io/component": "training"}, "10.1.0.5"),
        "other-training": Peer(training, {**part, "app.kubernetes.io/component": "training"}, "10.1.0.6"),
        "mlflow": Peer(tracking, {**part, "app.kubernetes.io/name": "mlflow"}, "10.2.0.5"),
        "postgres": Peer(tracking, {**part, "app.kubernetes.io/name": "postgres"}, "10.2.0.6"),
        "s3": Peer(tracking, {**part, "app.kubernetes.io/name": "seaweedfs"}, "10.2.0.7"),
        "dns": Peer("kube-system", {"k8s-app": "kube-dns"}, "10.3.0.10"),
        "kuberay": Peer("kuberay-system", {"app.kubernetes.io/name": "kuberay-operator"}, "10.4.0.2"),
        "metadata": Peer("", {}, METADATA),
        "internet": Peer("", {}, "203.0.113.7"),
    }
    return request.param, objects(built, "NetworkPolicy"), namespaces, peers


def test_egress_and_ingress_are_denied_by_default_in_both_namespaces(network):
    overlay, policies, _, _ = network
    for namespace in (TRAINING[overlay], TRACKING[overlay]):
        defaults = [
            p for p in policies if p["metadata"]["namespace"] == namespace and p["spec"]["podSelector"] == {}
        ]
        assert any(set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"} and not p["spec"].get("egress")
                   for p in defaults), namespace  # fmt: skip


@pytest.mark.parametrize(
    ("src", "dst", "port", "protocol", "expected"),
    [
        ("training", "dns", 53, "UDP", True),
        ("training", "dns", 53, "TCP", True),
        ("training", "mlflow", 5000, "TCP", True),
        ("training", "other-training", 43567, "TCP", True),  # NCCL, gloo, Ray: ephemeral ports
        ("training", "metadata", 80, "TCP", False),
        ("training", "postgres", 5432, "TCP", False),
        ("training", "mlflow", 22, "TCP", False),
        ("kuberay", "training", 8265, "TCP", True),
        ("mlflow", "postgres", 5432, "TCP", True),
        ("mlflow", "metadata", 80, "TCP", False),
        ("mlflow", "training", 8265, "TCP", False),
        ("postgres", "internet", 443, "TCP", False),
    ],
)
def test_what_the_policies_allow_connection_by_connection(network, src, dst, port, protocol, expected):
    _, policies, namespaces, peers = network
    assert allowed(policies, namespaces, peers[src], peers[dst], port, protocol) is expected


def test_the_object_store_is_reached_by_training_and_mlflow_only(network):
    overlay, policies, namespaces, peers = network
    if overlay == "dev":  # SeaweedFS in the tracking namespace
        assert allowed(policies, namespaces, peers["training"], peers["s3"], 8333)
        assert allowed(policies, namespaces, peers["mlflow"], peers["s3"], 8333)
        assert not allowed(policies, namespaces, peers["postgres"], peers["s3"], 8333)
        assert not allowed(policies, namespaces, peers["training"], peers["internet"], 443)
    else:  # the cloud's S3 over HTTPS, the metadata address excluded
        assert allowed(policies, namespaces, peers["training"], peers["internet"], 443)
        assert allowed(policies, namespaces, peers["mlflow"], peers["internet"], 443)
        assert not allowed(policies, namespaces, peers["training"], peers["metadata"], 443)
        assert not allowed(policies, namespaces, peers["training"], peers["internet"], 80)


# --- credentials, tokens, images --------------------------------------------------------------------


def test_no_overlay_commits_a_credential():
    tracked = subprocess.run(
        ["git", "ls-files", "k8s/base", "k8s/components", "k8s/overlays"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for path in tracked:
        text = (REPO / path).read_text()
        assert "dev-only" not in text and "password=" not in text.replace(" ", ""), path
        for generator in (
            yaml.safe_load(text).get("secretGenerator", []) if path.endswith("kustomization.yaml") else []
        ):
            for source in generator.get("envs", []) + [f.split("=")[-1] for f in generator.get("files", [])]:
                assert source not in {p.split("/", 3)[-1] for p in tracked}, (path, source)


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_every_ray_cluster_gets_a_token_of_its_own(overlay, built_overlays):
    for cluster in objects(built_overlays[overlay], "RayCluster"):
        assert cluster["spec"]["authOptions"] == {"mode": "token"}  # KubeRay makes the Secret per cluster
    _, rendered = render_config(CONFIGS[0].parent / "quickstart.yaml")
    assert rendered.rayjob["spec"]["rayClusterSpec"]["authOptions"] == {"mode": "token"}
    assert not any(
        o["metadata"]["name"] == "ray-auth-token" for o in objects(built_overlays[overlay], "Secret")
    )


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_every_image_has_an_exact_tag_and_minio_is_gone(overlay, built_overlays):
    images = set()

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("image"), str):
                images.add(node["image"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(built_overlays[overlay])
    assert images
    for image in images:
        name, _, tag = image.rpartition(":")
        assert "minio" not in image, image
        assert "@sha256:" in image or (name and tag not in ("latest", "") and "." in tag), image


def test_the_prod_overlay_pins_digests_when_given_them(tmp_path):
    """The prod overlay names its images by digest once `digest:` is filled in (digests cannot be
    looked up here): shown on a copy with made-up digests."""
    import shutil

    shutil.copytree(REPO / "k8s", tmp_path / "k8s")
    prod = tmp_path / "k8s" / "overlays" / "prod"
    examples = 0
    for kustomization in prod.rglob("kustomization.yaml"):
        text = kustomization.read_text()
        examples += text.count("# digest: sha256:")
        kustomization.write_text(text.replace("# digest: sha256:", "digest: sha256:"))
    assert examples == 3  # the training image, MLflow's, PostgreSQL's
    done = subprocess.run([kubectl(), "kustomize", str(prod)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    built = list(yaml.safe_load_all(done.stdout))
    images = {c["image"] for o in built if o["kind"] in ("Deployment", "StatefulSet", "Job")
              for c in o["spec"]["template"]["spec"]["containers"]}  # fmt: skip
    assert images and all("@sha256:" in image for image in images), images
