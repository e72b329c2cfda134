"""The training engine for real: DeepSpeed on 2 CPU ranks (gloo) under torchrun, a tiny GPT,
MLflow on sqlite. Every ZeRO stage and offload; resume; a kill during a save; early stopping; the
NaN guard; a refused resume on another worker count."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from orchestrator.track.mlflow_run import client
from orchestrator.train.checkpoint import MARKER, complete_checkpoints, latest_complete_checkpoint
from tests.conftest import run_cli
from tests.train.harness import STAGE_RUNS, engine_spec, make_plan, metric_history, output, run_engine

pytestmark = [pytest.mark.slow]

FP32_RUNS = [name for name in STAGE_RUNS if "bf16" not in name]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("engine")


@pytest.fixture(scope="module")
def stage_runs(trained_runs):
    """Each configuration trained once for 20 steps; shared by the tests below (and the export tests)."""
    return {name: trained_runs[name] for name in STAGE_RUNS}


def losses(plan) -> dict[int, float]:
    return dict(metric_history(plan, "train_loss"))


@pytest.mark.parametrize("name", list(STAGE_RUNS))
def test_every_stage_learns(stage_runs, name):
    loss = losses(stage_runs[name])
    assert sorted(loss) == list(range(1, 21))
    assert abs(loss[1] - math.log(300)) < 0.5
    assert sum(loss[s] for s in range(16, 21)) / 5 < loss[1] - 0.5


def test_metrics_time_evaluations_and_checkpoints_and_the_run_ends_on_the_whole_validation_split(stage_runs):
    plan = stage_runs["stage3"]  # ZeRO-3: every rank must run the same forwards, padding included
    assert [s for s, _ in metric_history(plan, "eval_seconds")] == [10, 20]
    assert [s for s, _ in metric_history(plan, "checkpoint_seconds")] == [5, 10, 15, 20]
    ((step, final),) = metric_history(plan, "final_val_loss")
    assert step == 20 and abs(final - dict(metric_history(plan, "val_loss"))[20]) < 0.5
    assert [s for s, _ in metric_history(plan, "final_eval_seconds")] == [20]
    summary = json.loads((Path(plan.checkpoint_dir) / "summary.json").read_text())
    assert (summary["final_val_loss"], summary["final_val_scope"]) == (final, "whole validation split")


@pytest.mark.parametrize("name", [n for n in FP32_RUNS if n != "stage0"])
def test_stages_agree_with_stage0_on_the_first_steps(stage_runs, name):
    reference, other = losses(stage_runs["stage0"]), losses(stage_runs[name])
    for step in range(1, 6):
        assert other[step] == pytest.approx(reference[step], abs=2e-4), (step, reference, other)


def test_gradient_accumulation_matches_the_same_global_batch_in_one_micro_batch(stage_runs, work):
    spec = engine_spec(steps=6).replace(
        "micro_batch_size: 4", "micro_batch_size: 2, gradient_accumulation_steps: 2"
    )
    plan = make_plan(work, spec, "accumulation")
    result = run_engine(plan)
    assert result.returncode == 0, output(result)
    accumulated, reference = losses(plan), losses(stage_runs["stage2"])
    assert plan.global_batch_size == stage_runs["stage2"].global_batch_size == 8
    for step in range(1, 4):  # the schedules differ after warmup (6 vs 20 steps in total)
        assert accumulated[step] == pytest.approx(reference[step], abs=2e-4), step


def test_checkpoints_are_complete_and_pruned_to_the_last_two_plus_best(stage_runs):
    plan = stage_runs["stage2"]
    run_dir = Path(plan.checkpoint_dir)
    steps = [c.step for c in complete_checkpoints(run_dir)]
    assert steps[-2:] == [15, 20] and len(steps) <= 3
    assert (run_dir / "latest").read_text() == "step-20"
    best = (run_dir / "best").read_text()
    assert (run_dir / best / MARKER).is_file()
    marker = json.loads((run_dir / "step-20" / MARKER).read_text())
    assert marker["world_size"] == 2 and marker["zero_stage"] == 2 and marker["metric"] == "val_loss"
    assert len(list((run_dir / "step-20").glob("*optim_states.pt"))) == 2


def test_resume_continues_like_an_uninterrupted_run(stage_runs, work):
    uninterrupted = stage_runs["stage2"]
    plan = make_plan(work, engine_spec(stage=2), "resumed")
    first = run_engine(plan, "--stop-after-step", "10")
    assert first.returncode == 0, output(first)
    assert latest_complete_checkpoint(plan.checkpoint_dir).step == 10
    assert max(losses(plan)) == 10, "the first attempt stopped at step 10"
    second = run_engine(plan)
    assert second.returncode == 0, output(second)
    assert "resumed from" in second.stdout and "step 10, epoch 1" in second.stdout
    resumed, reference = losses(plan), losses(uninterrupted)
    for step in range(11, 21):
        assert resumed[step] == pytest.approx(reference[step], abs=1e-5), step
    lr = dict(metric_history(plan, "learning_rate"))
    assert lr == pytest.approx(dict(metric_history(uninterrupted, "learning_rate")), rel=1e-9)
    # the same MLflow run holds exactly one value per step
    rows = client(plan.tracking_uri).get_metric_history(plan.run_id, "train_loss")
    assert sorted(m.step for m in rows) == list(range(1, 21))
    live = json.loads((Path(plan.checkpoint_dir) / "training_metrics.json").read_text())
    assert live["steps"] == list(range(1, 21)), "the live artifacts cover the steps before the restart"


def test_a_kill_during_a_save_leaves_nothing_that_resume_would_load(work):
    plan = make_plan(work, engine_spec(stage=2), "killed")
    killed = run_engine(plan, "--kill-during-save-at", "10")
    assert killed.returncode != 0
    run_dir = Path(plan.checkpoint_dir)
    assert (run_dir / "step-10").is_dir(), "the kill happened while step-10 was being written"
    assert not (run_dir / "step-10" / MARKER).exists()
    assert latest_complete_checkpoint(run_dir).step == 5
    assert (run_dir / "latest").read_text() == "step-5"
    again = run_engine(plan)
    assert again.returncode == 0, output(again)
    assert "step 5, epoch 1" in again.stdout
    assert latest_complete_checkpoint(run_dir).step == 20
    assert sorted(losses(plan)) == list(range(1, 21))


def test_early_stopping_stops_and_says_why(work):
    spec = engine_spec(eval_interval=2, es_enabled="true", patience=1, min_delta=10.0)
    plan = make_plan(work, spec, "early")
    result = run_engine(plan)
    assert result.returncode == 0, output(result)
    assert "early stopping: val_loss has not improved by more than 10 for 1 evaluations" in result.stdout
    assert max(losses(plan)) == 4, "first evaluation at step 2 sets the best, the second stops"
    assert latest_complete_checkpoint(plan.checkpoint_dir).step == 4
    tags = client(plan.tracking_uri).get_run(plan.run_id).data.tags
    assert tags["orchestrator.stop_reason"].startswith("early stopping: val_loss")


def test_a_nan_loss_stops_with_a_clear_message(work):
    plan = make_plan(work, engine_spec(steps=8), "nan-stop")
    result = run_engine(plan, "--nan-at-micro-batch", "3")
    assert result.returncode != 0
    assert "NonFiniteLossError: the loss became NaN/inf at step 3" in result.stderr
    assert latest_complete_checkpoint(plan.checkpoint_dir) is None, "nothing was saved after the NaN"


def test_a_nan_loss_is_skipped_and_counted(work):
    spec = engine_spec(steps=8, train_extra=", nan_policy: skip")
    plan = make_plan(work, spec, "nan-skip")
    result = run_engine(plan, "--nan-at-micro-batch", "3")
    assert result.returncode == 0, output(result)
    assert "non-finite loss at step 3" in result.stdout and "batch skipped (1/10 allowed)" in result.stdout
    assert dict(metric_history(plan, "skipped_batches"))[8] == 1.0
    assert all(math.isfinite(v) for v in losses(plan).values())


def test_another_worker_count_restores_through_a_universal_checkpoint(stage_runs):
    """A finished 2-worker ZeRO-2 run started again on 1 worker: its last checkpoint is converted once
    to DeepSpeed's universal form (kept beside it, complete) and loaded; nothing is left to train."""
    from orchestrator.plan import build_plan
    from orchestrator.spec import parse_spec

    plan = stage_runs["stage2"]
    latest = latest_complete_checkpoint(plan.checkpoint_dir)
    one_worker = parse_spec(
        plan.spec_text, overrides=["cluster.num_workers=1", "train.gradient_accumulation_steps=2"]
    )
    plan = build_plan(one_worker, plan.data, plan.identity)  # the same global batch of 8
    result = run_engine(plan, nproc=1)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "converted from 2 workers (universal checkpoint)" in result.stdout
    universal = Path(latest.location + "_universal")
    assert (universal / MARKER).is_file() and (universal / "zero").is_dir()
    assert latest_complete_checkpoint(plan.checkpoint_dir).tag == latest.tag  # still the latest


