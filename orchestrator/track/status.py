"""The run's live status file: where it is, its last metrics and the health of every worker.

Rank 0 rewrites ``<checkpoint dir>/status.json`` atomically at every logging step, so any process that
can read the run's directory (the submitting driver's progress bar, ``orchestrator status RUN``, a test)
sees a consistent picture without talking to Ray. Every other rank writes its own heartbeat at its
logging steps to ``<checkpoint dir>/heartbeats/rank-<r>.json`` (the run's directory is shared storage,
as checkpoints need), which rank 0 reads into the file: no collective, so a rank never waits for
another to report its health.

    {"step": 20, "total_steps": 40, "epoch": 1, "metrics": {"train_loss": 4.1, ...},
     "started": 1700000000.0, "updated": 1700000012.5, "eta_s": 12.5,
     "workers": [{"rank": 0, "node": "ab12…", "host": "box", "pid": 4242, "rss_mb": 512.0,
                  "step": 20, "time": 1700000012.4}, ...],
     "startup": {"process_start": 1699999990.1, ..., "first_step": 1700000001.2}}
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from pathlib import Path
from typing import Any

from orchestrator.fsutil import atomic_write
from orchestrator.text import format_duration
from orchestrator.track import startup
from orchestrator.track.events import MetricEvent

STATUS_FILE = "status.json"
HEARTBEAT_DIR = "heartbeats"
# Set by a launcher before the worker starts, so the status can say where each rank runs.
NODE_ID_ENV = "ORCHESTRATOR_NODE_ID"
# What this rank says about itself in every heartbeat besides its health (where it reads its data).
WORKER_FACTS: dict[str, str] = {}


def worker_heartbeat(rank: int, step: int) -> dict[str, Any]:
    return {
        "rank": rank,
        "node": os.environ.get(NODE_ID_ENV, ""),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "rss_mb": round(_rss_bytes() / 2**20, 1),
        "step": step,
        "time": time.time(),
        **WORKER_FACTS,
    }


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class RunStatusFile:
    """A metric sink present on every rank: each rank writes its heartbeat, rank 0 the status file."""

    def __init__(self, checkpoint_dir: str | Path, total_steps: int, rank: int):
        self.path = Path(checkpoint_dir) / STATUS_FILE
        self.beats_dir = Path(checkpoint_dir) / HEARTBEAT_DIR
        self.total_steps = total_steps
        self.rank = rank
        self.started = time.time()
        self.metrics: dict[str, float] = {}
        # The rate is measured from this attempt's first logged step: after a restart the steps
        # before it were not trained by this attempt.
        self._rate_origin: tuple[int, float] | None = None
        self.beats_dir.mkdir(parents=True, exist_ok=True)
        if rank != 0:  # before the first step: rank 0's first status already lists every rank
            self._write_beat(worker_heartbeat(rank, 0))

    def write(self, events: list[MetricEvent]) -> None:
        if not events:
            return
        step = max(e.step for e in events)
        beat = worker_heartbeat(self.rank, step)
        if self.rank != 0:
            self._write_beat(beat)
            return
        # Validation values stay until the next evaluation replaces them.
        self.metrics.update({e.name: float(e.value) for e in events})
        now = time.time()
        if self._rate_origin is None:
            self._rate_origin = (step, now)
        status = {
            "step": step,
            "total_steps": self.total_steps,
            "epoch": int(self.metrics.get("epoch", 0)),
            "metrics": self.metrics,
            "started": self.started,
            "updated": now,
            "eta_s": _eta(self._rate_origin, now, step, self.total_steps),
            "workers": [beat, *self._other_beats()],
            "startup": startup.startup_marks(),  # rank 0's, seconds since the epoch
        }
        atomic_write(self.path, json.dumps(status, indent=1).encode())

    def close(self) -> None:
        """Nothing buffered: every write is a complete file."""

    def _write_beat(self, beat: dict[str, Any]) -> None:
        atomic_write(self.beats_dir / f"rank-{self.rank}.json", json.dumps(beat).encode())

    def _other_beats(self) -> list[dict[str, Any]]:
        beats = []
        for path in self.beats_dir.glob("rank-*.json"):
            try:
                beat = json.loads(path.read_text())
            except (OSError, ValueError):  # a file being replaced on a storage without atomic rename
                continue
            if beat.get("rank") != 0:
                beats.append(beat)
        return sorted(beats, key=lambda b: b.get("rank", 0))


def _eta(origin: tuple[int, float], now: float, step: int, total: int) -> float | None:
    first_step, first_time = origin
    if step <= first_step:
        return None
    return (now - first_time) / (step - first_step) * (total - step)


def read_status(checkpoint_dir: str | Path) -> dict[str, Any] | None:
    """The run's status, or None when there is none yet or the file is not one this tool wrote (a
    damaged or hand-edited file must not break `status` or the progress bar)."""
    path = Path(checkpoint_dir) / STATUS_FILE
    try:
        status = json.loads(path.read_bytes()[:_MAX_STATUS_BYTES])
    except (OSError, ValueError, RecursionError):
        return None
    return status if _is_status(status) else None


_MAX_STATUS_BYTES = 4 * 2**20  # a status of 4096 workers is well under this


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_status(status: Any) -> bool:
    """The shape rank 0 writes: numbers where numbers belong, so every reader can format them."""
    if not isinstance(status, dict) or not all(_number(status.get(k)) for k in ("step", "total_steps")):
        return False
    optional_numbers = [status.get(k, 0) for k in ("updated", "started", "epoch")]
    optional_numbers.append(0 if status.get("eta_s") is None else status["eta_s"])
    metrics, workers = status.get("metrics", {}), status.get("workers", [])
    return (
        all(_number(v) for v in optional_numbers)
        and isinstance(metrics, dict)
        and all(_number(v) for v in metrics.values())
        and isinstance(workers, list)
        and all(_is_heartbeat(w) for w in workers)
    )


def _is_heartbeat(worker: Any) -> bool:
    required = (
        [worker.get(k) for k in ("rank", "step", "time", "pid")] if isinstance(worker, dict) else [None]
    )
    return all(_number(v) for v in required) and _number(worker.get("rss_mb", 0))


def worker_health(worker: dict[str, Any], now: float, stale_after_s: float) -> str:
    """alive / dead (its process is gone on this host) / silent (no heartbeat for a while)."""
    if worker.get("host") == socket.gethostname():
        try:
            os.kill(int(worker["pid"]), 0)
        except ProcessLookupError:
            return "dead"
        except (PermissionError, ValueError, KeyError, OverflowError):
            pass
    return "silent" if now - float(worker.get("time", 0)) > stale_after_s else "alive"


def format_progress(status: dict[str, Any], width: int = 24) -> str:
    """`[#########...............] 15/40 loss 4.5123 12,345 tok/s ETA 21s`"""
    step, total = int(status["step"]), max(1, int(status["total_steps"]))
    filled = min(width, width * step // total)
    metrics = status.get("metrics", {})
    parts = [f"[{'#' * filled}{'.' * (width - filled)}] {step}/{total}"]
    if "train_loss" in metrics:
        parts.append(f"loss {metrics['train_loss']:.4f}")
    if "val_loss" in metrics:
        parts.append(f"val {metrics['val_loss']:.4f}")
    if "tokens_per_second" in metrics:
        parts.append(f"{metrics['tokens_per_second']:,.0f} tok/s")
    eta = status.get("eta_s")
    parts.append(f"ETA {format_duration(eta)}" if eta is not None else "ETA ?")
    return " ".join(parts)
