"""The checkpoint manager of a rank: saves and restores everything with a ``state_dict`` (the DeepSpeed
engine, the data cursor, early stopping, the step counters, every rank's random generators), through
the storage layer only. ``orchestrator.train.checkpoint`` decides what "latest complete" means.

Saving to a directory (local or mounted): every rank writes its shards there, then rank 0 marks the
checkpoint complete after a barrier. Training is blocked for the write.

Saving to an object store: every rank writes its shards to node-local scratch
(``ORCHESTRATOR_SCRATCH_DIR``, default the system's temporary directory), and training goes on while
a thread uploads them; the thread then writes ``uploaded-rank-<r>.json`` (each file's size and
digest). Rank 0's thread writes ``COMPLETE.json`` once every rank's record is in the store; a rank's
upload thread cannot join the training process group, so records in the store are how the ranks
agree. Training is blocked only for the local write (``checkpoint_seconds``); the upload's time is
logged as ``checkpoint_upload_seconds``.

The rule for a save that comes while an upload still runs: the ranks agree (one all-reduce) whether
every previous upload has finished; if not, this save is skipped and training goes on (the run's last
save never is: it waits). A failed upload fails the rank at its next save or at the end, so a run
never ends FINISHED without its last checkpoint stored.

Restoring: rank 0 picks the latest complete checkpoint and every rank loads the files it needs (from
the store: downloaded and checked against the recorded digests). At another world size the checkpoint
is converted once to DeepSpeed's universal form (``orchestrator.train.universal``) and loaded as such.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import ResumeError
from orchestrator.fsutil import file_sha256
from orchestrator.storage.store import StorageError, StoreSettings
from orchestrator.train.checkpoint import (
    MARKER,
    UNIVERSAL_SUFFIX,
    UPLOADED,
    CheckpointInfo,
    check_compatible,
    latest_complete_checkpoint,
    marker_payload,
    publish,
    remove_incomplete,
    step_tag,
    training_state_of,
)
from orchestrator.train.safe_load import weights_only_loading
from orchestrator.train.state import capture_rng, restore_rng

_POLL_S = 0.25


def scratch_root() -> Path:
    """This node's scratch space for checkpoint shards on their way to (or from) an object store."""
    return Path(
        os.environ.get("ORCHESTRATOR_SCRATCH_DIR") or Path(tempfile.gettempdir()) / "gpt-orchestrator"
    )


@dataclass(frozen=True)
class Restore:
    """What this attempt restores from: a complete checkpoint, loaded directly or in universal form."""

    info: CheckpointInfo
    universal: bool  # written by another number of ranks: load its universal conversion


@dataclass
class _Upload:
    step: int
    thread: threading.Thread
    started: float
    seconds: float | None = None
    error: BaseException | None = None


