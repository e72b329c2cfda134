"""What a worker failure costs, and how fast an unplaceable run gives up, side by side.

On a two-node ``ray.cluster_utils.Cluster`` on 127.0.0.1 (token auth on, one CPU per node, STRICT_SPREAD)
it trains the same 2-worker ZeRO-2 run twice through ``orchestrator submit``: once undisturbed, once
with rank 1 SIGKILLed after the first complete checkpoint (``max_failures: 1``). It prints both wall
times, the time from the kill to the restarted group's first logged step, and the steps replayed from
the checkpoint. Then it submits a run that asks for a resource no node has (``placement_timeout_s: 5``)
and prints how long the failure took.

    .venv/bin/python benchmarks/fault_recovery.py     # a few minutes on 2 CPU cores
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from orchestrator.net import free_port

SPEC = """\
name: recovery
model: {{n_layers: 2, n_heads: 2, d_model: 32, context_length: 32, vocab_size: 300}}
optimizer: {{lr: 3.0e-3}}
schedule: {{warmup_steps: 8, min_lr: 3.0e-4}}
train: {{max_steps: {steps}, micro_batch_size: 4, log_interval: 10, eval_interval: 50, eval_batches: 2}}
cluster: {{backend: ray-local, address: '{address}', num_workers: 2, placement_strategy: STRICT_SPREAD,
          max_failures: 1, placement_timeout_s: 5{extra}}}
checkpoint: {{interval: 20, keep_last: 2}}
"""
STEPS = 120


def _read(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _submit(work: Path, text: str, env: dict) -> subprocess.Popen:
    work.mkdir(parents=True)
    (work / "spec.yaml").write_text(text)
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "submit", "spec.yaml"],
        cwd=work,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _run_dir(work: Path) -> Path:
    while not list((work / "checkpoints").glob("*")):
        time.sleep(0.1)
    return next((work / "checkpoints").glob("*"))


def _kill_after_checkpoint(run_dir: Path) -> tuple[float, int, int]:
    from orchestrator.train.checkpoint import latest_complete_checkpoint

    while True:
        status, checkpoint = _read(run_dir / "status.json"), latest_complete_checkpoint(run_dir)
        if status and checkpoint and status["step"] > checkpoint.step:
            pid = next(w["pid"] for w in status["workers"] if w["rank"] == 1)
            os.kill(pid, signal.SIGKILL)
            return time.monotonic(), status["step"], checkpoint.step
        time.sleep(0.05)


def _first_step_after_restart(run_dir: Path) -> float:
    """The restarted group logs a step again (its status file shows new pids)."""
    before = {w["pid"] for w in _read(run_dir / "status.json")["workers"]}
    while True:
        status = _read(run_dir / "status.json")
        if status and not before & {w["pid"] for w in status["workers"]}:
            return time.monotonic()
        time.sleep(0.05)


def _measure(cluster_address: str, env: dict, root: Path) -> None:
    start = time.monotonic()
    # The first run on a fresh cluster also pays for starting Ray's worker processes: not compared.
    cold = _submit(root / "cold", SPEC.format(steps=STEPS, address=cluster_address, extra=""), env)
    assert cold.wait() == 0, "the first run failed"
    cold_s = time.monotonic() - start

    start = time.monotonic()
    clean = _submit(root / "clean", SPEC.format(steps=STEPS, address=cluster_address, extra=""), env)
    assert clean.wait() == 0, "the undisturbed run failed"
    clean_s = time.monotonic() - start

    start = time.monotonic()
    killed = _submit(root / "killed", SPEC.format(steps=STEPS, address=cluster_address, extra=""), env)
    run_dir = _run_dir(root / "killed")
    killed_at, step_at_kill, checkpoint_step = _kill_after_checkpoint(run_dir)
    back_at = _first_step_after_restart(run_dir)
    assert killed.wait() == 0, "the killed run did not recover"
    killed_s = time.monotonic() - start

    start = time.monotonic()
    extra = ", resources_per_worker: {unicorn: 1}"
    unplaceable = _submit(
        root / "unplaceable", SPEC.format(steps=STEPS, address=cluster_address, extra=extra), env
    )
    assert unplaceable.wait() == 1, "the unplaceable run did not fail"
    unplaceable_s = time.monotonic() - start

    print(f"{'run (2 nodes, 2 workers, ' + str(STEPS) + ' steps)':<44}{'wall s':>10}")
    print(f"{'first run on the fresh cluster (cold)':<44}{cold_s:>10.1f}")
    print(f"{'undisturbed':<44}{clean_s:>10.1f}")
    print(f"{'rank 1 SIGKILLed once, max_failures 1':<44}{killed_s:>10.1f}")
    print(f"{'  extra wall time for the failure':<44}{killed_s - clean_s:>10.1f}")
    print(f"{'  kill -> restarted group logs a step':<44}{back_at - killed_at:>10.1f}")
    print(f"  killed at step {step_at_kill}, resumed from the checkpoint at step {checkpoint_step}")
    print(f"{'unplaceable (placement_timeout_s 5): fails in':<44}{unplaceable_s:>10.1f}")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-", dir="/tmp") as tmp:
        token = Path(tmp) / "auth_token"
        token.write_text(secrets.token_hex(32))
        env = {
            **os.environ,
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(token),
            "RAY_TMPDIR": tmp,
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }
        (Path(tmp) / "ray").mkdir()
        os.environ.update(env)
        from ray.cluster_utils import Cluster

        node = {"node_ip_address": "127.0.0.1", "num_cpus": 1}
        cluster = Cluster(
            initialize_head=True,
            head_node_args={**node, "dashboard_host": "127.0.0.1", "dashboard_port": free_port()},
        )
        try:
            cluster.add_node(**node)
            cluster.wait_for_nodes()
            _measure(cluster.address, env, Path(tmp) / "runs")
        finally:
            cluster.shutdown()


if __name__ == "__main__":
    main()
