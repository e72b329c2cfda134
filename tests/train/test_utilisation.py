"""What a user sees of the hardware without a benchmark: mfu and tflops at every logging step (in
MLflow and on the printed line), and the node's system metrics in MLflow, on the engine's shared
ZeRO-2 run (2 CPU ranks; its spec gives a peak, since a CPU has no known one)."""

from __future__ import annotations

import re

import pytest

from orchestrator.plan.flops import flops_per_token
from orchestrator.track.mlflow_run import client
from tests.train.harness import ENGINE_PEAK_TFLOPS, metric_history

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def stage2(trained_runs):
    return trained_runs["stage2"], trained_runs.results["stage2"]


def test_mfu_and_tflops_reach_mlflow_at_every_logging_step(stage2):
    plan, _ = stage2
    tokens = dict(metric_history(plan, "tokens_per_second"))
    tflops, mfu = dict(metric_history(plan, "tflops")), dict(metric_history(plan, "mfu"))
    assert sorted(tflops) == sorted(mfu) == sorted(tokens) == list(range(1, 21))
    per_token = flops_per_token(plan.spec.model)
    for step, rate in tokens.items():  # the tokens/s of both ranks, each rank one device
        assert tflops[step] == pytest.approx(rate * per_token / 2 / 1e12, rel=1e-9)
        assert mfu[step] == pytest.approx(tflops[step] / ENGINE_PEAK_TFLOPS, rel=1e-9)
    assert 0 < max(mfu.values()) < 1


def test_the_printed_line_shows_mfu(stage2):
    plan, result = stage2
    mfu = dict(metric_history(plan, "mfu"))
    line = next(line for line in result.stdout.splitlines() if line.startswith("[train] step 20/20"))
    assert re.search(r" tok/s [\d.e+-]+ TFLOP/s/device MFU \d+\.\d%", line), line
    assert f"MFU {mfu[20]:.1%}" in line, line


def test_the_node_s_system_metrics_reach_mlflow(stage2):
    """Sampled every 0.5 s by MLflow's monitor in rank 0's tracking child process: one node, so
    the keys carry no node id."""
    plan, _ = stage2
    keys = set(client(plan.tracking_uri).get_run(plan.run_id).data.metrics)
    system = {k for k in keys if k.startswith("system/")}
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= system, keys
    history = client(plan.tracking_uri).get_metric_history(plan.run_id, "system/cpu_utilization_percentage")
    steps = sorted(m.step for m in history)
    assert steps == list(range(len(steps))) and steps, steps  # at least the last sample, at the end
