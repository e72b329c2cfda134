"""The checks the KubeRay operator (v1.7.0) makes in code before it acts on a RayJob or RayCluster.

The CRD schema lets these through; the operator then marks a RayJob ``ValidationFailed`` (or logs an
event for a RayCluster) and does nothing. Each check mirrors one in KubeRay's
``ray-operator/controllers/ray/utils/validation.go`` (``ValidateRayJobMetadata``,
``ValidateRayJobSpec``, ``ValidateRayClusterMetadata``, ``ValidateRayClusterSpec``), with the
feature gates at their v1.7.0 defaults. ``check(doc)`` returns ``(path, message)`` pairs.

>>> check({"kind": "RayJob", "metadata": {"name": "x"}, "spec": {"ttlSecondsAfterFinished": 60}})[0]
('spec.ttlSecondsAfterFinished', 'a RayJob with shutdownAfterJobFinishes false cannot have a TTL')
"""

from __future__ import annotations

import re
from itertools import pairwise

MAX_RAYCLUSTER_NAME = 53  # KubeRay appends suffixes to names it derives from these
MAX_RAYJOB_NAME = MAX_RAYCLUSTER_NAME - 6
SUBMISSION_MODES = ("K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode")
MIN_RAY_FOR_TOKEN_AUTH = (2, 52, 0)
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# Feature gates that are off by default in KubeRay v1.7.0, and the fields that need them.
_GATED_FIELDS = {
    "networkPolicy": "RayClusterNetworkPolicy",
    "tlsOptions": "RayClusterMTLS",
    "historyServerOptions": "RayClusterHistoryServer",
}

Problems = list[tuple[str, str]]


def check(doc: dict) -> Problems:
    kind, metadata, spec = doc.get("kind"), doc.get("metadata") or {}, doc.get("spec") or {}
    if kind == "RayJob":
        return _name(metadata, MAX_RAYJOB_NAME, "RayJob") + rayjob_spec(
            spec, metadata.get("annotations") or {}
        )
    if kind == "RayCluster":
        return _name(metadata, MAX_RAYCLUSTER_NAME, "RayCluster") + raycluster_spec(
            spec, "spec", metadata.get("annotations") or {}
        )
    if kind == "RayService":
        problems = _name(metadata, MAX_RAYJOB_NAME, "RayService")
        return problems + raycluster_spec(spec.get("rayClusterConfig") or {}, "spec.rayClusterConfig", {})
    return []


def _name(metadata: dict, limit: int, kind: str) -> Problems:
    name = metadata.get("name")
    if not name and metadata.get("generateName"):  # the server appends 5 random characters
        name = metadata["generateName"] + "x" * 5
    name = name or ""
    if len(name) > limit:
        return [("metadata.name", f"{kind} name is {len(name)} characters, more than KubeRay's {limit}")]
    if not _DNS_1035.match(name):
        return [("metadata.name", f"{kind} name {name!r} is not a DNS-1035 label (a-z first, a-z0-9-)")]
    return []


def rayjob_spec(spec: dict, annotations: dict) -> Problems:
    return _rayjob_lifecycle(spec) + _rayjob_submission(spec) + _rayjob_cluster(spec, annotations)


def _rayjob_lifecycle(spec: dict) -> Problems:
    problems: Problems = []
    shutdown, suspend = spec.get("shutdownAfterJobFinishes", False), spec.get("suspend", False)
    if suspend and not shutdown:
        problems.append(("spec.suspend", "a RayJob with shutdownAfterJobFinishes false cannot be suspended"))
    ttl = spec.get("ttlSecondsAfterFinished", 0)
    if ttl < 0:
        problems.append(("spec.ttlSecondsAfterFinished", "must not be negative"))
    if ttl > 0 and not shutdown:
        problems.append(
            ("spec.ttlSecondsAfterFinished", "a RayJob with shutdownAfterJobFinishes false cannot have a TTL")
        )
    problems += _deletion_strategy(spec)
    for field in ("activeDeadlineSeconds", "preRunningDeadlineSeconds"):
        if field in spec and spec[field] <= 0:
            problems.append((f"spec.{field}", "must be a positive number of seconds"))
    if spec.get("backoffLimit", 0) < 0:
        problems.append(("spec.backoffLimit", "must not be negative"))
    return problems


