"""The whole path, for real: CLI -> spec -> plan -> embedded Ray (2 workers) -> DeepSpeed ZeRO-2
-> MLflow (sqlite) -> live artifacts -> `orchestrator report` rebuilt from MLflow alone."""

from __future__ import annotations

import json
import math
import re
import shutil

import pytest
from PIL import Image, ImageChops

from orchestrator.track.mlflow_run import client
from tests.conftest import REPO, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.ray]

ARTIFACTS = ("training_metrics.json", "training_curve.png", "loss_by_epoch.png")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from tests.conftest import TINY_SPEC

    work = tmp_path_factory.mktemp("pipeline")
    (work / "tiny.yaml").write_text(TINY_SPEC)
    result = run_cli("submit", "tiny.yaml", cwd=work)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run_id = re.search(r"^run id\s+(\w+)$", result.stdout, re.M).group(1)
    run_dir = next((work / "checkpoints").iterdir())
    return work, run_id, run_dir, result


def test_submit_prints_progress_and_where_everything_is(tiny_run):
    _, run_id, run_dir, result = tiny_run
    out = result.stdout
    assert re.search(r"\[train\] step 5/20 epoch 1 loss \d+\.\d+ .* ETA", out)
    assert out.count("[train] step 10/20") == 1, "each progress line is printed once"
    assert f"artifacts  {run_dir}" in out
    assert "MLflow UI  orchestrator ui\n" in out and "then open http://127.0.0.1:5000/#/experiments/" in out
    assert "state      SUCCEEDED" in out
    assert f"orchestrator report {run_id}" in out


def test_metrics_json_has_one_entry_per_logging_step(tiny_run):
    _, _, run_dir, _ = tiny_run
    doc = json.loads((run_dir / "training_metrics.json").read_text())
    assert list(doc) == ["train_loss", "val_loss", "learning_rate", "epochs", "steps"]
    assert doc["steps"] == [5, 10, 15, 20]
    assert all(len(values) == 4 for values in doc.values())
    assert doc["val_loss"][0] is None and doc["val_loss"][2] is None
    assert all(isinstance(v, float) for v in (doc["val_loss"][1], doc["val_loss"][3]))
    assert doc["epochs"] == [1, 1, 1, 1]


def test_training_learns_from_a_sane_start(tiny_run):
    _, _, run_dir, _ = tiny_run
    doc = json.loads((run_dir / "training_metrics.json").read_text())
    assert abs(doc["train_loss"][0] - math.log(300)) < 0.6
    assert doc["train_loss"][-1] < doc["train_loss"][0] - 0.5


def test_learning_rate_warms_up_then_decays(tiny_run):
    work, run_id, _, _ = tiny_run
    history = client(f"sqlite:///{work / 'mlflow.db'}").get_metric_history(run_id, "learning_rate")
    lr = [m.value for m in sorted(history, key=lambda m: m.step)]
    # linear warmup over 8 steps to 3e-3, cosine to 3e-4 at step 20; logged at steps 5, 10, 15, 20
    assert lr[0] == pytest.approx(3e-3 * 5 / 8)
    assert lr[1] == pytest.approx(3e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 11))))
    assert lr[0] < lr[1] > lr[2] > lr[3]
    assert lr[3] == pytest.approx(3e-4)


def test_pngs_are_valid_images_of_plausible_size(tiny_run):
    _, _, run_dir, _ = tiny_run
    for name in ARTIFACTS[1:]:
        with Image.open(run_dir / name) as image:
            image.verify()
        with Image.open(run_dir / name) as image:
            assert image.size[0] >= 600 and image.size[1] >= 300


def test_mlflow_holds_the_metrics_at_the_expected_steps(tiny_run):
    work, run_id, run_dir, _ = tiny_run
    mlflow = client(f"sqlite:///{work / 'mlflow.db'}")
    steps = {
        key: sorted(m.step for m in mlflow.get_metric_history(run_id, key))
        for key in ("train_loss", "train_perplexity", "learning_rate", "epoch", "tokens_per_second")
    }
    assert all(s == [5, 10, 15, 20] for s in steps.values()), steps
    for key in ("val_loss", "val_perplexity", "val_accuracy"):
        assert sorted(m.step for m in mlflow.get_metric_history(run_id, key)) == [10, 20]
    run = mlflow.get_run(run_id)
    metrics = run.data.metrics
    assert metrics["val_perplexity"] == pytest.approx(math.exp(metrics["val_loss"]))
    assert 0.0 < metrics["val_accuracy"] < 1.0
    assert run.info.status == "FINISHED"
    assert run.data.params["deepspeed.zero_stage"] == "2"
    assert run.data.params["cluster.num_workers"] == "2"
    assert run.data.tags["orchestrator.checkpoint_dir"] == str(run_dir)
    logged = {a.path for a in mlflow.list_artifacts(run_id)}
    assert {"spec.yaml", "report"} <= logged


def test_report_rebuilt_from_mlflow_equals_the_live_artifacts(tiny_run, tmp_path):
    work, run_id, run_dir, _ = tiny_run
    result = run_cli("report", run_id, "--out", str(tmp_path), cwd=work)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / ARTIFACTS[0]).read_bytes() == (run_dir / ARTIFACTS[0]).read_bytes()
    for name in ARTIFACTS[1:]:
        with Image.open(tmp_path / name) as rebuilt, Image.open(run_dir / name) as live:
            assert ImageChops.difference(rebuilt.convert("RGB"), live.convert("RGB")).getbbox() is None


def test_report_without_out_rewrites_the_run_directory(tiny_run, tmp_path):
    work, run_id, run_dir, _ = tiny_run
    live = (run_dir / ARTIFACTS[0]).read_bytes()
    for name in ARTIFACTS:
        shutil.move(run_dir / name, tmp_path / name)
    result = run_cli("report", run_id, cwd=work)
    assert result.returncode == 0, result.stderr
    assert (run_dir / ARTIFACTS[0]).read_bytes() == live
    assert all((run_dir / name).is_file() for name in ARTIFACTS)


def test_a_deepspeed_checkpoint_is_written_at_the_end(tiny_run):
    _, _, run_dir, _ = tiny_run
    assert (run_dir / "latest").read_text() == "step-20"
    assert (run_dir / "step-20" / "mp_rank_00_model_states.pt").is_file()
    assert len(list((run_dir / "step-20").glob("*optim_states.pt"))) == 2


def test_unknown_run_id_is_a_clear_error(tiny_run):
    work, *_ = tiny_run
    result = run_cli("report", "0" * 32, cwd=work)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr


def test_quickstart_is_shipped_with_two_workers_and_zero_2():
    text = (REPO / "configs" / "quickstart.yaml").read_text()
    assert "num_workers: 2" in text and "zero_stage: 2" in text