def generate(plan, work, *extra: str):
    args = ("generate", plan.run_id, "--prompt", "The for statement", "--max-new-tokens", "12")
    return run_cli(*args, *extra, "--tracking-uri", plan.tracking_uri, cwd=work)


def test_generate_is_deterministic_with_a_seed(stage_runs, trained_runs):
    plan, work = stage_runs["stage2"], trained_runs.work
    first, again = generate(plan, work, "--seed", "7"), generate(plan, work, "--seed", "7")
    other = generate(plan, work, "--seed", "8", "--checkpoint", "latest")
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.startswith("The for statement") and len(first.stdout) > len("The for statement") + 5
    assert first.stdout == again.stdout
    assert other.returncode == 0 and other.stdout != first.stdout


@pytest.mark.parametrize("name", ["stage0", "stage3"])
def test_generate_consolidates_every_stage(stage_runs, trained_runs, name):
    result = generate(stage_runs[name], trained_runs.work, "--seed", "1", "--temperature", "0")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("The for statement")


@pytest.mark.parametrize("name", list(STAGE_RUNS))
def test_every_configuration_passes_the_data_only_check_and_loads(stage_runs, name):
    """Offload and bf16 write other DeepSpeed state; all of it must stay within the allowlist."""
    import torch

    from orchestrator.export.weights import consolidated_state_dict, pick_checkpoint
    from orchestrator.generate import load_from_run
    from orchestrator.train.safe_load import weights_only_loading

    plan = stage_runs[name]
    info = pick_checkpoint(plan.checkpoint_dir, "latest")
    with weights_only_loading():  # every file a resume reads, optimizer states included
        for path in sorted(info.path.glob("*.pt")):
            torch.load(path, map_location="cpu")
    assert set(consolidated_state_dict(info)) >= {"tok_emb.weight", "blocks.1.ffn.2.weight"}
    assert load_from_run(plan.spec, plan.checkpoint_dir, plan.data.tokenizer_path).model.training is False


