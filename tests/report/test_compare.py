"""`orchestrator compare` on two runs logged through the real sink into a real MLflow sqlite store."""

from __future__ import annotations

import json
import math

import pytest
from PIL import Image

from orchestrator.report.compare import COMPARE_JSON, COMPARE_PNG
from orchestrator.track.events import MetricEvent
from orchestrator.track.mlflow_run import client
from orchestrator.track.mlflow_sink import MlflowSink
from orchestrator.track.runs import CHECKPOINT_DIR_TAG
from tests.conftest import run_cli


def log_run(uri: str, experiment_id: str, name: str, lr: float, overfit: bool, out) -> str:
    run_id = (
        client(uri).create_run(experiment_id, run_name=name, tags={CHECKPOINT_DIR_TAG: str(out)}).info.run_id
    )
    sink = MlflowSink(uri, run_id)
    for step in range(10, 210, 10):
        loss = 6.0 * math.exp(-lr * step)
        events = [
            MetricEvent("train_loss", loss, step),
            MetricEvent("learning_rate", lr * 1e-2 * (1 - step / 400), step),
            MetricEvent("epoch", float(1 + step // 100), step),
        ]
        if step % 50 == 0:
            events.append(MetricEvent("val_loss", loss + (1.0 if overfit else 0.1), step))
        sink.write(events)
    sink.close()
    return run_id


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    work = tmp_path_factory.mktemp("compare")
    uri = f"sqlite:///{work / 'mlflow.db'}"
    experiment_id = client(uri).create_experiment("compare")
    fast = log_run(uri, experiment_id, "fast-lr", 0.01, overfit=True, out=work / "fast")
    slow = log_run(uri, experiment_id, "slow-lr", 0.002, overfit=False, out=work / "slow")
    return work, uri, fast, slow


def test_compare_writes_overlay_plot_and_summary_table(two_runs):
    work, uri, fast, slow = two_runs
    result = run_cli("compare", fast, slow, "--tracking-uri", uri, "--out", "cmp", cwd=work, timeout=300)
    assert result.returncode == 0, result.stderr
    table = result.stdout.splitlines()
    assert table[0].split()[:4] == ["run", "steps", "initial", "final"]
    fast_row = next(line for line in table if line.startswith("fast-lr"))
    slow_row = next(line for line in table if line.startswith("slow-lr"))
    assert fast_row.split()[1] == "200" and "overfitting" in fast_row
    assert slow_row.endswith("none")
    doc = json.loads((work / "cmp" / COMPARE_JSON).read_text())
    assert list(doc) == [fast, slow]
    assert doc[fast]["name"] == "fast-lr"
    assert doc[fast]["final_loss"] == pytest.approx(6.0 * math.exp(-2.0))
    initial, final = 6.0 * math.exp(-0.002 * 10), 6.0 * math.exp(-0.002 * 200)
    assert doc[slow]["loss_reduction_pct"] == pytest.approx(100 * (initial - final) / initial)
    with Image.open(work / "cmp" / COMPARE_PNG) as image:
        colors = {c for _, c in image.convert("RGB").getcolors(maxcolors=1 << 20)}
    assert (31, 119, 180) in colors and (255, 127, 14) in colors  # one color per run


def test_compare_agrees_with_each_runs_own_report(two_runs, tmp_path):
    work, uri, fast, slow = two_runs
    compare = run_cli("compare", fast, slow, "--tracking-uri", uri, "--out", str(tmp_path / "c"), cwd=work)
    assert compare.returncode == 0, compare.stderr
    result = run_cli("report", fast, "--tracking-uri", uri, "--out", str(tmp_path / "r"), cwd=work)
    assert result.returncode == 0, result.stderr
    own = json.loads((tmp_path / "r" / "summary.json").read_text())
    compared = json.loads((tmp_path / "c" / COMPARE_JSON).read_text())[fast]
    assert {k: v for k, v in compared.items() if k != "name"} == own
    assert "diagnostics\n  overfitting:" in result.stdout
    assert "steps        200 (20 logged)" in result.stdout


def test_compare_needs_two_runs(two_runs):
    work, uri, fast, _ = two_runs
    result = run_cli("compare", fast, "--tracking-uri", uri, cwd=work, timeout=300)
    assert result.returncode == 2 and "at least two" in result.stderr
