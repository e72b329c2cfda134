"""The local metric journal: an append-only JSONL file on rank 0, the ground truth of a run's metrics.

Every metric point is written here before it is handed to MLflow, with the timestamp it will carry
in MLflow. The timestamp is fixed once, so a point sent twice (a retry after a timeout, a replay by
``orchestrator sync``) is the same (key, value, timestamp, step) row, which MLflow's SQL stores keep
once; the replay also skips points MLflow already holds. One line per point::

    {"key": "train_loss", "value": 2.3125, "step": 40, "timestamp": 1764000000123}

Non-finite values are the strings "NaN", "Infinity", "-Infinity" (see ``orchestrator.jsonfloat``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from orchestrator.jsonfloat import decode_float, encode_float

JOURNAL_NAME = "metrics.journal.jsonl"


@dataclass(frozen=True)
class MetricPoint:
    """One value of one metric at one step, stamped with the time MLflow will record."""

    key: str
    value: float
    step: int
    timestamp: int  # milliseconds since the epoch

    def to_json(self) -> str:
        record = {"key": self.key, "value": encode_float(self.value), "step": self.step}
        record["timestamp"] = self.timestamp
        return json.dumps(record, allow_nan=False)

    @classmethod
    def from_json(cls, line: str) -> MetricPoint:
        record = json.loads(line)
        return cls(record["key"], decode_float(record["value"]), int(record["step"]), record["timestamp"])


class MetricJournal:
    """Appends points to the journal file; each append is flushed to the OS before it returns."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the run

    def append(self, points: list[MetricPoint]) -> None:
        self._file.write("".join(p.to_json() + "\n" for p in points))
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()


def read_journal(path: str | Path) -> Iterator[MetricPoint]:
    """Every complete line of a journal; a torn last line (a crash mid-write) and damaged lines are
    skipped (``load_journal`` counts them)."""
    yield from load_journal(path)[0]


def load_journal(path: str | Path) -> tuple[list[MetricPoint], int]:
    """The points of a journal and the number of damaged lines skipped: lines that are not UTF-8,
    not JSON, or not a point (a key that is text, a number or NaN/Infinity, whole-number step and
    timestamp). A torn last line is not counted: a crash mid-write leaves one."""
    points, damaged = [], 0
    with open(path, "rb") as handle:
        for line in handle:
            if not line.endswith(b"\n"):
                continue
            point = _point(line)
            if point is None:
                damaged += 1
            else:
                points.append(point)
    return points, damaged


def _point(line: bytes) -> MetricPoint | None:
    try:
        record = json.loads(line.decode("utf-8"))
        key, step, stamp = record["key"], record["step"], record["timestamp"]
        value = decode_float(record["value"])
        key.encode("utf-8")  # a lone surrogate (`\\ud800`) cannot be sent
    except (ValueError, KeyError, TypeError, AttributeError):  # UnicodeError is a ValueError
        return None
    if type(step) is not int or type(stamp) is not int or not isinstance(value, float):
        return None
    return MetricPoint(key, value, step, stamp)


def journaled_per_step(path: str | Path, keys) -> dict[str, dict[int, float]]:
    """{key: {step: value}} of a journal (the last point of a step wins); empty if there is none."""
    history: dict[str, dict[int, float]] = {key: {} for key in keys}
    if Path(path).is_file():
        for point in read_journal(path):
            if point.key in history:
                history[point.key][point.step] = point.value
    return {key: values for key, values in history.items() if values}


def journal_path(checkpoint_dir: str | Path) -> Path:
    return Path(checkpoint_dir) / JOURNAL_NAME
