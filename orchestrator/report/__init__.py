"""Rebuild the documented artifacts of a run from MLflow alone; also the live artifacts, compare and
watch. May import: the tracker (to read MLflow) and the base helpers. Never the worker, launchers, the
run lifecycle or the CLI.

>>> paths, summary = build_report("sqlite:///mlflow.db", "<run id>")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import gc
from pathlib import Path

from orchestrator.errors import NotFoundError, UntrustedInput
from orchestrator.fsutil import output_directory
from orchestrator.report.artifacts import (
    REPORT_FORMATS,
    MetricHistory,
    final_validation,
    training_metrics,
    write_report_of,
)
from orchestrator.report.mlflow_history import read_history
from orchestrator.report.summary import RunSummary
from orchestrator.track.runs import get_run, holds_run, run_checkpoint_dir


def build_report(
    tracking_uri: str, run_id: str, out_dir: str | Path | None = None, formats=REPORT_FORMATS
) -> tuple[list[Path], RunSummary]:
    """Write training_metrics.json, summary.json and both PNGs (by default into the run's checkpoint
    dir); return their paths and the run's summary."""
    run = get_run(tracking_uri, run_id)
    target = output_directory(out_dir) if out_dir else _run_directory(run)
    with _cyclic_gc_paused():
        history = read_run_history(tracking_uri, run_id, run)
        return write_report_of(training_metrics(history), target, formats, final_validation(history))


def _run_directory(run) -> Path:
    """The run's own directory, named by an MLflow tag: written into only if it holds this run's
    record, so a tag pointing elsewhere cannot make `report` overwrite files there."""
    directory = Path(run_checkpoint_dir(run))
    if not holds_run(directory, run.info.run_id):
        raise UntrustedInput(
            f"MLflow run {run.info.run_id} names {directory} as its directory, which holds no record of "
            "that run; refusing to write the report there. Hint: pass --out DIR, or run this where the "
            "run's files are"
        )
    return directory


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
        raise NotFoundError(f"MLflow run {run_id} has no train_loss values yet: nothing to report")
    return history


__all__ = ["build_report", "read_run_history"]
