"""Which checkpoints of a run exist, and which one counts: the one place that decides "latest
complete", over the storage layer (a local or mounted directory, or an object store).

Layout of a run's checkpoints (``plan.checkpoint_uri``)::

    step-<N>/                     DeepSpeed ``save_checkpoint`` output (ZeRO shards of every rank)
    step-<N>/uploaded-rank-<r>.json   on an object store: rank r's files are all there (name -> size, sha256)
    step-<N>/COMPLETE.json        written LAST, after every rank's shards are stored
    step-<N>_universal/           DeepSpeed's universal form of step-<N> (an elastic resume made it)
    latest, best                  "step-<N>" of the newest / best complete checkpoint (a convenience)

Only a folder holding ``COMPLETE.json`` counts: a kill at any moment of a save or an upload leaves at
worst a folder without it, which nothing loads. Pruning removes the marker first for the same reason.

>>> latest_complete_checkpoint("checkpoints/quickstart-20250101-120000")  # doctest: +SKIP
CheckpointInfo(location='.../step-415', step=415, world_size=2, ...)
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.errors import ResumeError

MARKER = "COMPLETE.json"
LATEST = "latest"
BEST = "best"
UNIVERSAL_SUFFIX = "_universal"
UPLOADED = "uploaded-rank-{rank}.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")
# ZeRO stages DeepSpeed's universal checkpoint converts (ds_to_universal) and loads at another world
# size; stage 0 keeps the whole optimizer state in one file that loads at any world size.
ELASTIC_STAGES = (0, 1, 2, 3)


@dataclass(frozen=True)
class CheckpointInfo:
    """What the completion marker records about a checkpoint."""

    location: str  # the checkpoint's folder: a path, or an s3:// URI
    step: int
    world_size: int
    zero_stage: int
    metric: str | None = None
    metric_value: float | None = None
    higher_is_better: bool = False
    files: dict[str, Any] = field(default_factory=dict)  # on an object store: name -> {size, sha256}

    @property
    def tag(self) -> str:
        return self.location.rstrip("/").rsplit("/", 1)[-1]

    @property
    def path(self) -> Path:
        """The folder on this machine (for a checkpoint in a local or mounted directory)."""
        return Path(self.location)


def step_tag(step: int) -> str:
    return f"step-{step}"


def _store(where):
    from orchestrator.storage.store import Store, open_store

    return where if isinstance(where, Store) else open_store(str(where))


def complete_checkpoints(where) -> list[CheckpointInfo]:
    """Every complete checkpoint of a run (a path, a URI or a ``Store``), oldest first."""
    store = _store(where)
    found = []
    for entry in store.list(recursive=True):
        parts = entry.path.split("/")
        if len(parts) == 2 and parts[1] == MARKER and _STEP_DIR.match(parts[0]):
            info = _read_marker(store, parts[0])
            if info is not None:
                found.append(info)
    return sorted(found, key=lambda info: info.step)


def latest_complete_checkpoint(where) -> CheckpointInfo | None:
    """The newest checkpoint that was written completely, or None."""
    checkpoints = complete_checkpoints(where)
    return checkpoints[-1] if checkpoints else None


def best_checkpoint(where) -> CheckpointInfo | None:
    """The complete checkpoint whose last evaluation was best; the latest if none was evaluated."""
    return _best(complete_checkpoints(where))


def _best(checkpoints: list[CheckpointInfo]) -> CheckpointInfo | None:
    scored = [c for c in checkpoints if c.metric_value is not None]
    if not scored:
        return checkpoints[-1] if checkpoints else None
    sign = -1.0 if scored[0].higher_is_better else 1.0
    # ties go to the later checkpoint: it has seen more data for the same score
    return min(reversed(scored), key=lambda c: sign * c.metric_value)


def _read_marker(store, tag: str) -> CheckpointInfo | None:
    try:
        fields = json.loads(store.read_bytes(f"{tag}/{MARKER}"))
        info = CheckpointInfo(location=store.child(tag).uri, **fields)
    except (OSError, ValueError, TypeError):
        return None  # unreadable marker: treat as incomplete rather than guess
    return info if _well_formed(info) else None  # an edited one ("5" for 5) too


def _well_formed(info: CheckpointInfo) -> bool:
    counts = (info.step, info.world_size, info.zero_stage)
    if not all(type(n) is int and n >= 0 for n in counts):
        return False
    value = info.metric_value
    numeric = value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))
    return (
        numeric
        and isinstance(info.metric, (str, type(None)))
        and isinstance(info.higher_is_better, bool)
        and isinstance(info.files, dict)
    )


def marker_payload(info: CheckpointInfo) -> bytes:
    fields = asdict(info)
    del fields["location"]
    return json.dumps(fields, indent=2).encode()


def publish(where, info: CheckpointInfo, keep_last: int, keep_best: bool) -> None:
    """After every rank's shards are stored: mark complete, move the pointers, prune old ones."""
    store = _store(where)
    store.write_bytes(f"{info.tag}/{MARKER}", marker_payload(info))
    checkpoints = complete_checkpoints(store)
    store.write_bytes(LATEST, info.tag.encode())
    best = _best(checkpoints)
    if best is not None:
        store.write_bytes(BEST, best.tag.encode())
    prune(store, keep_last, best if keep_best else None, checkpoints)


