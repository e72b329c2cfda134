"""Live artifacts: the reporter's documented files, rewritten while training runs."""

from __future__ import annotations

from pathlib import Path

from orchestrator.report.artifacts import (
    REPORT_FORMATS,
    REPORT_METRICS,
    MetricHistory,
    write_plots,
    write_report,
    write_tables,
)
from orchestrator.track.events import MetricEvent


class LiveArtifacts:
    """Keeps the run's history in memory and rewrites the artifacts from it.

    The JSON files are rewritten on every write (cheap); the PNGs whenever a validation value arrives
    and at close, since plotting costs a noticeable fraction of a step on a small CPU model.
    """

    METRICS = REPORT_METRICS  # what the files show (a restarted run reloads these from MLflow)

    def __init__(self, out_dir: str | Path, formats=REPORT_FORMATS):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.formats = tuple(formats)
        self.history: MetricHistory = {}

    def write(self, events: list[MetricEvent]) -> None:
        for event in events:
            self.history.setdefault(event.name, {})[event.step] = float(event.value)
        if "json" in self.formats:
            write_tables(self.history, self.out_dir)
        if "png" in self.formats and any(e.name == "val_loss" for e in events):
            write_plots(self.history, self.out_dir)

    def close(self) -> None:
        if "train_loss" in self.history:
            write_report(self.history, self.out_dir, self.formats)
