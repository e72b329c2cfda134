"""The `cluster` section: backends, addresses, placement and failure options, checked before any Ray."""

from __future__ import annotations

from pathlib import Path

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


def test_an_embedded_ray_without_authentication_is_refused_unless_the_spec_says_so(tmp_path, monkeypatch):
    """RAY_AUTH_MODE=disabled would let any local process that reaches Ray's ports run code."""
    from launchers.ray_local import RayLocalLauncher, embedded_ray_auth
    from orchestrator.errors import LaunchError

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    with pytest.raises(LaunchError, match=r"unset RAY_AUTH_MODE, or set cluster\.ray_auth: disabled"):
        RayLocalLauncher.for_spec(parse_spec("name: demo\n"))
    assert embedded_ray_auth(cluster("{ray_auth: disabled}")) == "disabled"
    monkeypatch.delenv("RAY_AUTH_MODE")
    assert embedded_ray_auth(cluster("{}")) == "token"
    # joining a running cluster: its authentication is the cluster's own
    RayLocalLauncher.for_spec(parse_spec("name: demo\ncluster: {address: auto}\n"))


def test_submit_refuses_before_creating_anything(tmp_path, monkeypatch, capsys):
    from orchestrator.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    (tmp_path / "spec.yaml").write_text("name: demo\n")
    assert main(["submit", "spec.yaml"]) == 1
    assert "RAY_AUTH_MODE=disabled is set" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]


def test_an_embedded_ray_gets_a_token_only_this_user_can_read(monkeypatch):
    """Ray writes the token it generates to ~/.ray/auth_token readable by every user."""
    import os
    import stat

    from launchers.ray_local import private_ray_token

    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", "/elsewhere/auth_token")
    with private_ray_token():
        path = os.environ["RAY_AUTH_TOKEN_PATH"]
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
        assert len(Path(path).read_text()) == 64
    assert os.environ["RAY_AUTH_TOKEN_PATH"] == "/elsewhere/auth_token"
    with private_ray_token():  # Ray reads a token once per process: a second embedded Ray gets the same
        assert os.environ["RAY_AUTH_TOKEN_PATH"] == path
    monkeypatch.setenv("RAY_AUTH_TOKEN", "a-token-the-user-chose")
    with private_ray_token():
        assert os.environ["RAY_AUTH_TOKEN_PATH"] == "/elsewhere/auth_token"