class CheckpointManager:
    def __init__(self, plan, rank: int, world: int):
        self.plan, self.rank, self.world = plan, rank, world
        self.settings = StoreSettings.from_env(plan.spec.storage)
        self.store = plan.checkpoint_store()
        self.remote = not self.store.is_local
        self.scratch = scratch_root() / plan.run_name / f"rank-{rank}"
        self._upload: _Upload | None = None
        self._unreported: list[_Upload] = []  # finished or running, their time not logged yet

    # --- choosing what to restore (before the engine exists) -----------------------------------

    def choose_restore(self) -> Restore | None:
        """The checkpoint every rank restores (rank 0 decides), checked for this world."""
        import torch.distributed as dist

        chosen: list = [latest_complete_checkpoint(self.store) if self.rank == 0 else None]
        dist.broadcast_object_list(chosen, src=0)
        info: CheckpointInfo | None = chosen[0]
        if info is None:
            return None
        check_compatible(info, self.world, self.plan.spec.deepspeed.zero_stage)
        self._require_own(info)
        universal = info.world_size != self.world and info.zero_stage != 0
        return Restore(info, universal)

    def _require_own(self, info: CheckpointInfo) -> None:
        """A checkpoint is a pickle: only one inside this run's own checkpoint location is loaded."""
        from orchestrator.train.safe_load import require_inside, require_under

        if self.store.is_local:
            require_inside(info.location, self.store.uri)
        else:
            require_under(info.location, self.store.uri)

    # --- saving ------------------------------------------------------------------------------

    def save(self, engine, state: dict[str, Any], info: CheckpointInfo, final: bool) -> bool:
        """Save ``state`` (the orchestrator's state dicts) with the engine's; False if skipped."""
        import torch.distributed as dist

        if self.remote and not self._all_ready(final):
            if self.rank == 0:
                print(
                    f"[checkpoint] step {info.step} skipped: step {self._upload.step} is still uploading "
                    "(a save waits for no upload; the next one is tried at the next interval)",
                    flush=True,
                )
            return False
        rng_by_rank: list = [None] * self.world
        dist.all_gather_object(rng_by_rank, capture_rng())
        client_state = {"orchestrator": {**state, "rng_by_rank": rng_by_rank, "world_size": self.world}}
        tag = info.tag
        target = self.scratch if self.remote else self.store.local_path()
        if self.remote:
            shutil.rmtree(self.scratch / tag, ignore_errors=True)
        # save_latest=False: DeepSpeed's own `latest` is written before other ranks may be done.
        engine.save_checkpoint(str(target), tag=tag, client_state=client_state, save_latest=False)
        if not self.remote:
            dist.barrier()  # every rank's shards are on disk
            if self.rank == 0:
                ckpt = self.plan.spec.checkpoint
                publish(self.store, info, ckpt.keep_last, ckpt.keep_best)
            dist.barrier()  # nobody runs ahead (or exits) before the checkpoint is published
            return True
        self._start_upload(info)
        if final:
            self.wait()
        return True

    def _all_ready(self, final: bool) -> bool:
        """Every rank's previous upload is done (the last save waits for it instead)."""
        import torch
        import torch.distributed as dist

        if final:
            self.wait()
            return True
        busy = self._upload is not None and self._upload.thread.is_alive()
        self._raise_failed_upload()
        flag = torch.tensor([0.0 if busy else 1.0])
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return flag.item() > 0

    def _start_upload(self, info: CheckpointInfo) -> None:
        upload = _Upload(info.step, threading.Thread(), time.perf_counter())
        upload.thread = threading.Thread(
            target=self._upload_body, args=(info, upload), name=f"checkpoint-upload-{info.step}", daemon=True
        )
        self._upload = upload
        self._unreported.append(upload)
        upload.thread.start()

    def _upload_body(self, info: CheckpointInfo, upload: _Upload) -> None:
        try:
            folder = self.scratch / info.tag
            files = {}
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                name = path.relative_to(folder).as_posix()
                self.store.upload(path, f"{info.tag}/{name}")
                files[name] = {"size": path.stat().st_size, "sha256": file_sha256(path)}
            record = json.dumps({"rank": self.rank, "files": files}).encode()
            self.store.write_bytes(f"{info.tag}/{UPLOADED.format(rank=self.rank)}", record)
            if self.rank == 0:
                self._complete(info)
            shutil.rmtree(folder, ignore_errors=True)
            upload.seconds = time.perf_counter() - upload.started
        except BaseException as exc:  # kept for the training thread, which fails the rank with it
            upload.error = exc

    def _complete(self, info: CheckpointInfo) -> None:
        """Rank 0: once every rank's files are stored, the checkpoint is complete."""
        deadline = time.monotonic() + self.settings.retry_deadline_s + 600
        files: dict[str, Any] = {}
        for rank in range(self.world):
            name = f"{info.tag}/{UPLOADED.format(rank=rank)}"
            while not self.store.exists(name):
                if time.monotonic() > deadline:
                    raise StorageError(
                        f"checkpoint {info.tag}: rank {rank} never finished its upload; the checkpoint "
                        "stays incomplete and will not be loaded"
                    )
                time.sleep(_POLL_S)
            files.update(json.loads(self.store.read_bytes(name))["files"])
        self._upload_journal()
        complete = CheckpointInfo(
            **{**vars(info), "location": self.store.child(info.tag).uri, "files": files}
        )
        ckpt = self.plan.spec.checkpoint
        publish(self.store, complete, ckpt.keep_last, ckpt.keep_best)

    def _upload_journal(self) -> None:
        """The metric journal beside the checkpoints: a restart on another node finds it there."""
        from orchestrator.track.journal import JOURNAL_NAME, journal_path

        journal = journal_path(self.plan.checkpoint_dir)
        if journal.is_file():
            self.store.upload(journal, JOURNAL_NAME)

    def _raise_failed_upload(self) -> None:
        upload = self._upload
        if upload is not None and upload.error is not None:
            error, upload.error = upload.error, None
            if isinstance(error, StorageError):
                raise StorageError(f"the upload of checkpoint step-{upload.step} failed: {error}") from None
            raise error

    def wait(self) -> None:
        """Until this rank's upload (and, on rank 0, the checkpoint's completion) is done."""
        if self._upload is not None:
            self._upload.thread.join()
        self._raise_failed_upload()

    def finished_uploads(self) -> list[tuple[int, float]]:
        """(step, seconds) of each upload that finished since the last call, for the metrics."""
        done = [u for u in self._unreported if u.seconds is not None]
        self._unreported = [u for u in self._unreported if u.seconds is None and u.error is None]
        return [(u.step, u.seconds) for u in done]

    # --- restoring ---------------------------------------------------------------------------

    def restore(self, engine, restore: Restore) -> dict[str, Any]:
        """Load the chosen checkpoint into the engine; the orchestrator's state saved with it."""
        import torch.distributed as dist

        info = restore.info
        if self.rank == 0:
            remove_incomplete(self.store, info.step)
        load_dir, tag = self._load_location(restore)
        with weights_only_loading():  # DeepSpeed unpickles with weights_only=False: not here
            load_path, client_state = engine.load_checkpoint(str(load_dir), tag=tag)
        if load_path is None:
            raise ResumeError(f"DeepSpeed could not load checkpoint {info.location}")
        fields = dict(training_state_of(client_state))
        rng_by_rank = fields.pop("rng_by_rank")
        saved_world = fields.pop("world_size", info.world_size)
        if saved_world == self.world:
            restore_rng(rng_by_rank[self.rank])
        else:  # other ranks than were saved: each takes a generator of its own from the seed and step
            _reseed(self.plan.spec.train.seed, info.step, self.rank)
        dist.barrier()
        return fields

    def _load_location(self, restore: Restore) -> tuple[Path, str]:
        info = restore.info
        if restore.universal:
            from orchestrator.train.universal import universal_folder

            return universal_folder(self, info)
        if not self.remote:
            return self.store.local_path(), info.tag
        target = self.scratch / "restore"
        download_checkpoint(self.store, info, target / info.tag, self._needed(info))
        return target, info.tag

    def _needed(self, info: CheckpointInfo):
        """The files of a checkpoint this rank loads: the model states and its own ZeRO partition."""
        own = f"zero_pp_rank_{self.rank}_"
        return [name for name in info.files if "zero_pp_rank_" not in name or name.startswith(own)]


