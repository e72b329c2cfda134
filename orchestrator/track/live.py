"""Live artifacts: the reporter's documented files, rewritten while training runs."""

from __future__ import annotations

from pathlib import Path

from orchestrator.report.artifacts import (
    REPORT_FORMATS,
    MetricHistory,
    write_plots,
    write_report,
    write_tables,
)
from orchestrator.track.events import MetricEvent


class LiveArtifacts:
    """Keeps the run's history in memory and rewrites the artifacts from it.

    The JSON files are rewritten on every write; the PNGs whenever a validation value arrives and at
    close. A run writes it from a low-priority child process (``rank0_sinks``), since plotting costs
    rank 0 a good part of a second that every other rank would wait for.
    """

    def __init__(self, out_dir: str | Path, formats=REPORT_FORMATS, history: MetricHistory | None = None):
        """``history``: what an earlier attempt of the run logged (a resumed run's report shows it)."""
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.formats = tuple(formats)
        self.history: MetricHistory = {name: dict(values) for name, values in (history or {}).items()}

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
