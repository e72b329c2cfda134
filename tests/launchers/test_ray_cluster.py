"""Against one real `ray start --head` on 127.0.0.1 with token authentication (``head``, shared by
the package, see conftest.py): the Jobs API backend cancelling a running job, a client without the
token refused, and runs on the existing cluster (cluster.address) that cannot be placed failing in
time. A ray-job run followed by submit and seen by status, logs and list is in test_secrets_canary.py
(through a proxy, with its secrets); a successful existing-cluster submit is in test_multinode.py (a
two-node cluster the driver connects to)."""

from __future__ import annotations

import re

import pytest

from orchestrator.track.mlflow_run import client
from orchestrator.track.status import read_status
from tests.conftest import TINY_SPEC, run_cli, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.ray]
DATASETS = "s3://orchestrator-tests/ray-cluster-datasets"  # shared by the module's runs (same recipe)


def spec_with_cluster(cluster: str, train: str | None = None, prepared: str = DATASETS) -> str:
    """A cluster's run reads its data from where every node reaches it: the test run's S3 store."""
    text = (
        TINY_SPEC.replace(
            "cluster: {backend: ray-local, num_workers: 2, cpus_per_worker: 1}", f"cluster: {cluster}"
        )
        + f"data: {{prepared: '{prepared}'}}\n"
    )
    if train:
        text = re.sub(r"train: \{.*?\}\n", f"train: {train}\n", text, flags=re.S)
    return text


def submit(work, head, spec: str, *extra: str, timeout: float = 600):
    (work / "spec.yaml").write_text(spec)
    return run_cli("submit", "spec.yaml", *extra, cwd=work, env=head.env, timeout=timeout)


def run_id_of(result) -> str:
    return re.search(r"MLflow run (\w+)\)", result.stdout).group(1)


def mlflow_status(work, run_id: str) -> str:
    return client(f"sqlite:///{work / 'mlflow.db'}").get_run(run_id).info.status


def test_cancel_stops_a_running_job_and_marks_the_run_killed(head, tmp_path):
    spec = spec_with_cluster(
        f"{{backend: ray-job, address: '{head.dashboard_url}', num_workers: 2}}",
        train="{epochs: 5, micro_batch_size: 4, log_interval: 5, eval_interval: 1000}",
    )
    result = submit(tmp_path, head, spec, "--detach", timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run_id = run_id_of(result)
    run_dir = next((tmp_path / "checkpoints").iterdir())
    status = wait_for(lambda: read_status(run_dir), 300, "status.json", interval=1)
    cancelled = run_cli("cancel", run_id, cwd=tmp_path, env=head.env, timeout=120)
    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
    assert f"run {run_id}: STOPPED" in cancelled.stdout
    logs = run_cli("logs", run_id, cwd=tmp_path, env=head.env)
    assert re.search(r"\[train\] step 5/\d{4} ", logs.stdout), logs.stdout[-2000:]
    assert "[train] done" not in logs.stdout
    assert mlflow_status(tmp_path, run_id) == "KILLED"
    after = run_cli("status", run_id, cwd=tmp_path, env=head.env)
    assert "state      STOPPED" in after.stdout
    assert wait_for(
        lambda: all(not _alive(w["pid"]) for w in status["workers"]) or None,
        60,
        "workers to exit",
        interval=1,
    )


def test_a_client_without_the_token_is_refused(head, tmp_path):
    """Through the command line, so no token cached by Ray in this test process can leak in."""
    (tmp_path / "spec.yaml").write_text(
        spec_with_cluster(f"{{backend: ray-job, address: '{head.dashboard_url}'}}")
    )
    # No token anywhere: neither in the environment nor in this HOME's ~/.ray/auth_token.
    bare = {k: v for k, v in head.env.items() if not k.startswith("RAY_AUTH")} | {"HOME": str(tmp_path)}
    for env, refusal in [
        (bare, "Missing authentication token"),
        (bare | {"RAY_AUTH_TOKEN": "0" * 64}, "Invalid authentication token"),
    ]:
        result = run_cli("submit", "spec.yaml", cwd=tmp_path, env=env, timeout=120)
        assert result.returncode == 1
        assert refusal in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert not (tmp_path / "checkpoints").exists(), "nothing is created for a refused submission"
    listed = run_cli(
        "list", "--address", head.dashboard_url, cwd=tmp_path, env=bare | {"RAY_AUTH_TOKEN": head.token}
    )
    assert listed.returncode == 0, listed.stderr


@pytest.mark.parametrize(
    ("cluster", "expected"),
    [
        ("num_workers: 1, resources_per_worker: {unicorn: 1}", "'unicorn': 1.0"),
        ("num_workers: 2, placement_strategy: STRICT_SPREAD", "STRICT_SPREAD"),
    ],
    ids=["missing-custom-resource", "strict-spread-on-one-node"],
)
def test_an_unplaceable_run_fails_with_a_message_within_its_timeout(head, tmp_path, cluster, expected):
    spec = spec_with_cluster(
        f"{{backend: ray-local, address: '{head.gcs_address}', placement_timeout_s: 5, {cluster}}}"
    )
    result = submit(tmp_path, head, spec, timeout=240)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "could not place" in result.stderr and expected in result.stderr, result.stderr[-2000:]
    assert "within 5s" in result.stderr and "1 node(s)" in result.stderr
    assert mlflow_status(tmp_path, run_id_of(result)) == "FAILED"


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