def download_checkpoint(store, info: CheckpointInfo, target: Path, names=None) -> Path:
    """Files of a complete checkpoint into ``target``, each checked against the recorded digest."""
    target.mkdir(parents=True, exist_ok=True)
    for name in names if names is not None else info.files:
        expected = info.files[name]
        local = target / name
        if not (
            local.is_file()
            and local.stat().st_size == expected["size"]
            and file_sha256(local) == expected["sha256"]
        ):
            store.download(f"{info.tag}/{name}", local)
            if file_sha256(local) != expected["sha256"]:
                local.unlink(missing_ok=True)
                raise ResumeError(
                    f"{store.describe(info.tag + '/' + name)} does not match the digest recorded when it was "
                    "uploaded; the checkpoint was changed in the store and is not loaded"
                )
    return target


def _reseed(seed: int, step: int, rank: int) -> None:
    import random

    import numpy as np
    import torch

    mixed = (seed * 1_000_003 + step * 8191 + rank) % 2**32
    random.seed(mixed)
    np.random.seed(mixed)
    torch.manual_seed(mixed)


def new_checkpoint_info(plan, step: int, world: int, metric: str, last_eval: dict, higher_is_better: bool):
    store_uri = plan.checkpoint_uri
    return CheckpointInfo(
        location=f"{store_uri.rstrip('/')}/{step_tag(step)}",
        step=step,
        world_size=world,
        zero_stage=plan.spec.deepspeed.zero_stage,
        metric=metric if metric in last_eval else None,
        metric_value=last_eval.get(metric),
        higher_is_better=higher_is_better,
    )


__all__ = ["MARKER", "UNIVERSAL_SUFFIX", "CheckpointManager", "Restore", "marker_payload"]
