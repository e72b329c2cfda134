"""Several runs side by side: overlay plots of train/val loss and learning rate, and a summary table.

>>> compare_runs("sqlite:///mlflow.db", ["<run a>", "<run b>"], "comparison")  # doctest: +SKIP
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from orchestrator.fsutil import atomic_write, output_directory
from orchestrator.report.artifacts import (
    MetricHistory,
    final_validation,
    new_figure,
    save_figure,
    training_metrics,
)
from orchestrator.report.summary import RunSummary, summarize
from orchestrator.text import format_number

COMPARE_PNG = "comparison.png"
COMPARE_JSON = "comparison.json"


@dataclass(frozen=True)
class ComparedRun:
    run_id: str
    name: str
    metrics: dict[str, list]
    summary: RunSummary


def compared_run(run_id: str, name: str, history: MetricHistory) -> ComparedRun:
    metrics = training_metrics(history)
    return ComparedRun(run_id, name, metrics, summarize(metrics, final_validation(history)))


def compare_runs(tracking_uri: str, run_ids: list[str], out_dir: str | Path) -> tuple[list[Path], str]:
    """Read each run from MLflow, write comparison.png and comparison.json; return them and the table."""
    from orchestrator.report import read_run_history
    from orchestrator.track.runs import get_run

    runs = [
        compared_run(
            rid, get_run(tracking_uri, rid).info.run_name or rid, read_run_history(tracking_uri, rid)
        )
        for rid in run_ids
    ]
    return write_comparison(runs, output_directory(out_dir)), summary_table(runs)


def write_comparison(runs: list[ComparedRun], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {run.run_id: {"name": run.name, **json.loads(run.summary.to_json())} for run in runs}
    table = out_dir / COMPARE_JSON
    atomic_write(table, json.dumps(doc, indent=2, allow_nan=False).encode())
    return [table, _plot_overlay(runs, out_dir / COMPARE_PNG)]


def _plot_overlay(runs: list[ComparedRun], path: Path) -> Path:
    plt, fig, (top, bottom) = new_figure(2, 8)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, run in enumerate(runs):
        color, steps = colors[i % len(colors)], run.metrics["steps"]
        top.plot(steps, run.metrics["train_loss"], color=color, label=f"{run.name} train")
        val = [(s, v) for s, v in zip(steps, run.metrics["val_loss"], strict=True) if v is not None]
        if val:
            top.plot(*zip(*val, strict=True), color=color, ls="--", marker="o", label=f"{run.name} val")
        lr = [(s, v) for s, v in zip(steps, run.metrics["learning_rate"], strict=True) if v and v > 0]
        if lr:
            bottom.plot(*zip(*lr, strict=True), color=color, label=run.name)
    top.set(xlabel="step", ylabel="loss", title="Training (solid) and validation (dashed) loss")
    top.legend(fontsize="small")
    top.grid(alpha=0.3)
    bottom.set(xlabel="step", ylabel="learning rate", title="Learning rate", yscale="log")
    bottom.legend(fontsize="small")
    bottom.grid(alpha=0.3, which="both")
    return save_figure(plt, fig, path)


def summary_table(runs: list[ComparedRun]) -> str:
    """One row per run: the figures a reader compares first."""
    header = ("run", "steps", "initial", "final", "reduction", "best val", "lr peak/final", "diagnostics")
    rows = [header]
    for run in runs:
        s = run.summary
        rows.append(
            (
                run.name,
                str(s.total_steps),
                format_number(s.initial_loss),
                format_number(s.final_loss),
                f"{format_number(s.loss_reduction_pct, '.1f')}%",
                format_number(s.best_val_loss),
                format_number(s.lr_decay_from_peak, ".3g"),
                ", ".join(d.code for d in s.diagnostics) or "none",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )
