"""The `cluster` section: backends, addresses, placement and failure options, checked before any Ray."""

from __future__ import annotations

import pytest

from orchestrator.spec import SpecError, parse_spec


def cluster(text: str):
    return parse_spec(f"name: demo\ncluster: {text}\n").cluster


def problem_of(text: str) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec(f"name: demo\ncluster: {text}\n", "spec.yaml")
    (problem,) = info.value.problems
    return f"{problem.path} {problem.message} {problem.hint or ''}"


def test_defaults_keep_an_embedded_ray_on_loopback_without_retries():
    spec = cluster("{}")
    assert (spec.backend, spec.address, spec.host) == ("ray-local", None, "127.0.0.1")
    assert (spec.placement_strategy, spec.max_failures) == ("PACK", 0)
    assert spec.placement_timeout_s > 0 and spec.resources_per_worker == {}


def test_every_option_is_accepted():
    spec = cluster(
        "{backend: ray-job, address: 'http://127.0.0.1:8265', placement_strategy: STRICT_SPREAD,"
        " resources_per_worker: {accelerator_x: 1}, label_selector: {zone: a},"
        " placement_timeout_s: 30, max_failures: 3}"
    )
    assert spec.resources_per_worker == {"accelerator_x": 1.0}
    assert spec.label_selector == {"zone": "a"} and spec.max_failures == 3


def test_ray_job_needs_a_dashboard_url():
    assert "address: http://127.0.0.1:8265" in problem_of("{backend: ray-job}")
    assert "dashboard URL" in problem_of("{backend: ray-job, address: auto}")


def test_a_dashboard_url_on_ray_local_points_to_ray_job():
    assert "backend: ray-job" in problem_of("{address: 'http://127.0.0.1:8265'}")


def test_cpus_and_gpus_are_not_custom_resources():
    assert "cpus_per_worker" in problem_of("{resources_per_worker: {CPU: 2}}")
    assert "positive" in problem_of("{resources_per_worker: {tpu_slice: 0}}")


def test_an_unknown_strategy_is_refused():
    assert "placement_strategy" in problem_of("{placement_strategy: SCATTER}")