def prune(where, keep_last: int, best: CheckpointInfo | None, checkpoints=None) -> list[str]:
    """Delete complete checkpoints beyond the newest ``keep_last`` (sparing the best one), and
    incomplete folders older than the newest complete checkpoint (leftovers of a kill)."""
    store = _store(where)
    checkpoints = complete_checkpoints(store) if checkpoints is None else checkpoints
    keep = {c.tag for c in checkpoints[-keep_last:]}
    if best is not None:
        keep.add(best.tag)
    newest = checkpoints[-1].step if checkpoints else -1
    complete = {c.tag for c in checkpoints}
    removed = []
    for tag in _step_folders(store):
        base = tag.removesuffix(UNIVERSAL_SUFFIX)
        if base in keep:
            continue
        if base in complete or int(_STEP_DIR.match(base).group(1)) < newest:
            remove_checkpoint(store, tag)
            removed.append(tag)
    return removed


def _step_folders(store) -> list[str]:
    folders = set()
    for entry in store.list(recursive=True):
        top = entry.path.split("/", 1)[0]
        if _STEP_DIR.match(top.removesuffix(UNIVERSAL_SUFFIX)):
            folders.add(top)
    return sorted(folders)


def remove_checkpoint(where, tag: str) -> None:
    # The marker goes first: a kill while deleting must not leave a "complete" half-deleted checkpoint.
    store = _store(where)
    store.delete(f"{tag}/{MARKER}")
    store.delete_tree(tag)


def remove_incomplete(where, after_step: int) -> None:
    """Folders of saves that never completed, newer than the checkpoint we restore from."""
    store = _store(where)
    for tag in _step_folders(store):
        base = tag.removesuffix(UNIVERSAL_SUFFIX)
        if int(_STEP_DIR.match(base).group(1)) > after_step and not store.exists(f"{base}/{MARKER}"):
            remove_checkpoint(store, tag)


def check_compatible(info: CheckpointInfo, world_size: int, zero_stage: int) -> None:
    """Refuse, before training, a restore DeepSpeed would do wrongly or not at all."""
    if info.zero_stage != zero_stage:
        raise ResumeError(
            f"checkpoint {info.location} was written with ZeRO stage {info.zero_stage}, but this run uses "
            f"stage {zero_stage}; DeepSpeed loads one stage's shards only into the same stage (its "
            f"universal checkpoint too). Resume with deepspeed.zero_stage: {info.zero_stage}"
        )
    if info.world_size != world_size and info.zero_stage not in ELASTIC_STAGES:
        raise ResumeError(
            f"checkpoint {info.location} was written by {info.world_size} workers and ZeRO stage "
            f"{info.zero_stage} cannot be resharded for {world_size}; resume with cluster.num_workers: "
            f"{info.world_size}"
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