def test_nothing_is_compiled_on_the_way_to_the_first_step(stage_runs, trained_runs):
    """A machine's first run builds no DeepSpeed op (its CPU communication op took 30-60 s): the
    stage runs start with an empty TORCH_EXTENSIONS_DIR."""
    extensions = trained_runs.extensions_dir
    assert not extensions.exists() or not any(extensions.rglob("*")), list(extensions.rglob("*"))
    for name in stage_runs:
        result = trained_runs.results[name]
        assert "shm_comm" not in result.stdout + result.stderr, name


def test_an_uncompiled_model_imports_nothing_of_torch_compile(stage_runs, trained_runs):
    """DeepSpeed's ZeRO imports its Muon optimizer's module, whose torch.compile decorators import
    inductor's compiler (about 1.2 s of CPU per rank), unless the worker's stand-ins take its place."""
    for name in stage_runs:
        result = trained_runs.results[name]
        said = result.stdout.count("torch._inductor.compile_fx imported: False")  # the ranks' lines may join
        assert said == 2 and "imported: True" not in result.stdout, (name, result.stdout[-2000:])


def test_evaluates_at_each_epoch_end_and_reshuffles_epochs(work):
    corpus = work / "small.txt"
    corpus.write_text(
        "\n\n".join(f"Paragraph {i}: the for statement iterates over items." for i in range(300))
    )
    spec = engine_spec(steps=1000, eval_interval=50).replace("epochs: 1", "epochs: 2")
    spec += f"data: {{corpus: files, files: [{corpus}]}}\n"
    plan = make_plan(work, spec, "epochs")
    assert plan.total_steps == 2 * plan.steps_per_epoch < 50
    result = run_engine(plan)
    assert result.returncode == 0, output(result)
    end = plan.steps_per_epoch
    assert [s for s, _ in metric_history(plan, "val_loss")] == [end, 2 * end]
    epochs = dict(metric_history(plan, "epoch"))
    assert epochs[end] == 1.0 and epochs[end + 1] == 2.0
