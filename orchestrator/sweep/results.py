"""A sweep's trials as MLflow records them: their values, how each ended, the metric at each
evaluation; which one is best; and the spec with the best trial's values.

Everything here reads MLflow only (and the parent's stored spec), so the sweep's driver at the end and
``orchestrator report PARENT`` afterwards agree.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import yaml

from orchestrator.errors import UsageError
from orchestrator.spec.sweep import SweepSpec
from orchestrator.track.runs import (
    FINISHED_STATUS,
    STOP_REASON_TAG,
    TRIAL_ID_TAG,
    TRIAL_PARAMS_TAG,
    child_runs,
    find_run,
    is_sweep_parent,
    read_stored_spec,
)


@dataclass(frozen=True)
class TrialResult:
    run_id: str
    run_name: str
    trial_id: str
    params: dict[str, Any]
    status: str  # MLflow's: FINISHED, FAILED, KILLED (RUNNING while the sweep runs)
    stop_reason: str | None
    curve: tuple[tuple[int, float], ...]  # (step, metric) at every evaluation

    @property
    def final(self) -> float | None:
        """The metric at the trial's last evaluation."""
        return self.curve[-1][1] if self.curve else None

    @property
    def final_step(self) -> int | None:
        return self.curve[-1][0] if self.curve else None

    @property
    def has_metric(self) -> bool:
        return self.final is not None and math.isfinite(self.final)


@dataclass(frozen=True)
class SweepRecord:
    """The parent run of a sweep and its sweep section (from the spec it stored)."""

    run_id: str
    run_name: str
    spec_text: str
    sweep: SweepSpec


def read_sweep(tracking_uri: str, run_ref: str) -> SweepRecord:
    run = find_run(tracking_uri, run_ref)
    if not is_sweep_parent(run):
        raise UsageError(
            f"run {run_ref} is not a sweep's parent run; hint: `orchestrator report` of a training run "
            "rebuilds its own report"
        )
    text = read_stored_spec(tracking_uri, run.info.run_id)
    sweep = SweepSpec.model_validate((yaml.safe_load(text) or {}).get("sweep", {}))
    return SweepRecord(run.info.run_id, run.info.run_name or run.info.run_id, text, sweep)


def read_trials(tracking_uri: str, parent_run_id: str, metric: str) -> list[TrialResult]:
    """Every trial run of the sweep, oldest first, with the metric at each of its evaluations."""
    from orchestrator.report.mlflow_history import read_history

    trials = []
    for run in child_runs(tracking_uri, parent_run_id):
        history = read_history(tracking_uri, run.info.run_id, [metric], run=run).get(metric, {})
        tags = run.data.tags
        trials.append(
            TrialResult(
                run_id=run.info.run_id,
                run_name=run.info.run_name or run.info.run_id,
                trial_id=tags.get(TRIAL_ID_TAG, ""),
                params=json.loads(tags.get(TRIAL_PARAMS_TAG, "{}")),
                status=run.info.status,
                stop_reason=tags.get(STOP_REASON_TAG),
                curve=tuple(sorted(history.items())),
            )
        )
    return trials


def ranked(trials: list[TrialResult], mode: str) -> list[TrialResult]:
    """Best first by the final metric; trials without a finite one last, in their order."""
    sign = 1.0 if mode == "min" else -1.0
    scored = sorted((t for t in trials if t.has_metric), key=lambda t: sign * t.final)
    return scored + [t for t in trials if not t.has_metric]


def best_trial(trials: list[TrialResult], mode: str) -> TrialResult | None:
    """The best final metric among trials that trained to their end (a trial stopped early was
    stopped for trailing), or among all trials with a metric when none did."""
    finished = [t for t in trials if t.status == FINISHED_STATUS and t.has_metric]
    candidates = finished or [t for t in trials if t.has_metric]
    return ranked(candidates, mode)[0] if candidates else None


def best_spec_text(record: SweepRecord, best: TrialResult) -> str:
    """The sweep's spec without its sweep section, with the best trial's values: ready to submit.

    It is validated like any spec built in code (field bounds and cross-field checks); secrets stay
    the ``${env:...}`` references the sweep stored."""
    from orchestrator.spec import RunSpec

    data = yaml.safe_load(record.spec_text)
    data.pop("sweep", None)
    for path, value in best.params.items():
        *parents, leaf = path.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    RunSpec.model_validate(data)
    head = (
        f"# The best trial of sweep {record.run_name}: run {best.run_name}, {record.sweep.metric} "
        f"{best.final:.6g} at step {best.final_step}.\n# Train it: orchestrator submit best_spec.yaml\n"
    )
    return head + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
