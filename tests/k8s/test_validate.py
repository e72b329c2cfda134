"""The offline validator refuses what the API server or the KubeRay operator would, naming the path.

Each case breaks one thing in a RayJob that validates (rendered from configs/quickstart.yaml)."""

from __future__ import annotations

import copy

import pytest

from launchers.kubernetes.validate import ManifestError, check_manifests, validate_manifest
from tests.conftest import REPO
from tests.k8s.conftest import render_config

WORKER = "spec.rayClusterSpec.workerGroupSpecs[0]"
WORKER_CONTAINER = f"{WORKER}.template.spec.containers[0]"


@pytest.fixture(scope="module")
def good():
    _, rendered = render_config(REPO / "configs" / "quickstart.yaml")
    assert validate_manifest(rendered.rayjob) == [] and validate_manifest(rendered.configmap) == []
    return rendered


def broken(good, change) -> list[str]:
    rayjob = copy.deepcopy(good.rayjob)
    change(rayjob)
    return [str(v) for v in validate_manifest(rayjob)]


def cluster(job):
    return job["spec"]["rayClusterSpec"]


def worker(job):
    return cluster(job)["workerGroupSpecs"][0]


def test_a_misspelled_field(good):
    def misspell(job):
        cluster(job)["workerGroupSpec"] = cluster(job).pop("workerGroupSpecs")

    assert broken(good, misspell) == [
        "spec.rayClusterSpec.workerGroupSpec: unknown field, did you mean `workerGroupSpecs`? (CRD schema)"
    ]


def test_a_misspelled_field_deep_in_a_pod_template(good):
    def misspell(job):
        worker(job)["template"]["spec"]["containers"][0]["volumeMount"] = []

    assert broken(good, misspell) == [
        f"{WORKER_CONTAINER}.volumeMount: unknown field, did you mean `volumeMounts`? (CRD schema)"
    ]


def test_a_wrong_type(good):
    problems = broken(good, lambda job: worker(job).update(replicas="2"))
    assert problems == [f"{WORKER}.replicas: '2' is not of type 'integer' (CRD schema)"]


def test_a_bad_quantity(good):
    def bad(job):
        worker(job)["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] = "3 Gi"

    assert broken(good, bad) == [
        f"{WORKER_CONTAINER}.resources.limits.memory: '3 Gi' is not a valid quantity (CRD schema)"
    ]


def test_a_container_without_a_name(good):
    problems = broken(good, lambda job: worker(job)["template"]["spec"]["containers"][0].pop("name"))
    assert problems == [f"{WORKER_CONTAINER}.name: required field is missing (CRD schema)"]


def test_a_ttl_without_shutdown(good):
    def ttl(job):
        job["spec"].pop("deletionStrategy")
        job["spec"].update(shutdownAfterJobFinishes=False, ttlSecondsAfterFinished=60)

    problems = broken(good, ttl)
    assert problems == [
        "spec.ttlSecondsAfterFinished: a RayJob with shutdownAfterJobFinishes false cannot have a TTL "
        "(KubeRay)"
    ]


def rules(job):
    return job["spec"]["deletionStrategy"]["deletionRules"]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            lambda job: job["spec"].update(shutdownAfterJobFinishes=True),
            "spec.deletionStrategy.deletionRules: cannot be used with shutdownAfterJobFinishes (KubeRay)",
        ),
        (
            lambda job: job["spec"]["deletionStrategy"].update(onSuccess={"policy": "DeleteCluster"}),
            "spec.deletionStrategy: legacy policies (onSuccess/onFailure) and deletionRules cannot be used "
            "together within the same deletionStrategy (CRD rule)",
        ),
        (
            lambda job: rules(job)[0]["condition"].update(ttlSeconds=900),  # workers after the cluster
            "spec.deletionStrategy.deletionRules: jobStatus SUCCEEDED: DeleteCluster TTL (300) must be >= "
            "DeleteWorkers TTL (900) (KubeRay)",
        ),
        (
            lambda job: rules(job).append(dict(rules(job)[0])),
            "spec.deletionStrategy.deletionRules[6]: duplicate rule for DeleteWorkers and jobStatus "
            "SUCCEEDED (KubeRay)",
        ),
        (
            lambda job: rules(job)[0]["condition"].update(jobDeploymentStatus="Failed"),
            "spec.deletionStrategy.deletionRules[0].condition: JobStatus and JobDeploymentStatus cannot be "
            "used together within the same deletion condition. (CRD rule)",
        ),
    ],
)
def test_deletion_rules_as_the_operator_checks_them(good, change, problem):
    assert problem in broken(good, change)


