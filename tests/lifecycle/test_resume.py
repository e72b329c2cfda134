"""A run started with `--set` is interrupted (Ctrl-C on its terminal) and resumed as the same run.

The resume loads the run's stored resolved spec (file plus the original `--set` values), so a run
trained with ZeRO-3 through `--set deepspeed.zero_stage=3` continues with ZeRO-3. New `--set` values are
applied when they are safe to change on resume and refused (exit 2, before anything starts) otherwise.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from orchestrator.track.mlflow_run import client
from orchestrator.track.runs import RESUME_OVERRIDES_TAG, read_stored_spec
from orchestrator.train.checkpoint import latest_complete_checkpoint
from tests.conftest import TINY_SPEC, run_cli, without_ray_teardown_noise
from tests.servers import stop_process_group

pytestmark = [pytest.mark.slow, pytest.mark.ray]

ORIGINAL_SET = ("deepspeed.zero_stage=3", "train.max_steps=200", "checkpoint.interval=10")
LAST = 200


def _interrupt_after_first_checkpoint(work: Path) -> tuple[int, str]:
    """Start `submit` with --set values, wait for a complete checkpoint, then Ctrl-C its terminal
    (SIGINT to the whole process group, as a shell does)."""
    command = [sys.executable, "-m", "orchestrator", "submit", "tiny.yaml"]
    for value in ORIGINAL_SET:
        command += ["--set", value]
    log = work / "first.log"
    driver = subprocess.Popen(command, cwd=work, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                              start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and driver.poll() is None:
            runs = list((work / "checkpoints").glob("*"))
            if runs and latest_complete_checkpoint(runs[0]) is not None:
                break
            time.sleep(0.1)
        os.killpg(driver.pid, signal.SIGINT)
        returncode = driver.wait(timeout=300)
    finally:
        if driver.poll() is None:
            stop_process_group(driver)
    return returncode, log.read_text()


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    work = tmp_path_factory.mktemp("resume")
    (work / "tiny.yaml").write_text(TINY_SPEC)
    returncode, out = _interrupt_after_first_checkpoint(work)
    (run_dir,) = (work / "checkpoints").iterdir()
    return work, run_dir, returncode, out, latest_complete_checkpoint(run_dir).step


@pytest.fixture(scope="module")
def first_attempt_logged(interrupted) -> int:
    """The last training step the interrupted attempt journaled (read before the resume): a Ctrl-C is
    acted on some steps after it is sent, so the attempt may have trained (and evaluated) past its
    last complete checkpoint."""
    from orchestrator.track.journal import journal_path, journaled_per_step

    return max(journaled_per_step(journal_path(interrupted[1]), ["train_loss"])["train_loss"])


@pytest.fixture(scope="module")
def resumed(interrupted, first_attempt_logged):
    work, run_dir, *_ = interrupted
    return run_cli("submit", "--resume", run_dir.name, "--set", "train.eval_interval=20", cwd=work)


def mlflow_run(work: Path):
    mlflow = client(f"sqlite:///{work / 'mlflow.db'}")
    (run,) = mlflow.search_runs([e.experiment_id for e in mlflow.search_experiments()])
    return mlflow, run


def test_ctrl_c_exits_130_marks_the_run_killed_and_prints_how_to_resume(interrupted):
    work, run_dir, returncode, out, stopped_at = interrupted
    assert returncode == 130, out[-3000:]
    assert 10 <= stopped_at < LAST, "the first attempt was interrupted mid-run"
    assert f"continue   orchestrator submit --resume {run_dir.name}" in out, out[-2000:]
    assert "Traceback" not in without_ray_teardown_noise(out)
    mlflow, run = mlflow_run(work)
    if run.info.status == "RUNNING":
        pytest.fail("the interrupted run is still RUNNING in MLflow")
    steps = sorted(m.step for m in mlflow.get_metric_history(run.info.run_id, "train_loss"))
    assert steps[:1] == [5] and len(steps) == len(set(steps)), "what was logged before Ctrl-C is kept"
    assert (run_dir / "metrics.journal.jsonl").is_file()


def test_the_stored_spec_is_the_resolved_one_with_the_original_set_values(interrupted):
    work, *_ = interrupted
    _, run = mlflow_run(work)
    stored = yaml.safe_load(read_stored_spec(f"sqlite:///{work / 'mlflow.db'}", run.info.run_id))
    assert stored["deepspeed"]["zero_stage"] == 3 and stored["train"]["max_steps"] == LAST
    assert stored["checkpoint"]["interval"] == 10
    assert run.data.params["deepspeed.zero_stage"] == "3"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("optimizer.lr=0.1", "cannot change on resume"),
        ("cluster.num_workers=3", "the global batch (and so the data order and the learning-rate schedule)"),
        ("deepspeed.zero_stage=2", "written with ZeRO stage 3, but this run uses stage 2"),
        ("train.eval_interval=7", "must be a multiple of log_interval"),
    ],
    ids=["unsafe", "worker-count", "zero-stage", "invalid"],
)
def test_a_resume_refuses_what_it_cannot_apply_before_starting_anything(interrupted, override, expected):
    work, run_dir, *_ = interrupted
    before = sorted(p.name for p in run_dir.iterdir())
    result = run_cli("submit", "--resume", run_dir.name, "--set", override, cwd=work, timeout=120)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert expected in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert sorted(p.name for p in run_dir.iterdir()) == before, "nothing in the run directory changed"
    assert mlflow_run(work)[1].info.status == "KILLED"


def test_resume_applies_a_safe_set_value_and_continues_the_zero_3_run(
    interrupted, first_attempt_logged, resumed
):
    work, run_dir, _, _, stopped_at = interrupted
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"resumed from {run_dir / f'step-{stopped_at}'}" in resumed.stdout
    assert "ZeRO stage 3" in resumed.stdout and "with train.eval_interval=20" in resumed.stdout
    assert latest_complete_checkpoint(run_dir).step == LAST
    assert json.loads((run_dir / f"step-{LAST}" / "COMPLETE.json").read_text())["zero_stage"] == 3
    mlflow, run = mlflow_run(work)
    assert run.info.status == "FINISHED" and run.data.tags[RESUME_OVERRIDES_TAG] == "train.eval_interval=20"
    stored = yaml.safe_load(read_stored_spec(f"sqlite:///{work / 'mlflow.db'}", run.info.run_id))
    assert stored["train"]["eval_interval"] == 20 and stored["deepspeed"]["zero_stage"] == 3
    val_steps = sorted(m.step for m in mlflow.get_metric_history(run.info.run_id, "val_loss"))
    # the steps the interrupted attempt logged past its checkpoint keep its values (each step holds one
    # value), so the new interval shows in the evaluations after them
    kept = [s for s in val_steps if stopped_at < s <= first_attempt_logged]
    after = [s for s in val_steps if s > first_attempt_logged]
    assert all(s % 10 == 0 for s in kept), (val_steps, stopped_at, first_attempt_logged)
    assert after and all(s % 20 == 0 for s in after), (val_steps, stopped_at, first_attempt_logged)


def test_the_same_mlflow_run_holds_one_value_per_step(interrupted, resumed):
    work, run_dir, *_ = interrupted
    mlflow, run = mlflow_run(work)
    assert run.info.run_name == run_dir.name
    steps = [m.step for m in mlflow.get_metric_history(run.info.run_id, "train_loss")]
    assert sorted(steps) == list(range(5, LAST + 1, 5))
    lr = dict(sorted((m.step, m.value) for m in mlflow.get_metric_history(run.info.run_id, "learning_rate")))
    assert lr[LAST] == pytest.approx(3e-4), "the schedule ends where an uninterrupted run ends"
    live = json.loads((run_dir / "training_metrics.json").read_text())
    assert live["steps"] == list(range(5, LAST + 1, 5)), "live files cover the steps before the restart"


def test_resume_of_an_unknown_run_is_a_clear_error(interrupted):
    work, *_ = interrupted
    result = run_cli("submit", "--resume", "no-such-run", cwd=work)
    assert result.returncode == 1
    assert "no MLflow run with id or name 'no-such-run'" in result.stderr
    assert "Traceback" not in result.stderr
