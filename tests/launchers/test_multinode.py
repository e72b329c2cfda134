"""A real two-node Ray cluster on 127.0.0.1 (`ray.cluster_utils.Cluster` in a process of its own,
tests/launchers/two_nodes.py, token auth on), shared by the module, whose nodes share no directory
for data and checkpoints (each has its own cache and scratch space): the prepared data and the
checkpoints live on the test run's S3 server. A STRICT_SPREAD run puts one worker on each node, each
reading the shards from its own node's copy; a worker SIGKILLed mid-run restarts the group from the
latest complete checkpoint, downloaded from the store into the nodes' own scratch, and the report
equals that of the run never killed; a second kill beyond `cluster.max_failures` fails the run
cleanly with a post-mortem."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from orchestrator.track.mlflow_run import client
from orchestrator.track.status import read_status
from orchestrator.train.checkpoint import latest_complete_checkpoint
from tests.conftest import REPO, TINY_SPEC, run_cli, wait_for
from tests.launchers.ray_head import client_env, stop_process_group

pytestmark = [pytest.mark.slow, pytest.mark.ray]

TOTAL_STEPS = 120


def spec(address: str, max_failures: int, max_steps: int = TOTAL_STEPS, store: str = "") -> str:
    """``store``: the S3 prefix of the run's data and checkpoints."""
    return (
        TINY_SPEC.replace("max_steps: 20", f"max_steps: {max_steps}")
        .replace("log_interval: 5, eval_interval: 10", "log_interval: 10, eval_interval: 50")
        .replace(
            "cluster: {backend: ray-local, num_workers: 2, cpus_per_worker: 1}",
            f"cluster: {{backend: ray-local, address: '{address}', num_workers: 2, cpus_per_worker: 1,"
            f" placement_strategy: STRICT_SPREAD, max_failures: {max_failures}}}",
        )
        + f"checkpoint: {{interval: 20, keep_last: 2, dir: '{store}/checkpoints'}}\n"
        + f"data: {{prepared: '{store}/datasets'}}\n"
    )


@pytest.fixture(scope="module")
def two_nodes(s3_server):
    """Head and one more node, one CPU each, so STRICT_SPREAD is the only way to place 2 workers;
    every process (the driver, each node) reaches the S3 server through the standard variables."""
    with tempfile.TemporaryDirectory(prefix="mn-", dir="/tmp") as tmp:
        token_path = Path(tmp) / "auth_token"
        token_path.write_text(secrets.token_hex(32))
        driver_cache = Path(tmp) / "driver-cache"
        env = client_env(token_path) | s3_server.env() | {"RAY_TMPDIR": tmp}
        env["ORCHESTRATOR_CACHE_DIR"] = str(driver_cache)  # the submitting machine's own cache
        (Path(tmp) / "ray").mkdir()
        nodes = subprocess.Popen(
            [sys.executable, "-m", "tests.launchers.two_nodes", str(Path(tmp) / "nodes")], cwd=REPO,
            env=env, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        try:
            line = nodes.stdout.readline()
            assert line, f"the two-node cluster did not start (exit code {nodes.wait()})"
            started = json.loads(line)
            yield started["address"], env, set(started["node_ids"]), started["node_dirs"], driver_cache
        finally:
            nodes.stdin.close()  # the cluster shuts down
            try:
                nodes.wait(timeout=60)
            except subprocess.TimeoutExpired:
                stop_process_group(nodes)


def submit_in_background(work: Path, text: str, env: dict, *extra: str) -> subprocess.Popen:
    (work / "spec.yaml").write_text(text)
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "submit", "spec.yaml", *extra],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def checkpoints(run_dir: Path, s3_server, store: str):
    """The run's checkpoint location on the S3 server (named after its run directory)."""
    from orchestrator.storage.store import StoreSettings, open_store

    settings = StoreSettings(endpoint_url=s3_server.endpoint, access_key_id=s3_server.access_key,
                             secret_access_key=s3_server.secret_key, retry_deadline_s=30)  # fmt: skip
    return open_store(f"{store}/checkpoints/{run_dir.name}", settings)


