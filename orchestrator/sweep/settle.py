"""How each trial's run ends when Ray Tune is done with it, decided by the sweep's driver.

A trial that trains to its end finishes its own run. Every run Tune left RUNNING is finished here,
since only the driver knows why it stopped: FAILED with its error (and a post-mortem), or KILLED with
``orchestrator.stop_reason``: stopped early by ASHA, or the sweep was interrupted (with the command
that continues it).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from orchestrator.lifecycle import existing_plan, finish
from orchestrator.lifecycle import resume_command as lifecycle_resume_command
from orchestrator.plan import Plan
from orchestrator.sweep.table import ENDED, FAILED, SweepTable, TrialRow
from orchestrator.track.runs import (
    RUNNING_STATUS,
    STOP_REASON_TAG,
    TRIAL_ID_TAG,
    JobHandle,
    JobState,
    child_runs,
    set_tags,
)

log = logging.getLogger(__name__)


def settle_trials(plan: Plan, table: SweepTable, interrupted: bool, cwd: Path) -> None:
    """Finish every trial run Tune left RUNNING, saying why it ended (see the module docstring)."""
    rows = table.rows
    for run in child_runs(plan.tracking_uri, plan.run_id):
        if run.info.status != RUNNING_STATUS:
            continue
        state, error, reason = how_it_ended(rows.get(run.data.tags.get(TRIAL_ID_TAG, "")), plan, interrupted)
        trial = existing_plan(run.info.run_id, plan.tracking_uri, (), cwd)
        if reason:
            set_tags(plan.tracking_uri, run.info.run_id, {STOP_REASON_TAG: reason})
        log.debug("trial run %s ended %s: %s", trial.run_name, state.value, error or reason)
        finish(trial, JobHandle("ray-local", run.info.run_id, state, error))


def how_it_ended(
    row: TrialRow | None, plan: Plan, interrupted: bool
) -> tuple[JobState, str | None, str | None]:
    """(state, error, stop reason) of a trial whose run Tune left RUNNING."""
    if row is None or not row.completed:
        why = "the sweep was interrupted" if interrupted else "the sweep ended before the trial did"
        return JobState.STOPPED, None, f"{why}; continue with: {resume_command(plan)}"
    if row.state == FAILED:
        return JobState.FAILED, row.error, None
    if row.state == ENDED and row.eval_step is not None and row.eval_step >= plan.total_steps:
        return JobState.SUCCEEDED, None, None  # trained to its end; only its finish was cut short
    sweep = plan.spec.sweep
    at = f"at step {row.eval_step}" if row.eval_step is not None else "before its first evaluation"
    value = "" if row.value is None or not math.isfinite(row.value) else f" ({sweep.metric} {row.value:.4f})"
    if sweep.scheduler == "asha":
        return JobState.STOPPED, None, f"stopped early by ASHA {at}{value}: it trailed the other trials there"
    return JobState.STOPPED, None, f"stopped by Ray Tune {at}{value}"


def resume_command(plan: Plan) -> str:
    """The command that continues this sweep."""
    return lifecycle_resume_command(plan, "sweep")
