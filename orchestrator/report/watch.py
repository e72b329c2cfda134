"""`orchestrator report RUN --watch`: refresh the report while the run trains, stop when it ends."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

from orchestrator.errors import NotFoundError
from orchestrator.report.summary import render_summary
from orchestrator.track.runs import RUN_STATUSES, get_run


def watch_report(
    tracking_uri: str, run_id: str, out_dir: str | Path | None, interval_s: float
) -> Iterator[str]:
    """Rebuild the report every ``interval_s``; yield a line per new step and, at the end, the summary."""
    from orchestrator.report import build_report

    last_step = None
    while True:
        status = get_run(tracking_uri, run_id).info.status
        try:
            _, summary = build_report(tracking_uri, run_id, out_dir)
        except NotFoundError:  # no train_loss logged yet
            summary = None
        if summary and summary.total_steps != last_step:
            last_step = summary.total_steps
            yield f"[report] step {last_step}: loss {summary.final_loss:.4f} ({status})"
        if status in RUN_STATUSES:
            if summary:
                yield render_summary(summary, f"run {run_id} {status}")
            return
        time.sleep(interval_s)
