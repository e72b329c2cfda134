"""Rebuild the documented artifacts of a run from MLflow alone.

>>> rebuild_report("sqlite:///mlflow.db", "<run id>")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import gc
from pathlib import Path

from orchestrator.report.artifacts import (
    REPORT_FORMATS,
    MetricHistory,
    training_metrics,
    whole_split_val_loss,
    write_report_of,
)
from orchestrator.report.mlflow_history import get_run, read_history, run_checkpoint_dir
from orchestrator.report.summary import RunSummary, summarize


def rebuild_report(
    tracking_uri: str, run_id: str, out_dir: str | Path | None = None, formats=REPORT_FORMATS
) -> list[Path]:
    """Write training_metrics.json, summary.json and both PNGs; by default into the run's checkpoint dir."""
    return build_report(tracking_uri, run_id, out_dir, formats)[0]


def build_report(
    tracking_uri: str, run_id: str, out_dir: str | Path | None = None, formats=REPORT_FORMATS
) -> tuple[list[Path], RunSummary]:
    """Like ``rebuild_report``, and also return the run's summary."""
    run = get_run(tracking_uri, run_id)
    target = Path(out_dir) if out_dir else Path(run_checkpoint_dir(run))
    with _cyclic_gc_paused():
        history = read_run_history(tracking_uri, run_id, run)
        return write_report_of(training_metrics(history), target, formats, whole_split_val_loss(history))


@contextlib.contextmanager
def _cyclic_gc_paused():
    """A long run's history is millions of small objects with no reference cycles; the cyclic
    collector re-scanning them while they are built cost about 0.2 s of a 100k-step report."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def read_run_history(tracking_uri: str, run_id: str, run=None) -> MetricHistory:
    history = read_history(tracking_uri, run_id, run=run)
    if "train_loss" not in history:
        raise LookupError(f"MLflow run {run_id} has no train_loss values yet: nothing to report")
    return history


def run_summary(tracking_uri: str, run_id: str) -> RunSummary:
    history = read_run_history(tracking_uri, run_id)
    return summarize(training_metrics(history), whole_split_val_loss(history))


__all__ = ["build_report", "read_run_history", "rebuild_report", "run_summary"]