def kill_rank_after_checkpoint(run_dir: Path, rank: int, stored, past_pid: int | None = None) -> int:
    """SIGKILL one worker once the run has a complete checkpoint and has logged past it."""

    def ready():
        status, checkpoint = read_status(run_dir), latest_complete_checkpoint(stored)
        if not status or not checkpoint or status["step"] <= checkpoint.step:
            return None
        worker = next(w for w in status["workers"] if w["rank"] == rank)
        return worker["pid"] if worker["pid"] != past_pid else None

    pid = wait_for(ready, 600, "checkpointed progress")
    os.kill(pid, signal.SIGKILL)
    return pid


def finish(process: subprocess.Popen, timeout: float = 600) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=timeout)
        return process.returncode, out, err
    finally:
        if process.poll() is None:  # our own session: the driver only; the cluster is the fixture's
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def run_dir_of(work: Path) -> Path:
    # checkpoints on S3: the run's own files are under checkpoint.local_dir (./runs)
    return wait_for(lambda: next((work / "runs").glob("*"), None), 300, "run directory")


def run_id_of(stdout: str) -> str:
    return re.search(r"MLflow run (\w+)\)", stdout).group(1)


STORE = f"s3://orchestrator-tests/multinode-{secrets.token_hex(4)}"  # this module's runs


@pytest.fixture(scope="module")
def clean_run(two_nodes, tmp_path_factory):
    address, env, *_ = two_nodes
    work = tmp_path_factory.mktemp("clean")
    code, out, err = finish(
        submit_in_background(work, spec(address, max_failures=1, store=STORE), env, "--progress", "bar")
    )
    assert code == 0, out[-3000:] + err[-3000:]
    return work, run_dir_of(work), run_id_of(out), err


@pytest.fixture(scope="module")
def killed_run(two_nodes, s3_server, tmp_path_factory):
    address, env, *_ = two_nodes
    work = tmp_path_factory.mktemp("killed")
    driver = submit_in_background(work, spec(address, max_failures=1, store=STORE), env)
    run_dir = run_dir_of(work)
    kill_rank_after_checkpoint(run_dir, 1, checkpoints(run_dir, s3_server, STORE))
    killed_at = read_status(run_dir)["step"]
    code, out, err = finish(driver)
    return work, run_dir, code, out, err, killed_at


def test_strict_spread_puts_one_worker_on_each_node(two_nodes, clean_run):
    _, _, node_ids, *_ = two_nodes
    _, run_dir, _, _ = clean_run
    workers = read_status(run_dir)["workers"]
    assert len(workers) == 2
    assert workers[0]["node"] != workers[1]["node"]
    assert {w["node"] for w in workers} == node_ids


def test_each_worker_reads_the_shards_from_its_own_nodes_copy(two_nodes, clean_run):
    """No worker opens a path only the driver has: the prepared data is on the store, and each node
    copies it once into its own cache; the driver's cache holds no shard."""
    _, _, _, node_dirs, driver_cache = two_nodes
    _, run_dir, _, _ = clean_run
    for worker in read_status(run_dir)["workers"]:
        own = node_dirs[worker["node"]]
        assert worker["data"].startswith(own + "/cache/"), worker
        assert list(Path(worker["data"]).glob("train-*.bin")), "the node's own copy of the shards"
    assert not list(driver_cache.rglob("*.bin")), "the driver prepared straight into the store"


def test_the_two_node_run_trains_correctly(clean_run, s3_server):
    work, run_dir, run_id, _ = clean_run
    doc = json.loads((run_dir / "training_metrics.json").read_text())
    assert doc["steps"] == list(range(10, TOTAL_STEPS + 1, 10))
    assert doc["train_loss"][-1] < doc["train_loss"][0] - 0.5
    run = client(f"sqlite:///{work / 'mlflow.db'}").get_run(run_id)
    assert run.info.status == "FINISHED"
    assert latest_complete_checkpoint(checkpoints(run_dir, s3_server, STORE)).step == TOTAL_STEPS
    assert not list(run_dir.glob("step-*")), "no checkpoint in the driver's run directory"


