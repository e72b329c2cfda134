"""A sweep's report, from MLflow alone: the trials sorted by the metric, every trial's validation
curve on one plot, one parameter-vs-metric scatter per parameter, and ``best_spec.yaml``.

>>> paths, table = build_sweep_report("sqlite:///mlflow.db", "<parent run id>")  # doctest: +SKIP

Files (in the sweep's directory unless ``out_dir`` is given): ``sweep_trials.json`` (the table),
``sweep_curves.png``, ``sweep_<parameter>.png`` per parameter, ``best_spec.yaml``.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from orchestrator.fsutil import atomic_write
from orchestrator.report.artifacts import new_figure, save_figure
from orchestrator.sweep.results import (
    SweepRecord,
    TrialResult,
    best_spec_text,
    best_trial,
    ranked,
    read_sweep,
    read_trials,
)
from orchestrator.sweep.space import describe_params
from orchestrator.text import format_number
from orchestrator.track.runs import FINISHED_STATUS, get_run, run_checkpoint_dir

TRIALS_JSON = "sweep_trials.json"
CURVES_PNG = "sweep_curves.png"
BEST_SPEC = "best_spec.yaml"


def build_sweep_report(
    tracking_uri: str, run_ref: str, out_dir: str | Path | None = None
) -> tuple[list[Path], str]:
    """Write the sweep's report files; return their paths and the table of trials (best first)."""
    record = read_sweep(tracking_uri, run_ref)
    target = Path(out_dir) if out_dir else Path(run_checkpoint_dir(get_run(tracking_uri, record.run_id)))
    target.mkdir(parents=True, exist_ok=True)
    trials = ranked(read_trials(tracking_uri, record.run_id, record.sweep.metric), record.sweep.direction)
    paths = [_write_table(record, trials, target), _plot_curves(record, trials, target)]
    paths += [_plot_parameter(record, trials, path, target) for path in record.sweep.parameters]
    best = best_trial(trials, record.sweep.direction)
    if best is not None:
        spec_path = target / BEST_SPEC
        atomic_write(spec_path, best_spec_text(record, best).encode())
        paths.append(spec_path)
    return paths, trials_table(trials, record.sweep.metric, best)


def trials_table(trials: list[TrialResult], metric: str, best: TrialResult | None = None) -> str:
    """One row per trial, in the given order: its run, values, final metric, and how it ended."""
    header = ("rank", "run", "parameters", metric, "step", "state")
    rows = [header]
    for rank, trial in enumerate(trials, 1):
        state = trial.status if not trial.stop_reason else f"{trial.status}: {trial.stop_reason}"
        mark = " (best)" if best is not None and trial.run_id == best.run_id else ""
        rows.append(
            (
                str(rank) if trial.has_metric else "-",
                trial.run_name + mark,
                describe_params(trial.params),
                format_number(trial.final),
                str(trial.final_step) if trial.final_step is not None else "-",
                state,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def _write_table(record: SweepRecord, trials: list[TrialResult], target: Path) -> Path:
    doc = {
        "sweep_run_id": record.run_id,
        "metric": record.sweep.metric,
        "mode": record.sweep.direction,
        "trials": [
            {
                "run_id": t.run_id,
                "run_name": t.run_name,
                "trial_id": t.trial_id,
                "params": t.params,
                "status": t.status,
                "stop_reason": t.stop_reason,
                record.sweep.metric: _json_float(t.final),
                "step": t.final_step,
            }
            for t in trials
        ],
    }
    path = target / TRIALS_JSON
    atomic_write(path, json.dumps(doc, indent=2, allow_nan=False).encode())
    return path


def _json_float(value: float | None) -> Any:
    if value is None or math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def _plot_curves(record: SweepRecord, trials: list[TrialResult], target: Path) -> Path:
    plt, fig, (ax,) = new_figure(1, 5)
    for trial in trials:
        points = [(s, v) for s, v in trial.curve if math.isfinite(v)]
        if points:
            style = "-" if trial.status == FINISHED_STATUS else "--"
            ax.plot(*zip(*points, strict=True), style, marker="o", ms=3, label=describe_params(trial.params))
    metric = record.sweep.metric
    ax.set(xlabel="step", ylabel=metric, title=f"{metric} of every trial (dashed: stopped before its end)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return save_figure(plt, fig, target / CURVES_PNG)


def _plot_parameter(record: SweepRecord, trials: list[TrialResult], path: str, target: Path) -> Path:
    plt, fig, (ax,) = new_figure(1, 4)
    points = [(t.params.get(path), t.final) for t in trials if t.has_metric and path in t.params]
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x, _ in points)
    if points and numeric:
        ax.scatter([x for x, _ in points], [y for _, y in points])
        if record.sweep.parameters[path].kind == "loguniform":
            ax.set_xscale("log")
    elif points:  # categories (strings, lists, booleans) side by side
        labels = sorted({json.dumps(x) for x, _ in points})
        ax.scatter([labels.index(json.dumps(x)) for x, _ in points], [y for _, y in points])
        ax.set_xticks(range(len(labels)), labels)
    metric = record.sweep.metric
    ax.set(xlabel=path, ylabel=f"final {metric}", title=f"{path} against the final {metric}")
    ax.grid(alpha=0.3)
    return save_figure(plt, fig, target / f"sweep_{re.sub(r'[^A-Za-z0-9_.-]', '_', path)}.png")
