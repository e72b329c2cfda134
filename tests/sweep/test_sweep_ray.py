"""Sweeps on a real embedded Ray with the tiny model, run as a user runs them (`orchestrator sweep` in a
child process, its table read while it runs), checked against MLflow and the files they leave.

Two sweeps are shared by the tests of this module:
- a random search of 4 trials over optimizer.lr, 1 worker each (two train at once on 2 cores);
- a grid of 4 learning rates with ASHA, one trial at a time, in which 5.0 diverges (ASHA stops it),
  one trial's worker is killed (the trial fails alone), Ctrl-C interrupts the last trial (the best
  rate, so ASHA never stops it first), and `sweep --resume` continues it from its checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest

from orchestrator.cli import main
from orchestrator.spec import load_spec
from orchestrator.track.mlflow_run import client
from orchestrator.track.runs import (
    BEST_TRIAL_TAG,
    PARENT_RUN_TAG,
    STOP_REASON_TAG,
    SWEEP_TAG,
    TRIAL_PARAMS_TAG,
)
from tests.conftest import wait_for
from tests.sweep.sweep_process import SweepProcess, table_row

pytestmark = [pytest.mark.ray, pytest.mark.slow]

TRIAL = """\
name: tiny
model: {n_layers: 2, n_heads: 2, d_model: 32, context_length: 32, vocab_size: 300}
optimizer: {lr: 3.0e-3, weight_decay: 0.1}
schedule: {warmup_steps: 4, min_lr: 3.0e-4}
train: {epochs: 1, max_steps: MAX_STEPS, micro_batch_size: 4, log_interval: 5, eval_interval: 10,
        eval_batches: 1}
deepspeed: {zero_stage: 2, precision: fp32}
cluster: {backend: ray-local, num_workers: 1, cpus_per_worker: 1}
"""
RANDOM_SWEEP = (
    TRIAL.replace("MAX_STEPS", "20")
    + """\
sweep:
  parameters:
    optimizer.lr: {loguniform: [1.0e-3, 1.0e-2]}
  num_samples: 4
  seed: 0
"""
)
GRID = [3.0e-3, 5.0, 1.0e-3, 1.0e-2]  # runs in this order, one at a time
GRID_SWEEP = (
    TRIAL.replace("MAX_STEPS", "60")
    + """\
checkpoint: {interval: 10}
sweep:
  parameters:
    optimizer.lr: {grid: [3.0e-3, 5.0, 1.0e-3, 1.0e-2]}
  search: grid
  scheduler: asha
  asha: {grace_period: 10, reduction_factor: 2}
  max_concurrent_trials: 1
