"""Hyperparameter sweeps: the spec's ``sweep`` section searched by Ray Tune, every trial an
orchestrator run (a child of the sweep's parent run in MLflow), compared by the sweep report.

    plan = start_sweep(load_spec("configs/sweep-lr.yaml"), spec_dir="configs")  # the parent run
    outcome = run_sweep(plan, on_change=print_table)    # Ray Tune schedules the trials
    outcome = resume_sweep(reopen_sweep("sweep-lr-20250101-120000", tracking_uri), on_change=...)
    paths, trials = build_sweep_report(tracking_uri, parent_run_id)   # `orchestrator report PARENT`

May import: every layer below it (spec, plan, track, report, lifecycle, launchers). Only the command
line imports it.
"""

from orchestrator.sweep.driver import (
    SweepOutcome,
    check_grace_period,
    check_sweepable,
    describe_sweep,
    reopen_sweep,
    resume_command,
    resume_sweep,
    run_sweep,
    start_sweep,
)
from orchestrator.sweep.report import build_sweep_report, trials_table
from orchestrator.sweep.table import SweepTable

__all__ = [
    "SweepOutcome",
    "SweepTable",
    "build_sweep_report",
    "check_grace_period",
    "check_sweepable",
    "describe_sweep",
    "reopen_sweep",
    "resume_command",
    "resume_sweep",
    "run_sweep",
    "start_sweep",
    "trials_table",
]
