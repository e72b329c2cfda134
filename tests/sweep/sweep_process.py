"""`orchestrator sweep` as a user runs it: a child process whose output is read line by line while it
runs, so tests can look at the table (and at MLflow) before the sweep ends, and send it Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path


class SweepProcess:
    def __init__(self, *args: str, cwd: Path):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "sweep", *args, "--table", "lines"],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.errors: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stdout, self.lines), daemon=True),
            threading.Thread(target=self._read, args=(self.process.stderr, self.errors), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream, into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    def wait_for_line(self, predicate, timeout: float = 300) -> str:
        """The first output line (seen so far or to come) for which ``predicate`` holds."""
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            while seen < len(self.lines):
                if predicate(self.lines[seen]):
                    return self.lines[seen]
                seen += 1
            if self.process.poll() is not None and seen >= len(self.lines):
                break
            time.sleep(0.1)
        raise AssertionError(f"no such line; output so far:\n{self.output}")

    def interrupt(self) -> None:
        self.process.send_signal(signal.SIGINT)

    def wait(self, timeout: float = 600) -> int:
        code = self.process.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=10)
        return code

    @property
    def output(self) -> str:
        return "\n".join(self.lines) + "\n--- stderr ---\n" + "\n".join(self.errors[-60:])

    def value(self, label: str) -> str:
        """A `label  value` line the command printed (e.g. the sweep's directory)."""
        line = self.wait_for_line(lambda text: text.startswith(f"{label} "), timeout=120)
        return line.split(None, 1)[1]


def table_row(line: str) -> dict | None:
    """A `[sweep]` line as {trial, step, value, state}; None for other lines."""
    if not line.startswith("[sweep] "):
        return None
    trial, _params, step, value, state = line.removeprefix("[sweep] ").split("  ", 4)
    return {"trial": trial, "step": step, "value": value, "state": state}