def test_a_60_character_name(good):
    problems = broken(good, lambda job: job["metadata"].update(name="r" * 60))
    assert problems == ["metadata.name: RayJob name is 60 characters, more than KubeRay's 47 (KubeRay)"]


def test_a_name_that_is_no_dns_label(good):
    problems = broken(good, lambda job: job["metadata"].update(name="Run_1"))
    assert "metadata.name: 'Run_1' is not a DNS-1123 subdomain (metadata)" in problems
    assert (
        "metadata.name: RayJob name 'Run_1' is not a DNS-1035 label (a-z first, a-z0-9-) (KubeRay)"
        in problems
    )


def test_suspend_needs_shutdown_after_the_job(good):
    def suspend(job):
        job["spec"].update(suspend=True, shutdownAfterJobFinishes=False, ttlSecondsAfterFinished=0)

    assert broken(good, suspend) == [
        "spec.suspend: a RayJob with shutdownAfterJobFinishes false cannot be suspended (KubeRay)"
    ]


def test_sidecar_mode_takes_no_submitter_template(good):
    problems = broken(good, lambda job: job["spec"].update(submissionMode="SidecarMode"))
    assert problems == ["spec.submitterPodTemplate: SidecarMode does not support it (KubeRay)"]


def test_an_unknown_submission_mode(good):
    problems = broken(good, lambda job: job["spec"].update(submissionMode="K8sJob"))
    assert problems == [
        "spec.submissionMode: 'K8sJob' is not one of K8sJobMode, HTTPMode, InteractiveMode, SidecarMode "
        "(KubeRay)"
    ]


def test_token_auth_needs_a_recent_ray(good):
    problems = broken(good, lambda job: cluster(job).update(rayVersion="2.46.0"))
    assert problems == [
        "spec.rayClusterSpec.rayVersion: token authentication needs Ray 2.52.0 or later, got 2.46.0 (KubeRay)"
    ]


def test_more_min_than_max_replicas(good):
    problems = broken(good, lambda job: worker(job).update(minReplicas=3, maxReplicas=2))
    assert problems == [f"{WORKER}.minReplicas: 3 is more than maxReplicas 2 (KubeRay)"]


def test_resources_in_two_places(good):
    problems = broken(
        good, lambda job: worker(job).update(resources={"CPU": "1"}, rayStartParams={"num-cpus": "1"})
    )
    assert problems == [
        f"{WORKER}.resources: worker group 'cpu-workers' sets resources both here and in rayStartParams "
        "(KubeRay)"
    ]


def test_a_deadline_of_zero_is_refused_by_the_schema(good):
    problems = broken(good, lambda job: job["spec"].update(preRunningDeadlineSeconds=0))
    assert problems == ["spec.preRunningDeadlineSeconds: 0 is less than the minimum of 1 (CRD schema)"]


def test_the_crds_cel_rules_run(good):
    def both(job):
        job["spec"]["shutdownAfterJobFinishes"] = False
        job["spec"]["ttlSecondsAfterFinished"] = 0
        job["spec"]["deletionStrategy"] = {
            "onSuccess": {"policy": "DeleteCluster"},
            "deletionRules": [{"policy": "DeleteCluster", "condition": {"jobStatus": "FAILED"}}],
        }

    problems = broken(good, both)
    assert (
        "spec.deletionStrategy: legacy policies (onSuccess/onFailure) and deletionRules cannot be used "
        "together within the same deletionStrategy (CRD rule)"
    ) in problems
    assert (
        "spec.deletionStrategy: deletionStrategy requires either BOTH onSuccess and onFailure, OR the "
        "deletionRules field (cannot be empty) (CRD rule)"
    ) not in problems  # deletionRules is set: that rule holds