def _deletion_strategy(spec: dict) -> Problems:
    """KubeRay 1.7's validateDeletionConfiguration (feature gate RayJobDeletionPolicy: beta, on by
    default): deletionRules exclude shutdownAfterJobFinishes and the legacy onSuccess/onFailure; each
    rule's TTLs must delete workers no later than the cluster, and the cluster no later than the RayJob."""
    strategy = spec.get("deletionStrategy")
    if strategy is None:
        return []
    rules, legacy = strategy.get("deletionRules") or [], ("onSuccess" in strategy or "onFailure" in strategy)
    where = "spec.deletionStrategy"
    if rules and spec.get("shutdownAfterJobFinishes"):
        return [(f"{where}.deletionRules", "cannot be used with shutdownAfterJobFinishes")]
    if rules and legacy:
        return [(where, "deletionRules and onSuccess/onFailure cannot be used together")]
    if rules:
        return _deletion_rules(rules, spec)
    if not (legacy and "onSuccess" in strategy and "onFailure" in strategy):
        return [(where, "needs both onSuccess and onFailure, or deletionRules")]
    policies = [(strategy[k] or {}).get("policy") for k in ("onSuccess", "onFailure")]
    if None in policies:
        return [(where, "onSuccess and onFailure each need a policy")]
    if spec.get("shutdownAfterJobFinishes") and "DeleteNone" in policies:
        return [(where, "DeleteNone contradicts shutdownAfterJobFinishes true")]
    if "DeleteWorkers" in policies and (spec.get("rayClusterSpec") or {}).get("enableInTreeAutoscaling"):
        return [(where, "DeleteWorkers is not supported with autoscaling")]
    return []


_DELETION_ORDER = ("DeleteWorkers", "DeleteCluster", "DeleteSelf")


def _deletion_rules(rules: list[dict], spec: dict) -> Problems:
    problems: Problems = []
    ttls: dict[tuple[str, str], dict[str, int]] = {}
    selector = bool(spec.get("clusterSelector"))
    autoscaling = bool((spec.get("rayClusterSpec") or {}).get("enableInTreeAutoscaling"))
    for index, rule in enumerate(rules):
        where, condition, policy = (
            f"spec.deletionStrategy.deletionRules[{index}]",
            rule["condition"],
            rule["policy"],
        )
        if selector and policy in ("DeleteCluster", "DeleteWorkers"):
            problems.append((where, f"{policy} is not supported with a clusterSelector"))
            continue
        if autoscaling and policy == "DeleteWorkers":
            problems.append((where, "DeleteWorkers is not supported with autoscaling"))
            continue
        kind = "jobStatus" if "jobStatus" in condition else "jobDeploymentStatus"
        seen = ttls.setdefault((kind, condition.get(kind, "")), {})
        if policy in seen:
            problems.append((where, f"duplicate rule for {policy} and {kind} {condition.get(kind)}"))
            continue
        seen[policy] = condition.get("ttlSeconds", 0)
    for (kind, status), by_policy in ttls.items():
        ordered = [(p, by_policy[p]) for p in _DELETION_ORDER if p in by_policy]
        for (before, early), (after, late) in pairwise(ordered):
            if late < early:
                problems.append(
                    (
                        "spec.deletionStrategy.deletionRules",
                        f"{kind} {status}: {after} TTL ({late}) must be >= {before} TTL ({early})",
                    )
                )
    return problems


def _rayjob_submission(spec: dict) -> Problems:
    problems: Problems = []
    mode = spec.get("submissionMode", "K8sJobMode")
    selector = spec.get("clusterSelector") or {}
    if mode not in SUBMISSION_MODES:
        problems.append(("spec.submissionMode", f"{mode!r} is not one of {', '.join(SUBMISSION_MODES)}"))
    if selector:
        if spec.get("suspend"):
            problems.append(("spec.suspend", "a RayJob with a clusterSelector cannot be suspended"))
        if not selector.get("ray.io/cluster"):
            problems.append(("spec.clusterSelector", "needs the ray.io/cluster key naming the RayCluster"))
        if mode == "SidecarMode":
            problems.append(("spec.clusterSelector", "SidecarMode does not support a clusterSelector"))
        if spec.get("backoffLimit", 0) > 0:
            problems.append(
                ("spec.backoffLimit", "retries need a RayJob-owned cluster, not a clusterSelector")
            )
    elif "rayClusterSpec" not in spec:
        problems.append(("spec.rayClusterSpec", "a RayJob needs rayClusterSpec or clusterSelector"))
    if mode == "InteractiveMode" and spec.get("backoffLimit", 0) > 0:
        problems.append(("spec.backoffLimit", "InteractiveMode does not support retries"))
    if mode == "SidecarMode":
        for field in ("submitterPodTemplate", "submitterConfig"):
            if field in spec:
                problems.append((f"spec.{field}", "SidecarMode does not support it"))
        head = spec.get("rayClusterSpec", {}).get("headGroupSpec", {}).get("template", {}).get("spec", {})
        if head.get("restartPolicy", "Never") != "Never":
            problems.append(
                ("spec.rayClusterSpec.headGroupSpec.template.spec.restartPolicy", "must be Never")
            )
    runtime_env = spec.get("runtimeEnvYAML")
    if runtime_env and not _is_yaml_mapping(runtime_env):
        problems.append(("spec.runtimeEnvYAML", "is not a YAML mapping"))
    return problems


def _rayjob_cluster(spec: dict, annotations: dict) -> Problems:
    cluster = spec.get("rayClusterSpec")
    if cluster is None:
        return []
    if (cluster.get("authOptions") or {}).get("enableK8sTokenAuth"):
        return [("spec.rayClusterSpec.authOptions.enableK8sTokenAuth", "is not supported for a RayJob")]
    return raycluster_spec(cluster, "spec.rayClusterSpec", annotations)


