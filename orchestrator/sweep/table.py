"""The live table of a sweep: one row per trial (parameters, step, metric, state), kept up to date by a
Ray Tune callback in the sweep's driver and by each trial's ``status.json`` between evaluations.

The callback (``orchestrator.sweep.progress``) finds the table of this process through ``TABLES``.

>>> table = SweepTable("val_loss", total_steps=20)
>>> table.update("ab12c_00000", params={"optimizer.lr": 0.003}, state=RUNNING, step=10, value=5.1)
>>> print(table.render())  # doctest: +NORMALIZE_WHITESPACE
trial  parameters        step   val_loss  state
00000  optimizer.lr=0.003  10/20  5.1000    RUNNING
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from orchestrator.sweep.space import PARAMS_KEY, describe_params, plain
from orchestrator.track.runs import FAILED_STATUS, FINISHED_STATUS, KILLED_STATUS, RUNNING_STATUS, JobState

PENDING, RUNNING, ENDED, FAILED = JobState.PENDING.value, RUNNING_STATUS, "ENDED", FAILED_STATUS
# after the driver settled each trial's run: its MLflow status, or why it stopped
FINISHED, STOPPED_EARLY, KILLED = FINISHED_STATUS, "STOPPED EARLY", KILLED_STATUS
STATUS_POLL_S = 1.0


@dataclass(frozen=True)
class TrialRow:
    trial_id: str
    params: dict[str, Any]
    state: str = PENDING
    step: int | None = None  # the last step the trial reached
    value: float | None = None  # the metric at its last evaluation
    eval_step: int | None = None  # the step of that evaluation
    error: str | None = None
    completed: bool = False  # Tune is done with it (trained to the end, stopped early, or failed)

    @property
    def short_id(self) -> str:
        return self.trial_id.rsplit("_", 1)[-1]


@dataclass
class SweepTable:
    """Every trial Tune knows of, in the order it created them; ``on_change`` sees each update."""

    metric: str
    total_steps: int
    on_change: Callable[[SweepTable, list[TrialRow]], None] | None = None
    rows: dict[str, TrialRow] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def update(self, trial_id: str, **changes) -> None:
        with self.lock:
            old = self.rows.get(trial_id) or TrialRow(trial_id, changes.pop("params", {}))
            changes.pop("params", None)
            new = replace(old, **changes)
            if new == self.rows.get(trial_id):
                return
            self.rows[trial_id] = new
        if self.on_change:
            self.on_change(self, [new])

    @property
    def unfinished(self) -> list[TrialRow]:
        """Trials Tune had not finished with when the sweep stopped (interrupted)."""
        return [row for row in self.rows.values() if not row.completed]

    def render(self) -> str:
        header = ("trial", "parameters", "step", self.metric, "state")
        lines = [header, *(self._cells(row) for row in self.rows.values())]
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        return "\n".join(
            "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
        )

    def render_row(self, row: TrialRow) -> str:
        return "  ".join(self._cells(row))

    def _cells(self, row: TrialRow) -> tuple[str, ...]:
        step = f"{row.step}/{self.total_steps}" if row.step is not None else "-"
        value = (
            "-" if row.value is None else f"{row.value:.4f}" if math.isfinite(row.value) else str(row.value)
        )
        state = row.state if not row.error else f"{row.state}: {row.error}"
        return (row.short_id, describe_params(row.params) or "-", step, value, state)


# The tables of sweeps driven by this process, by the sweep's MLflow run id.
TABLES: dict[str, SweepTable] = {}


def trial_params(trial) -> dict[str, Any]:
    return {path: plain(value) for path, value in trial.config.get(PARAMS_KEY, {}).items()}


def trial_error(trial) -> str:
    """The first line of the innermost error of a failed trial (Tune wraps it in Ray's errors)."""
    error = trial.get_error() if hasattr(trial, "get_error") else None
    return root_message(error) if error else "failed (see the trial's logs)"


def root_message(exc: BaseException) -> str:
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = getattr(exc, "cause", None) or exc.__cause__
        if not isinstance(inner, BaseException):
            break
        exc = inner
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def run_dir_name(sweep_run_name: str, trial_id: str) -> str:
    return f"{sweep_run_name}-{trial_id}"


def trial_run_dir(sweep_dir: str, sweep_run_name: str, trial_id: str) -> str:
    return str(Path(sweep_dir) / run_dir_name(sweep_run_name, trial_id))