def test_list_map_keys_are_unique(good):
    def twice(job):
        containers = worker(job)["template"]["spec"]["containers"]
        containers.append(copy.deepcopy(containers[0]))

    assert broken(good, twice) == [
        f"{WORKER}.template.spec.containers[1]: duplicate name (as [0]) (CRD schema)"
    ]


def test_builtin_kinds_are_strict():
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x", "labels": {"app": "-bad-"}},
        "spec": {
            "selector": {"matchLabels": {"app": "x"}},
            "template": {
                "metadata": {"labels": {"app": "x"}},
                "spec": {
                    "containers": [{"name": "c", "image": "i", "resources": {"limits": {"memory": "1 Gi"}}}]
                },
            },
        },
    }
    assert [str(v) for v in validate_manifest(deployment)] == [
        "metadata.labels.app: '-bad-' is not a valid label value (metadata)",
        "spec.template.spec.containers[0].resources.limits.memory: '1 Gi' is not a valid quantity "
        "(kubernetes schema)",
    ]
    deployment["metadata"]["labels"]["app"] = "x"
    deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] = "1Gi"
    deployment["spec"]["replica"] = 2
    assert [str(v) for v in validate_manifest(deployment)] == [
        "spec.replica: unknown field, did you mean `replicas`? (kubernetes schema)"
    ]


def test_check_manifests_names_every_problem_of_every_object(good):
    rayjob = copy.deepcopy(good.rayjob)
    rayjob["metadata"]["name"] = "r" * 60
    configmap = copy.deepcopy(good.configmap)
    configmap["dataa"] = configmap.pop("data")
    with pytest.raises(ManifestError) as caught:
        check_manifests([configmap, rayjob])
    message = str(caught.value)
    assert f"ConfigMap/{configmap['metadata']['name']} dataa: unknown field" in message
    assert f"RayJob/{'r' * 60} metadata.name: RayJob name is 60 characters" in message
    assert caught.value.exit_code == 2


def test_without_the_vendored_crds_the_operators_rules_still_run(good, monkeypatch, tmp_path, caplog):
    """An installed package has no k8s/ directory: the launcher still refuses what KubeRay would."""
    from launchers.kubernetes import validate

    monkeypatch.setattr(validate, "CRD_DIR", tmp_path)
    rayjob = copy.deepcopy(good.rayjob)
    rayjob["metadata"]["name"] = "r" * 60
    rayjob["spec"]["typo"] = 1  # a schema problem: not seen without the CRD
    assert [str(v) for v in validate_manifest(rayjob)] == [
        "metadata.name: RayJob name is 60 characters, more than KubeRay's 47 (KubeRay)"
    ]
    assert "the KubeRay CRDs are not in" in caplog.text


def test_without_the_development_checkers_the_rest_still_runs(good, monkeypatch):
    """Where kubernetes-validate and cel-python are not installed (they are development extras), a
    submission is still checked against the CRD schema and the operator's rules."""
    from launchers.kubernetes import validate

    monkeypatch.setattr(validate, "_optional", lambda module: None)
    configmap = copy.deepcopy(good.configmap)
    configmap["dataa"] = {}
    assert validate_manifest(configmap) == []  # the built-in schema check needs kubernetes-validate
    assert broken(good, lambda job: job["metadata"].update(name="r" * 60)) == [
        "metadata.name: RayJob name is 60 characters, more than KubeRay's 47 (KubeRay)"
    ]
    assert broken(good, lambda job: worker(job).update(replicas="2"))[0].endswith("(CRD schema)")
