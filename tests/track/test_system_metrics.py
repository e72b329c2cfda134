"""The nodes' system metrics in MLflow (MLflow's own monitor, in a child process of the node's first
worker): which rank monitors which node, the keys per node, and a hung tracking server that the
training steps never wait for."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from orchestrator.plan import RunIdentity
from orchestrator.spec import parse_spec
from orchestrator.track.events import MetricEvent
from orchestrator.track.mlflow_run import client
from orchestrator.track.system_metrics import NodePlace, SystemMetrics
from tests.conftest import TINY_SPEC, prepared_plan


def test_one_monitor_per_node_from_the_variables_torchrun_and_ray_train_set():
    one_node = {"LOCAL_WORLD_SIZE": "2", "GROUP_RANK": "0"}
    for rank in (0, 1):
        place = NodePlace.from_env(rank, 2, {**one_node, "LOCAL_RANK": str(rank)})
        assert place.node_id is None and not place.monitors_other_node  # rank 0's child monitors
    ray_train = {"LOCAL_WORLD_SIZE": "2", "NODE_RANK": "1"}  # 2 nodes x 2 workers; this is node 1
    first, second = (NodePlace.from_env(r, 4, {**ray_train, "LOCAL_RANK": str(r - 2)}) for r in (2, 3))
    assert (first.node_id, first.monitors_other_node) == ("node_1", True)
    assert (second.node_id, second.monitors_other_node) == ("node_1", False)
    rank0 = NodePlace.from_env(0, 4, {"LOCAL_WORLD_SIZE": "2", "NODE_RANK": "0", "LOCAL_RANK": "0"})
    assert (rank0.node_id, rank0.monitors_other_node) == ("node_0", False)
    assert NodePlace.from_env(0, 1, {}).node_id is None  # no variables: one process


@pytest.fixture
def sqlite_run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow = client(uri)
    run = mlflow.create_run(mlflow.create_experiment("system", artifact_location=str(tmp_path / "a")))
    return uri, run.info.run_id


def system_keys(uri: str, run_id: str) -> set[str]:
    return {k for k in client(uri).get_run(run_id).data.metrics if k.startswith("system/")}


@pytest.mark.slow
def test_a_node_s_series_carry_its_node_id_and_mlflow_s_variable_overrides_it(sqlite_run, monkeypatch):
    uri, run_id = sqlite_run
    lines: list[str] = []
    monitor = SystemMetrics(uri, run_id, interval_s=0.2, node_id="node_1", say=lines.append)
    time.sleep(1.5)
    monitor.close()
    keys = system_keys(uri, run_id)
    assert {"system/node_1/cpu_utilization_percentage", "system/node_1/system_memory_usage_megabytes"} <= keys
    assert all(k.startswith("system/node_1/") for k in keys), keys
    assert lines == [
        "[track] system metrics every 0.2 s to MLflow as system/node_1/... (CPU, memory, disk, network; "
        "no GPU found)"
    ]
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_NODE_ID", "gpu-host-7")
    SystemMetrics(uri, run_id, interval_s=0.2, node_id="node_1", say=lines.append).close()
    assert "system/gpu-host-7/cpu_utilization_percentage" in system_keys(uri, run_id)


class HungServer(threading.Thread):
    """Accepts connections on 127.0.0.1 and never answers (a tracking server stopped with SIGSTOP
    looks like this to its clients); records each request's first line."""

    def __init__(self):
        super().__init__(daemon=True)
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.requests: list[tuple[float, str]] = []
        self.connections: list[socket.socket] = []

    def run(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:  # closed
                return
            self.connections.append(connection)
            connection.settimeout(5)
            try:
                first = connection.recv(4096).split(b"\r\n", 1)[0].decode(errors="replace")
            except OSError:
                first = ""
            self.requests.append((time.monotonic(), first))

    def close(self) -> None:
        """Hang up on every client: their pending requests fail at once."""
        self.listener.close()
        for connection in self.connections:
            connection.close()


@pytest.mark.slow
def test_a_hung_tracking_server_costs_the_step_nothing(tmp_path):
    """Rank 0's pipeline with the monitor sampling every 0.2 s while every request to MLflow hangs
    (20 s per request): the steps' writes go on, none waiting anywhere near a request's time, while
    the monitor's own request (``runs/get``) hangs in the tracking child process."""
    from orchestrator.track.pipeline import open_sinks

    server = HungServer()
    server.start()
    tracking = (
        f"tracking: {{uri: '{server.url}', request_timeout_s: 20, request_retries: 0, drain_timeout_s: 1,"
        " system_metrics_interval_s: 0.2}\nreport: {artifacts: false}\n"
    )
    spec = parse_spec(TINY_SPEC + tracking)
    run_dir = str(tmp_path / "run")
    plan = prepared_plan(spec, tmp_path, RunIdentity("hung", run_dir, run_dir, server.url, run_id="0" * 32))
    (tmp_path / "run").mkdir()
    pipeline = open_sinks(plan, rank=0, resumed=False)
    slowest, step, after_monitor_hung = 0.0, 0, 0
    try:
        deadline = time.monotonic() + 120  # the child imports MLflow first (seconds on a busy machine)
        while after_monitor_hung < 40 and time.monotonic() < deadline:
            step += 1
            started = time.monotonic()
            pipeline.write([MetricEvent("train_loss", 1.0 / step, step), MetricEvent("tflops", 0.1, step)])
            slowest = max(slowest, time.monotonic() - started)
            if any("/runs/get" in line for _, line in server.requests):
                after_monitor_hung += 1
            time.sleep(0.05)
    finally:
        server.close()  # the child's requests fail now, so its close is quick
        pipeline.close()
    paths = [line for _, line in server.requests]
    assert after_monitor_hung == 40, f"the monitor never asked the server: {paths}"
    assert any("log-batch" in line for line in paths), paths  # the sender was stuck there too
    assert slowest < 2.0, f"a step's write waited {slowest:.1f} s (a request hangs 20 s)"


@pytest.mark.slow
def test_a_node_without_rank_0_is_monitored_by_its_first_worker_s_child(tmp_path, monkeypatch):
    """Ranks 2 and 3 on the second of two nodes: local rank 0 starts a child process that only
    monitors (its series `system/node_1/...`), local rank 1 starts none."""
    from orchestrator.plan import resolve_tracking_uri
    from orchestrator.track.mlflow_run import create_run
    from orchestrator.track.pipeline import NodeMonitor, open_sinks

    spec = parse_spec(TINY_SPEC + "tracking: {system_metrics_interval_s: 0.2}\n")
    run_dir = str(tmp_path / "run")
    identity = RunIdentity("nodes", run_dir, run_dir, resolve_tracking_uri(None, tmp_path))
    plan = prepared_plan(spec, tmp_path, identity)
    (tmp_path / "run").mkdir()
    plan = plan.with_run_id(create_run(plan))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("NODE_RANK", "1")
    pipelines = {}
    for rank in (2, 3):
        monkeypatch.setenv("LOCAL_RANK", str(rank - 2))
        pipelines[rank] = open_sinks(plan, rank, resumed=False, world=4)
    monitors = {rank: [s for s in p.sinks if isinstance(s, NodeMonitor)] for rank, p in pipelines.items()}
    assert len(monitors[2]) == 1 and monitors[3] == []
    time.sleep(1)
    for pipeline in pipelines.values():
        pipeline.write([MetricEvent("train_loss", 1.0, 1)])  # not the monitor's business
        pipeline.close()
    keys = system_keys(plan.tracking_uri, plan.run_id)
    assert "system/node_1/cpu_utilization_percentage" in keys and "train_loss" not in keys, keys
    assert all(k.startswith("system/node_1/") for k in keys), keys
