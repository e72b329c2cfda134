"""The driver's progress bar, fed by the workers through the run's status file.

A thread polls ``<checkpoint dir>/status.json`` (written by rank 0 at every logging step) and redraws
one line on stderr: in place on a terminal, one line per new step otherwise.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from orchestrator.track.status import format_progress, read_status


class ProgressBar(threading.Thread):
    def __init__(self, checkpoint_dir: str | Path, stream: TextIO, in_place: bool, interval_s: float = 0.5):
        super().__init__(name="progress-bar", daemon=True)
        self.checkpoint_dir = checkpoint_dir
        self.stream, self.in_place, self.interval_s = stream, in_place, interval_s
        self._stop_event = threading.Event()
        self._last_step = -1

    def run(self) -> None:
        while not self._stop_event.wait(self.interval_s):
            self.draw()
        self.draw()
        if self.in_place and self._last_step >= 0:
            self.stream.write("\n")
            self.stream.flush()

    def draw(self) -> None:
        status = read_status(self.checkpoint_dir)
        if status is None or status.get("step") == self._last_step:
            return
        self._last_step = status["step"]
        line = f"[progress] {format_progress(status)}"
        self.stream.write(f"\r\x1b[2K{line}" if self.in_place else f"{line}\n")
        self.stream.flush()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


@contextlib.contextmanager
def live_progress(checkpoint_dir: str | Path, mode: str = "auto") -> Iterator[None]:
    """``auto``: a bar only on a terminal; ``bar``: always (lines when not a terminal); ``off``."""
    tty = sys.stderr.isatty()
    if mode == "off" or (mode == "auto" and not tty):
        yield
        return
    stream = getattr(sys.stderr, "unescaped", sys.stderr)  # the bar's own \r and line clearing
    bar = ProgressBar(checkpoint_dir, stream, in_place=tty)
    bar.start()
    try:
        yield
    finally:
        bar.stop()


class SweepTablePrinter:
    """Shows a sweep's live table (``orchestrator.sweep.SweepTable``): redrawn in place on a terminal,
    else one ``[sweep]`` line per trial that changed."""

    def __init__(self, stream: TextIO, mode: str = "auto"):
        self.stream = stream
        self.in_place = mode == "live" or (mode == "auto" and stream.isatty())
        self._drawn = 0

    def __call__(self, table, rows) -> None:
        if self.in_place:
            text = table.render()
            up = f"\x1b[{self._drawn}F\x1b[J" if self._drawn else ""
            self.stream.write(f"{up}{text}\n")
            self._drawn = text.count("\n") + 1
        else:
            for row in rows:
                self.stream.write(f"[sweep] {table.render_row(row)}\n")
        self.stream.flush()
