"""Rebuild the documented artifacts of a run from MLflow alone.

>>> rebuild_report("sqlite:///mlflow.db", "<run id>")  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

from orchestrator.report.artifacts import write_report
from orchestrator.report.mlflow_history import get_run, read_history, run_checkpoint_dir


def rebuild_report(tracking_uri: str, run_id: str, out_dir: str | Path | None = None) -> list[Path]:
    """Write training_metrics.json and both PNGs; by default into the run's checkpoint directory."""
    run = get_run(tracking_uri, run_id)
    target = Path(out_dir) if out_dir else Path(run_checkpoint_dir(run))
    history = read_history(tracking_uri, run_id)
    if "train_loss" not in history:
        raise LookupError(f"MLflow run {run_id} has no train_loss values yet: nothing to report")
    return write_report(history, target)


__all__ = ["rebuild_report"]