def raycluster_spec(spec: dict, path: str, annotations: dict) -> Problems:
    autoscaling = bool(spec.get("enableInTreeAutoscaling"))
    head = spec.get("headGroupSpec") or {}
    problems = _group(head, f"{path}.headGroupSpec", "the head group")
    for index, group in enumerate(spec.get("workerGroupSpecs") or []):
        where = f"{path}.workerGroupSpecs[{index}]"
        problems += _group(group, where, f"worker group {group.get('groupName')!r}")
        problems += _replicas(group, where, autoscaling)
        if group.get("suspend") and autoscaling:
            problems.append((f"{where}.suspend", "a worker group cannot be suspended with autoscaling on"))
        if "idleTimeoutSeconds" in group and not _autoscaler_v2(spec):
            problems.append((f"{where}.idleTimeoutSeconds", "needs autoscalerOptions.version v2"))
    problems += _head_env(spec, f"{path}.headGroupSpec", annotations, autoscaling)
    problems += _token_auth(spec, path)
    problems += [
        (f"{path}.{field}", f"needs the {gate} feature gate")
        for field, gate in _GATED_FIELDS.items()
        if field in spec
    ]
    return problems


def _group(group: dict, path: str, what: str) -> Problems:
    problems: Problems = []
    if not ((group.get("template") or {}).get("spec") or {}).get("containers"):
        problems.append((f"{path}.template.spec.containers", f"{what} needs at least one container"))
    params = group.get("rayStartParams") or {}
    if group.get("resources") and any(params.get(k) for k in ("num-cpus", "num-gpus", "memory", "resources")):
        problems.append((f"{path}.resources", f"{what} sets resources both here and in rayStartParams"))
    if "labels" in params:
        problems.append((f"{path}.rayStartParams.labels", "use the group's labels field instead"))
    return problems


def _replicas(group: dict, path: str, autoscaling: bool) -> Problems:
    low, high = group.get("minReplicas"), group.get("maxReplicas")
    if not autoscaling and (low is None or high is None):
        return [(path, "minReplicas and maxReplicas are both required without autoscaling")]
    if (low is not None and low < 0) or (high is not None and high < 0):
        return [(path, "minReplicas and maxReplicas must not be negative")]
    if low is not None and high is not None and low > high:
        return [(f"{path}.minReplicas", f"{low} is more than maxReplicas {high}")]
    return []


def _head_env(spec: dict, path: str, annotations: dict, autoscaling: bool) -> Problems:
    containers = ((spec.get("headGroupSpec") or {}).get("template") or {}).get("spec", {}).get(
        "containers"
    ) or [{}]
    env = {e.get("name"): e.get("value") for e in containers[0].get("env") or []}
    problems: Problems = []
    if "ray.io/ft-enabled" in annotations and "gcsFaultToleranceOptions" in spec:
        problems.append(
            ("metadata.annotations", "ray.io/ft-enabled and gcsFaultToleranceOptions are both set")
        )
    if (
        "RAY_REDIS_ADDRESS" in env
        and "gcsFaultToleranceOptions" not in spec
        and not annotations.get("ray.io/ft-enabled")
    ):
        problems.append(
            (f"{path}.template.spec.containers[0].env", "RAY_REDIS_ADDRESS needs gcsFaultToleranceOptions")
        )
    if not autoscaling and env.get("RAY_enable_autoscaler_v2") in ("1", "true"):
        problems.append(
            (f"{path}.template.spec.containers[0].env", "RAY_enable_autoscaler_v2 needs autoscaling")
        )
    return problems


def _token_auth(spec: dict, path: str) -> Problems:
    auth = spec.get("authOptions") or {}
    if auth.get("mode") != "token":  # KubeRay: on only with mode token, whatever the field's docs say
        if auth.get("enableK8sTokenAuth"):
            return [(f"{path}.authOptions.enableK8sTokenAuth", "needs authOptions.mode token")]
        return []
    version = _version(spec.get("rayVersion", ""))
    if version is None:
        return [(f"{path}.rayVersion", "token authentication needs rayVersion (2.52.0 or later)")]
    if version < MIN_RAY_FOR_TOKEN_AUTH:
        return [
            (
                f"{path}.rayVersion",
                f"token authentication needs Ray 2.52.0 or later, got {spec['rayVersion']}",
            )
        ]
    return []


def _autoscaler_v2(spec: dict) -> bool:
    return (spec.get("autoscalerOptions") or {}).get("version") == "v2"


def _version(text: str) -> tuple[int, ...] | None:
    match = re.match(r"^v?(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    return tuple(int(part or 0) for part in match.groups()) if match else None


def _is_yaml_mapping(text: str) -> bool:
    import yaml

    try:
        return isinstance(yaml.safe_load(text), dict)
    except yaml.YAMLError:
        return False
