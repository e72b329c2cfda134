"""The GPU suite's logic, on the CPU at a tiny size: the bare loop, the worker in DeepSpeed's bf16
and torch_autocast modes on the same model and data, the profiled step, and the report (no MFU
without a known peak). The GPU figures themselves come only from a GPU run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

MEASURED = ("bare", "worker-bf16-z0", "worker-autocast-z0")


def test_the_gpu_suite_measures_everything_side_by_side_on_a_cpu(tmp_path):
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "benchmarks.gpu_suite", "--device", "cpu", "--no-compile",
        "--warmup", "2", "--steps", "4", "--only", *MEASURED, "profile",
        "--cache-dir", str(tmp_path / "cache"), "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((out / "gpu_suite.json").read_text())
    assert report["window"] == [2, 6] and report["tokens_per_step"] == 4 * 4 * 64
    runs = report["measurements"]
    for name in MEASURED:
        assert runs[name]["tokens_per_s"] > 0 and runs[name]["tflops"] > 0, runs[name]
        assert runs[name]["mfu"] is None  # a CPU has no known peak
    assert runs["bare"]["padded_vocab"] == 512 and runs["bare"]["last_loss"] > 0
    top = runs["profile"]["top"]
    assert top and all(row["ms"] >= 0 and row["calls"] >= 1 for row in top)
    markdown = (out / "gpu_suite.md").read_text()
    bare = runs["bare"]["tokens_per_s"]
    for name in MEASURED:
        rate = runs[name]["tokens_per_s"]
        assert f"| {name} | {rate:,.0f} |" in markdown and f"| {rate / bare:.3f} |" in markdown
    assert "under torch.profiler" in markdown
