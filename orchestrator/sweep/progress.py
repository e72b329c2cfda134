"""The Ray Tune callback that keeps a sweep's live table (``orchestrator.sweep.table``) current.

It runs in the sweep's driver. Tune pickles its callbacks with the experiment (``Tuner.restore``
loads them again), so the callback holds only plain values (the sweep's run id, where its trials'
directories are) and finds the table of this process through ``TABLES``. Between evaluations it reads
each running trial's ``status.json`` (rank 0 rewrites it at every logging step) for the live step.
"""

from __future__ import annotations

import time

from ray.tune import Callback

from orchestrator.sweep.table import (
    ENDED,
    FAILED,
    PENDING,
    RUNNING,
    STATUS_POLL_S,
    TABLES,
    SweepTable,
    trial_error,
    trial_params,
    trial_run_dir,
)


class SweepProgress(Callback):
    def __init__(self, sweep_id: str, metric: str, sweep_dir: str, sweep_run_name: str):
        self.sweep_id, self.metric = sweep_id, metric
        self.sweep_dir, self.sweep_run_name = sweep_dir, sweep_run_name
        self._last_poll = 0.0

    def _update(self, trial, **changes) -> None:
        table = TABLES.get(self.sweep_id)
        if table is not None:
            table.update(trial.trial_id, params=trial_params(trial), **changes)

    def on_trial_start(self, iteration, trials, trial, **info):
        self._update(trial, state=RUNNING)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        step = int(result.get("step", 0))
        table = TABLES.get(self.sweep_id)
        row = table.rows.get(trial.trial_id) if table else None
        live = max(step, row.step or 0) if row else step  # the status file may be ahead already
        self._update(trial, state=RUNNING, step=live, value=result.get(self.metric), eval_step=step)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._update(trial, state=ENDED, completed=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._update(trial, state=FAILED, completed=True, error=trial_error(trial))

    def on_step_end(self, iteration, trials, **info):
        table = TABLES.get(self.sweep_id)
        if table is None:
            return
        for trial in trials:  # trials just created, and on a resume those that ended before it
            if trial.trial_id not in table.rows:
                done = trial.status in ("TERMINATED", "ERROR")
                state = {"TERMINATED": ENDED, "ERROR": FAILED}.get(trial.status, PENDING)
                table.update(trial.trial_id, params=trial_params(trial), state=state, completed=done)
        if time.monotonic() - self._last_poll >= STATUS_POLL_S:
            self._last_poll = time.monotonic()
            self._poll_steps(table)

    def _poll_steps(self, table: SweepTable) -> None:
        from orchestrator.track.status import read_status

        for row in list(table.rows.values()):
            if row.state != RUNNING:
                continue
            status = read_status(trial_run_dir(self.sweep_dir, self.sweep_run_name, row.trial_id))
            if status and status.get("step") and status["step"] != row.step:
                table.update(row.trial_id, step=int(status["step"]))
