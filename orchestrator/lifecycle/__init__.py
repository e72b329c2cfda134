"""A run's life, the same for every entry point (the command line, the driver a cluster job starts, a
sweep trial): resolve the spec, store it with the run, create the run directory and MLflow run, launch
through a launcher, finish tracking truthfully (FINISHED, FAILED, or KILLED on Ctrl-C/SIGTERM), write a
post-mortem on failure, and resume.

May import: spec, data, plan, track, report, train (checkpoint rules). Never launchers or the CLI: a
launcher is handed in (``execute(plan, launcher)``), so every backend goes through the same code.
"""

from orchestrator.lifecycle.data import known_data, prepare_data, recorded_data
from orchestrator.lifecycle.run import (
    Outcome,
    Resumed,
    execute,
    existing_plan,
    finish,
    plan_run,
    reopen_run,
    resume_command,
    resume_run,
    settle_detached,
    start_run,
    submit_detached,
)
from orchestrator.lifecycle.ticket import RunTicket, plan_from_ticket

__all__ = [
    "Outcome",
    "Resumed",
    "RunTicket",
    "execute",
    "existing_plan",
    "finish",
    "known_data",
    "plan_from_ticket",
    "plan_run",
    "prepare_data",
    "recorded_data",
    "reopen_run",
    "resume_command",
    "resume_run",
    "settle_detached",
    "start_run",
    "submit_detached",
]