def test_submit_to_the_existing_cluster_shows_progress_status_and_logs(two_nodes, clean_run):
    _, env, *_ = two_nodes
    work, _, run_id, err = clean_run
    assert f"[progress] [########################] {TOTAL_STEPS}/{TOTAL_STEPS} loss" in err, err[-2000:]
    status = run_cli("status", run_id, cwd=work, env=env)
    assert (
        "state      SUCCEEDED" in status.stdout and f"step       {TOTAL_STEPS}/{TOTAL_STEPS}" in status.stdout
    )
    assert len(re.findall(r"^worker [01] +ended +node \w+", status.stdout, re.M)) == 2, status.stdout
    logs = run_cli("logs", run_id, cwd=work, env=env)
    assert f"(worker-0) [train] step {TOTAL_STEPS}/{TOTAL_STEPS}" in logs.stdout
    assert "(worker-1) === rank 1" in logs.stdout


def test_a_sigkilled_worker_restarts_the_group_from_the_latest_checkpoint(killed_run, two_nodes):
    _, run_dir, code, out, err, killed_at = killed_run
    assert code == 0, out[-3000:] + err[-3000:]
    assert "state      SUCCEEDED" in out
    assert killed_at < TOTAL_STEPS
    rank1_log = (run_dir / "logs" / "worker-1.log").read_text()
    assert rank1_log.count("=== rank 1 ") == 2, "the group was started twice"
    resumed = re.search(
        r"\[train\] resumed from \S+step-(\d+)", (run_dir / "logs" / "worker-0.log").read_text()
    )
    assert resumed and 0 < int(resumed.group(1)) <= killed_at
    assert resumed.group(0).split()[-1].startswith(f"{STORE}/checkpoints/"), "from the store"
    # each node downloaded what its rank restores into its own scratch space
    node_dirs = two_nodes[3]
    restored = [Path(d) / "scratch" / run_dir.name for d in node_dirs.values()]
    assert all(list(p.rglob("restore/step-*/*.pt")) for p in restored), restored


def test_the_rebuilt_report_equals_that_of_the_run_never_killed(clean_run, killed_run, tmp_path):
    _, clean_dir, _, _ = clean_run
    work, _, code, out, _, _ = killed_run
    assert code == 0
    result = run_cli("report", run_id_of(out), "--out", str(tmp_path), cwd=work)
    assert result.returncode == 0, result.stderr
    rebuilt = json.loads((tmp_path / "training_metrics.json").read_text())
    clean = json.loads((clean_dir / "training_metrics.json").read_text())
    assert rebuilt["steps"] == clean["steps"] == list(range(10, TOTAL_STEPS + 1, 10)), (
        "no gaps, no duplicates"
    )
    history = client(f"sqlite:///{work / 'mlflow.db'}").get_metric_history(run_id_of(out), "train_loss")
    steps = [m.step for m in history]
    assert sorted(steps) == sorted(set(steps)), "one value per step in MLflow"
    for key in ("train_loss", "val_loss", "learning_rate", "epochs"):
        assert [v is None for v in rebuilt[key]] == [v is None for v in clean[key]], key
        pairs = [(a, b) for a, b in zip(rebuilt[key], clean[key], strict=True) if a is not None]
        assert [a for a, _ in pairs] == pytest.approx([b for _, b in pairs], rel=1e-6, abs=1e-9), key


def test_a_failure_beyond_the_budget_fails_cleanly_with_a_post_mortem(two_nodes, s3_server, tmp_path):
    address, env, *_ = two_nodes
    driver = submit_in_background(tmp_path, spec(address, max_failures=1, max_steps=2000, store=STORE), env)
    run_dir = run_dir_of(tmp_path)
    stored = checkpoints(run_dir, s3_server, STORE)
    first = kill_rank_after_checkpoint(run_dir, 1, stored)
    kill_rank_after_checkpoint(run_dir, 1, stored, past_pid=first)  # the restarted group's rank 1
    code, out, err = finish(driver)
    assert code == 1, out[-3000:] + err[-3000:]
    assert "state      FAILED" in out and not re.search(r"^Traceback", err, re.M), "no crash of our own"
    match = re.search(r"^post-mortem (\S+)$", err, re.M)
    assert match, err[-3000:]
    post_mortem = Path(match.group(1)).read_text()
    assert "## Error" in post_mortem and "cluster.max_failures = 1" in post_mortem
    assert f"`{latest_complete_checkpoint(stored).location}`" in post_mortem
    assert "### worker-0" in post_mortem and "### worker-1" in post_mortem
    assert "[train] step" in post_mortem, "each worker's last lines are in it"
    assert client(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(run_id_of(out)).info.status == "FAILED"
