"""Live artifacts: the reporter's documented files, rewritten while training runs."""

from __future__ import annotations

import time
from pathlib import Path

from orchestrator.report.artifacts import (
    REPORT_FORMATS,
    REPORT_METRICS,
    SUMMARY_METRICS,
    MetricHistory,
    write_plots,
    write_report,
    write_tables,
)
from orchestrator.track.events import MetricEvent


class LiveArtifacts:
    """Keeps the run's history in memory and rewrites the artifacts from it.

    The JSON files are rewritten on every write; the PNGs when a validation value arrived, at most
    every ``plot_interval_s`` (a redraw costs about half a second of CPU on a small machine; one that
    is due is drawn at a later write), and at close. A run writes them from a low-priority child
    process (``orchestrator.track.pipeline``), since plotting would otherwise hold every rank up.
    """

    METRICS = REPORT_METRICS + SUMMARY_METRICS  # what the files show (a restarted run reloads these)

    def __init__(
        self,
        out_dir: str | Path,
        formats=REPORT_FORMATS,
        history: MetricHistory | None = None,
        plot_interval_s: float = 0.0,
    ):
        """``history``: what an earlier attempt of the run logged (a resumed run's report shows it)."""
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.formats = tuple(formats)
        self.history: MetricHistory = {name: dict(values) for name, values in (history or {}).items()}
        self.plot_interval_s = plot_interval_s
        self._plots_due, self._plotted_at = False, -float("inf")

    def write(self, events: list[MetricEvent]) -> None:
        for event in events:
            self.history.setdefault(event.name, {})[event.step] = float(event.value)
        if "json" in self.formats:
            write_tables(self.history, self.out_dir)
        self._plots_due |= "png" in self.formats and any(e.name == "val_loss" for e in events)
        if self._plots_due and time.monotonic() - self._plotted_at >= self.plot_interval_s:
            write_plots(self.history, self.out_dir)
            self._plots_due, self._plotted_at = False, time.monotonic()

    def close(self) -> None:
        if "train_loss" in self.history:
            write_report(self.history, self.out_dir, self.formats)