"""
)


def runs_of(uri: str) -> tuple:
    """(the sweep's parent run, its child runs by their optimizer.lr)."""
    mlflow = client(uri)
    runs = mlflow.search_runs([e.experiment_id for e in mlflow.search_experiments()])
    (parent,) = [r for r in runs if SWEEP_TAG in r.data.tags]
    children = [r for r in runs if r.data.tags.get(PARENT_RUN_TAG) == parent.info.run_id]
    return parent, {json.loads(r.data.tags[TRIAL_PARAMS_TAG])["optimizer.lr"]: r for r in children}


def final_val_loss(uri: str, run) -> float:
    history = client(uri).get_metric_history(run.info.run_id, "val_loss")
    return max(history, key=lambda m: (m.step, m.timestamp)).value


@pytest.fixture(scope="module")
def random_sweep(tmp_path_factory):
    """The random search, with what MLflow held when the table first showed an evaluation."""
    work = tmp_path_factory.mktemp("random-sweep")
    (work / "spec.yaml").write_text(RANDOM_SWEEP)
    sweep = SweepProcess("spec.yaml", cwd=work)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    evaluated = sweep.wait_for_line(lambda line: (row := table_row(line)) and row["value"] != "-")
    parent, children = runs_of(uri)
    during = (
        table_row(evaluated),
        parent.info.status,
        {r.info.run_name: r.info.status for r in children.values()},
    )
    code = sweep.wait()
    return sweep, code, work, uri, during


def test_a_random_search_finishes_with_one_parent_and_four_child_runs(random_sweep):
    sweep, code, work, uri, _ = random_sweep
    assert code == 0, sweep.output
    parent, children = runs_of(uri)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["sweep.parameters.optimizer.lr.loguniform"] == "[0.001, 0.01]"
    assert len(children) == 4 and all(1e-3 <= lr <= 1e-2 for lr in children)
    for lr, run in children.items():
        assert run.info.status == "FINISHED"
        assert float(run.data.params["optimizer.lr"]) == lr  # the trial trained with its value
        assert run.data.params["plan.total_steps"] == "20"
        checkpoint_dir = Path(run.data.tags["orchestrator.checkpoint_dir"])
        assert checkpoint_dir.parent == work / "checkpoints" / parent.info.run_name  # inside the sweep's
        assert (checkpoint_dir / "step-20" / "COMPLETE.json").is_file()
    assert (work / "checkpoints" / parent.info.run_name / "tune").is_dir()


def test_the_table_shows_each_trial_while_it_trains(random_sweep):
    sweep, _, _, _, (row, parent_status, child_statuses) = random_sweep
    assert row["state"] == "RUNNING" and row["step"].endswith("/20") and float(row["value"]) > 0
    assert parent_status == "RUNNING"
    assert "RUNNING" in child_statuses.values()  # the trial was a run in MLflow while it trained
    rows = [r for line in sweep.lines if (r := table_row(line))]
    assert {r["trial"] for r in rows} == {"00000", "00001", "00002", "00003"}
    steps = {r["step"] for r in rows if r["state"] == "RUNNING" and r["step"] != "-"}
    assert len(steps) >= 2 and "20/20" in steps  # the step moved on while the trials trained


def test_the_best_trial_has_the_lowest_final_val_loss_and_its_spec_is_ready(random_sweep, capsys):
    sweep, _, work, uri, _ = random_sweep
    parent, children = runs_of(uri)
    finals = {lr: final_val_loss(uri, run) for lr, run in children.items()}
    best_lr = min(finals, key=finals.get)
    assert parent.data.tags[BEST_TRIAL_TAG] == children[best_lr].info.run_id
    assert parent.data.metrics["best_val_loss"] == pytest.approx(finals[best_lr])
    assert f"best       {children[best_lr].info.run_name}" in sweep.output
    best_spec = work / "checkpoints" / parent.info.run_name / "best_spec.yaml"
    assert load_spec(best_spec).optimizer.lr == best_lr
    # `report` of the parent rebuilds the sweep's report from MLflow, best trial first
    assert main(["report", parent.info.run_id, "--tracking-uri", uri, "--out", str(work / "again")]) == 0
    table = capsys.readouterr().out.split("\n\n")[-1].splitlines()
    assert table[1].split()[1:3] == [children[best_lr].info.run_name, "(best)"]
    assert load_spec(work / "again" / "best_spec.yaml") == load_spec(best_spec)


@pytest.fixture(scope="module")
def grid_sweep(tmp_path_factory):
    """The grid with ASHA: the third trial's worker is killed, Ctrl-C stops the fourth, and a resume
    finishes it. What each step left: the interrupted sweep, MLflow then, the resume."""
    work = tmp_path_factory.mktemp("grid-sweep")
    (work / "spec.yaml").write_text(GRID_SWEEP)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    sweep = SweepProcess("spec.yaml", cwd=work)
    sweep_dir = Path(sweep.value("directory"))
    _kill_worker_of_trial(sweep, sweep_dir, "00002")
    sweep.wait_for_line(
        lambda line: (row := table_row(line)) and row["trial"] == "00002" and "FAILED" in row["state"]
    )
    _status_of_trial(sweep, sweep_dir, "00003", min_step=20)  # it has a checkpoint to resume from
    sweep.interrupt()
    code = sweep.wait()
    parent, children = runs_of(uri)
    resumed = SweepProcess("--resume", sweep_dir.name, cwd=work)
    return SimpleNamespace(
        uri=uri,
        sweep=sweep,
        code=code,
        parent=parent,
        children=children,
        resumed=resumed,
        resumed_code=resumed.wait(),
    )


def _trial_dir(sweep_dir: Path, trial: str) -> Path | None:
    found = [p for p in sweep_dir.glob(f"{sweep_dir.name}-*_{trial}") if p.is_dir()]
    return found[0] if found else None


def _status_of_trial(sweep: SweepProcess, sweep_dir: Path, trial: str, min_step: int) -> dict:
    def probe():
        assert sweep.process.poll() is None, sweep.output
        directory = _trial_dir(sweep_dir, trial)
        try:
            status = json.loads((directory / "status.json").read_text()) if directory else None
        except (OSError, ValueError):
            return None
        return status if status and status["step"] >= min_step else None

    return wait_for(probe, 300, f"trial {trial} at step {min_step}", interval=0.1)


def _kill_worker_of_trial(sweep: SweepProcess, sweep_dir: Path, trial: str) -> None:
    """SIGKILL the trial's training worker, as the kernel's OOM killer would."""
    status = _status_of_trial(sweep, sweep_dir, trial, min_step=5)
    os.kill(status["workers"][0]["pid"], signal.SIGKILL)


def test_a_grid_sweep_runs_exactly_the_grid(grid_sweep):
    assert sorted(grid_sweep.children) == sorted(GRID)
    assert sorted(runs_of(grid_sweep.uri)[1]) == sorted(GRID)  # the resume ran no trial twice
    first = [row for row in map(table_row, grid_sweep.resumed.lines) if row and row["trial"] == "00000"]
    assert first and all(row["state"] == "ENDED" for row in first)  # finished: never running again


def test_asha_stops_the_diverging_trial_early(grid_sweep):
    diverged = grid_sweep.children[5.0]
    assert diverged.info.status == "KILLED"
    assert diverged.data.tags[STOP_REASON_TAG].startswith("stopped early by ASHA at step 10 (val_loss ")
    assert grid_sweep.children[3.0e-3].info.status == "FINISHED"


def test_a_trial_that_fails_fails_alone_with_a_post_mortem(grid_sweep):
    failed = grid_sweep.children[1.0e-3]
    assert failed.info.status == "FAILED"
    assert (Path(failed.data.tags["orchestrator.checkpoint_dir"]) / "post_mortem.md").is_file()
    rows = [row for row in map(table_row, grid_sweep.sweep.lines) if row and row["trial"] == "00002"]
    assert any(row["state"].startswith("FAILED: ") for row in rows)
    assert grid_sweep.children[1.0e-2].info.status != "FAILED"  # the sweep went on with the next trial
    assert runs_of(grid_sweep.uri)[1][1.0e-3].info.status == "FAILED"  # a resume does not retry it


def test_ctrl_c_marks_the_unfinished_trial_killed_and_says_how_to_resume(grid_sweep):
    assert grid_sweep.code == 130, grid_sweep.sweep.output
    assert grid_sweep.parent.info.status == "KILLED"
    stopped = grid_sweep.children[1.0e-2]
    assert stopped.info.status == "KILLED"
    reason = stopped.data.tags[STOP_REASON_TAG]
    assert reason.startswith("the sweep was interrupted; continue with: orchestrator sweep --resume ")
    assert (
        f"continue   orchestrator sweep --resume {grid_sweep.parent.info.run_name}" in grid_sweep.sweep.output
    )


def test_resume_keeps_finished_trials_and_continues_the_interrupted_one(grid_sweep):
    assert grid_sweep.resumed_code == 0, grid_sweep.resumed.output
    before = grid_sweep.children
    parent, after = runs_of(grid_sweep.uri)
    assert parent.info.run_id == grid_sweep.parent.info.run_id and parent.info.status == "FINISHED"
    continued = after[1.0e-2]
    assert continued.info.run_id == before[1.0e-2].info.run_id and continued.info.status == "FINISHED"
    assert STOP_REASON_TAG not in continued.data.tags
    log = (Path(continued.data.tags["orchestrator.checkpoint_dir"]) / "logs" / "worker-0.log").read_text()
    assert "[train] resumed from " in log
    assert after[3.0e-3].info.end_time == before[3.0e-3].info.end_time  # kept, not trained again
    assert after[5.0].info.status == "KILLED" and STOP_REASON_TAG in after[5.0].data.tags
    assert math.isfinite(parent.data.metrics["best_val_loss"])
    assert parent.data.tags[BEST_TRIAL_TAG] in {after[3.0e-3].info.run_id, continued.info.run_id}
