"""The sweep report from MLflow alone (a real sqlite store holding a parent run and its trials):
trials sorted by the metric, curves, one scatter per parameter, best_spec.yaml; and how the driver
says each trial ended."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from orchestrator.cli import main
from orchestrator.spec import load_spec, parse_spec
from orchestrator.sweep.report import BEST_SPEC, CURVES_PNG, TRIALS_JSON, build_sweep_report
from orchestrator.sweep.results import TrialResult, best_trial, ranked
from orchestrator.sweep.settle import how_it_ended
from orchestrator.sweep.table import ENDED, FAILED, RUNNING, TrialRow
from orchestrator.track.runs import JobState

SWEEP_SPEC = """\
name: demo
optimizer: {lr: 3.0e-3}
schedule: {warmup_steps: 4, min_lr: 3.0e-4}
train: {max_steps: 20, eval_interval: 10, log_interval: 5}
sweep:
  parameters:
    optimizer.lr: {loguniform: [1.0e-3, 1.0e-2]}
    train.nan_policy: {choice: [stop, skip]}
  num_samples: 3
"""
# (params, MLflow status, stop reason, val_loss at steps 10 and 20)
TRIALS = [
    ({"optimizer.lr": 0.002, "train.nan_policy": "stop"}, "FINISHED", None, [5.0, 4.6]),
    (
        {"optimizer.lr": 0.009, "train.nan_policy": "skip"},
        "KILLED",
        "stopped early by ASHA at step 10",
        [4.4],
    ),
    ({"optimizer.lr": 0.005, "train.nan_policy": "skip"}, "FINISHED", None, [4.9, 4.2]),
    ({"optimizer.lr": 0.001, "train.nan_policy": "stop"}, "FAILED", None, []),
]


@pytest.fixture(scope="module")
def sweep_store(tmp_path_factory):
    """A parent run (the sweep spec stored as spec.yaml) and four trial runs, as a sweep leaves them."""
    from orchestrator.track.mlflow_run import client
    from orchestrator.track.runs import (
        CHECKPOINT_DIR_TAG,
        PARENT_RUN_TAG,
        SPEC_ARTIFACT,
        STOP_REASON_TAG,
        SWEEP_TAG,
        TRIAL_ID_TAG,
        TRIAL_PARAMS_TAG,
    )

    tmp_path = tmp_path_factory.mktemp("sweep-store")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow = client(uri)
    experiment = mlflow.create_experiment("demo")
    out = tmp_path / "sweep"
    out.mkdir()
    tags = {SWEEP_TAG: "3", CHECKPOINT_DIR_TAG: str(out)}
    parent = mlflow.create_run(experiment, run_name="demo-sweep", tags=tags).info.run_id
    mlflow.log_text(parent, parse_spec(SWEEP_SPEC).resolved_text(), SPEC_ARTIFACT)
    for i, (params, status, reason, values) in enumerate(TRIALS):
        tags = {PARENT_RUN_TAG: parent, TRIAL_ID_TAG: f"t_{i:05d}", TRIAL_PARAMS_TAG: json.dumps(params)}
        if reason:
            tags[STOP_REASON_TAG] = reason
        run = mlflow.create_run(experiment, run_name=f"demo-sweep-t_{i:05d}", tags=tags).info.run_id
        for step, value in zip((10, 20), values, strict=False):
            mlflow.log_metric(run, "val_loss", value, step=step)
        mlflow.set_terminated(run, status)
    mlflow.create_run(experiment, run_name="unrelated")  # not a trial of this sweep
    return uri, parent, out


def test_the_report_ranks_trials_and_writes_every_file(sweep_store):
    uri, parent, out = sweep_store
    paths, table = build_sweep_report(uri, parent)
    names = sorted(p.name for p in paths)
    assert names == sorted(
        [TRIALS_JSON, CURVES_PNG, "sweep_optimizer.lr.png", "sweep_train.nan_policy.png", BEST_SPEC]
    )
    assert all(p.parent == out and p.stat().st_size > 0 for p in paths)
    doc = json.loads((out / TRIALS_JSON).read_text())
    assert [t["val_loss"] for t in doc["trials"]] == [4.2, 4.4, 4.6, None]  # by the final metric
    assert doc["trials"][1]["stop_reason"] == "stopped early by ASHA at step 10"
    rows = table.splitlines()
    assert rows[1].split()[:3] == ["1", "demo-sweep-t_00002", "(best)"]
    assert rows[-1].split()[:2] == ["-", "demo-sweep-t_00003"] and rows[-1].endswith("FAILED")


def test_best_spec_is_the_sweeps_spec_with_the_winning_values_ready_to_submit(sweep_store, tmp_path):
    uri, parent, _ = sweep_store
    build_sweep_report(uri, parent, tmp_path / "elsewhere")
    text = (tmp_path / "elsewhere" / BEST_SPEC).read_text()
    assert text.startswith("# The best trial of sweep demo-sweep: run demo-sweep-t_00002, val_loss 4.2")
    spec = load_spec(tmp_path / "elsewhere" / BEST_SPEC)
    assert spec.optimizer.lr == 0.005 and spec.train.nan_policy == "skip"
    assert not spec.sweep.enabled  # a training spec, not another sweep
    assert spec.schedule.min_lr == 3.0e-4  # everything else as the sweep had it


def test_report_of_a_parent_run_is_the_sweep_report(sweep_store, capsys):
    uri, parent, out = sweep_store
    assert main(["report", "demo-sweep", "--tracking-uri", uri]) == 0
    printed = capsys.readouterr().out
    assert str(out / BEST_SPEC) in printed and "demo-sweep-t_00002 (best)" in printed
    assert main(["report", parent, "--tracking-uri", uri, "--watch"]) == 2


def test_the_best_trial_trained_to_its_end():
    def trial(status: str, final: float | None) -> TrialResult:
        curve = ((20, final),) if final is not None else ()
        return TrialResult("id", f"{status}-{final}", "t", {}, status, None, curve)

    stopped_lower = trial("KILLED", 1.0)  # stopped early: it trailed at its rung, whatever came later
    trials = [trial("FINISHED", 3.0), stopped_lower, trial("FINISHED", 2.0), trial("FINISHED", float("nan"))]
    assert best_trial(trials, "min").run_name == "FINISHED-2.0"
    assert best_trial(trials, "max").run_name == "FINISHED-3.0"
    assert ranked(trials, "min")[-1].run_name == "FINISHED-nan"
    assert best_trial([stopped_lower, trial("FAILED", None)], "min") is stopped_lower  # none finished
    assert best_trial([trial("FAILED", None)], "min") is None


@pytest.mark.parametrize(
    "row, interrupted, state, says",
    [
        (
            None,
            True,
            JobState.STOPPED,
            "the sweep was interrupted; continue with: orchestrator sweep --resume",
        ),
        (TrialRow("t", {}, RUNNING, 5, 4.0, 5), True, JobState.STOPPED, "interrupted"),
        (
            TrialRow("t", {}, FAILED, 5, None, None, "TrainingFailedError: boom", True),
            False,
            JobState.FAILED,
            None,
        ),
        (TrialRow("t", {}, ENDED, 12, 9.5, 10, None, True), False, JobState.STOPPED, "stopped early by ASHA"),
        (TrialRow("t", {}, ENDED, 20, 4.0, 20, None, True), False, JobState.SUCCEEDED, None),
    ],
)
def test_the_driver_says_why_each_unfinished_trial_ended(row, interrupted, state, says):
    spec = parse_spec(SWEEP_SPEC + "  scheduler: asha\n")
    plan = SimpleNamespace(spec=spec, total_steps=20, run_name="demo-sweep", tracking_uri="sqlite:///x.db")
    got, error, reason = how_it_ended(row, plan, interrupted)
    assert got is state
    if says:
        assert says in reason
    if state is JobState.FAILED:
        assert error == "TrainingFailedError: boom" and reason is None
    if row is not None and state is JobState.STOPPED and not interrupted:
        assert (
            reason == "stopped early by ASHA at step 10 (val_loss 9.5000): it trailed the other trials there"
        )
