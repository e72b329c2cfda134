"""Checkpoints that are visible only when complete, and the automatic restore that trusts only those.

Layout of a run directory::

    <checkpoint dir>/<run>/
        step-<N>/                DeepSpeed ``save_checkpoint`` output (ZeRO shards of every rank)
        step-<N>/COMPLETE.json   written atomically LAST, after every rank finished writing
        latest                   "step-<N>" of the newest complete checkpoint (a convenience)
        best                     "step-<N>" of the complete checkpoint with the best evaluation

Only a directory holding ``COMPLETE.json`` counts: a kill at any moment of a save leaves at worst a
directory without the marker, which ``latest_complete_checkpoint`` ignores. Pruning removes the marker
first for the same reason.

>>> latest_complete_checkpoint("checkpoints/quickstart-20250101-120000")  # doctest: +SKIP
CheckpointInfo(path=PosixPath('.../step-415'), step=415, world_size=2, ...)
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import ResumeError
from orchestrator.fsutil import atomic_write

MARKER = "COMPLETE.json"
LATEST = "latest"
BEST = "best"
_STEP_DIR = re.compile(r"^step-(\d+)$")


@dataclass(frozen=True)
class CheckpointInfo:
    """What the completion marker records about a checkpoint."""

    path: Path
    step: int
    world_size: int
    zero_stage: int
    metric: str | None = None
    metric_value: float | None = None
    higher_is_better: bool = False

    @property
    def tag(self) -> str:
        return self.path.name


def step_tag(step: int) -> str:
    return f"step-{step}"


def complete_checkpoints(run_dir: str | Path) -> list[CheckpointInfo]:
    """Every complete checkpoint of a run, oldest first."""
    found = []
    root = Path(run_dir)
    if not root.is_dir():
        return []
    for child in root.iterdir():
        if _STEP_DIR.match(child.name) and (child / MARKER).is_file():
            info = _read_marker(child)
            if info is not None:
                found.append(info)
    return sorted(found, key=lambda info: info.step)


def latest_complete_checkpoint(run_dir: str | Path) -> CheckpointInfo | None:
    """The newest checkpoint that was written completely, or None."""
    checkpoints = complete_checkpoints(run_dir)
    return checkpoints[-1] if checkpoints else None


def best_checkpoint(run_dir: str | Path) -> CheckpointInfo | None:
    """The complete checkpoint whose last evaluation was best; the latest if none was evaluated."""
    checkpoints = complete_checkpoints(run_dir)
    scored = [c for c in checkpoints if c.metric_value is not None]
    if not scored:
        return checkpoints[-1] if checkpoints else None
    sign = -1.0 if scored[0].higher_is_better else 1.0
    # ties go to the later checkpoint: it has seen more data for the same score
    return min(reversed(scored), key=lambda c: sign * c.metric_value)


def _read_marker(path: Path) -> CheckpointInfo | None:
    try:
        fields = json.loads((path / MARKER).read_text())
        info = CheckpointInfo(path=path, **fields)
    except (OSError, ValueError, TypeError):
        return None  # unreadable marker: treat as incomplete rather than guess
    return info if _well_formed(info) else None  # an edited one ("5" for 5) too


def _well_formed(info: CheckpointInfo) -> bool:
    counts = (info.step, info.world_size, info.zero_stage)
    if not all(type(n) is int and n >= 0 for n in counts):
        return False
    value = info.metric_value
    numeric = value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))
    return numeric and isinstance(info.metric, (str, type(None))) and isinstance(info.higher_is_better, bool)


def write_marker(info: CheckpointInfo) -> None:
    fields = asdict(info)
    del fields["path"]
    atomic_write(info.path / MARKER, json.dumps(fields, indent=2).encode())


def publish(run_dir: Path, info: CheckpointInfo, keep_last: int, keep_best: bool) -> None:
    """Rank 0, after every rank saved: mark complete, move the pointers, prune old checkpoints."""
    write_marker(info)
    atomic_write(run_dir / LATEST, info.tag.encode())
    best = best_checkpoint(run_dir)
    if best is not None:
        atomic_write(run_dir / BEST, best.tag.encode())
    prune(run_dir, keep_last, best if keep_best else None)


def prune(run_dir: Path, keep_last: int, best: CheckpointInfo | None) -> list[Path]:
    """Delete complete checkpoints beyond the newest ``keep_last`` (sparing the best one), and
    incomplete directories older than the newest complete checkpoint (leftovers of a kill)."""
    checkpoints = complete_checkpoints(run_dir)
    keep = {c.path for c in checkpoints[-keep_last:]}
    if best is not None:
        keep.add(best.path)
    newest = checkpoints[-1].step if checkpoints else -1
    removed = []
    for child in Path(run_dir).iterdir():
        match = _STEP_DIR.match(child.name)
        if not match or child in keep:
            continue
        if (child / MARKER).is_file() or int(match.group(1)) < newest:
            remove_checkpoint(child)
            removed.append(child)
    return removed


def remove_checkpoint(path: Path) -> None:
    # The marker goes first: a kill during rmtree must not leave a "complete" half-deleted checkpoint.
    (path / MARKER).unlink(missing_ok=True)
    shutil.rmtree(path, ignore_errors=True)


def remove_incomplete(run_dir: Path, after_step: int) -> None:
    """Directories of saves that never completed, newer than the checkpoint we restore from."""
    if not Path(run_dir).is_dir():
        return
    for child in Path(run_dir).iterdir():
        match = _STEP_DIR.match(child.name)
        if match and int(match.group(1)) > after_step and not (child / MARKER).is_file():
            remove_checkpoint(child)


def check_compatible(info: CheckpointInfo, world_size: int, zero_stage: int) -> None:
    """Refuse, before training, a restore DeepSpeed would do wrongly or not at all."""
    if info.world_size != world_size:
        raise ResumeError(
            f"checkpoint {info.path} was written by {info.world_size} workers, but this run has "
            f"{world_size}: ZeRO shards (and the data order, which depends on the global batch) do not "
            f"carry over. Resume with cluster.num_workers: {info.world_size}. To reshard the optimizer "
            "state for another worker count, convert it with DeepSpeed's universal checkpoint tool "
            f"(`python -m deepspeed.checkpoint.ds_to_universal --input_folder {info.path} --output_folder "
            f"{info.path}_universal --inject_missing_state`) and load it with DeepSpeed's "
            '"checkpoint": {"load_universal": true}; this orchestrator does not resume from it by itself'
        )
    if info.zero_stage != zero_stage:
        raise ResumeError(
            f"checkpoint {info.path} was written with ZeRO stage {info.zero_stage}, but this run uses "
            f"stage {zero_stage}; DeepSpeed cannot load one stage's shards into another. Resume with "
            f"deepspeed.zero_stage: {info.zero_stage}"
        )


def training_state_of(client_state: dict[str, Any]) -> dict[str, Any]:
    """The orchestrator's part of a DeepSpeed client state."""
    try:
        return client_state["orchestrator"]
    except (KeyError, TypeError):
        raise ResumeError(
            "the checkpoint holds no orchestrator training state (step, data position, RNG); it was "
            "not written by this orchestrator"
        ) from None
