"""Runs ``train_worker(plan)`` under ``python -m torch.distributed.run``, as the architecture allows,
with optional fault injection for the tests (no Ray start-up per test).

    python -m torch.distributed.run --nproc_per_node 2 tests/train/engine_main.py PLAN.pkl \
        [--stop-after-step N] [--exit-after-step N] [--kill-during-save-at N]
        [--nan-at-micro-batch N] [--record-samples FILE]
"""

from __future__ import annotations

import argparse
import os
import pickle
import signal


def main() -> None:
    args = _parser().parse_args()
    with open(args.plan, "rb") as handle:
        plan = pickle.load(handle)
    if args.stop_after_step:
        _stop_after_checkpoint(args.stop_after_step)
    if args.exit_after_step:
        _exit_after_step(args.exit_after_step)
    if args.record_samples:
        _record_samples(args.record_samples)
    if args.slow_uploads:
        _slow_uploads(args.slow_uploads)
    if args.kill_during_save_at:
        _kill_while_writing(args.kill_during_save_at)
    if args.nan_at_micro_batch:
        _nan_loss_at(args.nan_at_micro_batch)
    from orchestrator.train.worker import train_worker

    train_worker(plan)
    import sys

    # what the run imported of torch.compile's stack (tests/train/test_engine.py)
    compiler = "torch._inductor.compile_fx" in sys.modules
    print(f"[engine_main] torch._inductor.compile_fx imported: {compiler}", flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    parser.add_argument("plan")
    parser.add_argument("--stop-after-step", type=int)
    parser.add_argument("--kill-during-save-at", type=int)
    parser.add_argument("--nan-at-micro-batch", type=int, help="on rank 1 only")
    parser.add_argument("--exit-after-step", type=int, help="every rank dies after this step, unsaved")
    parser.add_argument("--record-samples", help="append each rank's sample ids to FILE.<rank>")
    parser.add_argument("--slow-uploads", type=float, help="each checkpoint file's upload waits this long")
    return parser


def _slow_uploads(seconds: float) -> None:
    """A store far away: every file of a checkpoint takes ``seconds`` longer to upload (so that a test
    can act while an upload is under way)."""
    import time

    from orchestrator.storage.store import Store

    original = Store.upload

    def slow(self, source, path):
        if "/step-" in f"/{path}":
            time.sleep(seconds)
        return original(self, source, path)

    Store.upload = slow


def _exit_after_step(step: int) -> None:
    """Every rank dies (os._exit, no clean-up) right after optimizer step `step`: a kill between two
    checkpoints."""
    from orchestrator.train import loop

    original = loop.after_step

    def after_then_exit(s, *args):
        original(s, *args)
        if s.state.step == step:
            os._exit(3)

    loop.after_step = after_then_exit


def _record_samples(path: str) -> None:
    """Each rank writes, per micro batch it reads, the data position and the sample ids."""
    import json

    from orchestrator.train.batches import BatchFeeder

    original = BatchFeeder._rows

    def recorded(self, cursor, micro_step):
        batch, ids = original(self, cursor, micro_step)
        record = {"epoch": cursor.epoch, "position": cursor.sample_in_epoch, "micro_step": micro_step,
                  "rank": self.feed.rank, "ids": [int(i) for i in ids]}  # fmt: skip
        with open(f"{path}.{self.feed.rank}", "a") as handle:
            handle.write(json.dumps(record) + "\n")
        return batch, ids

    BatchFeeder._rows = recorded


def _stop_after_checkpoint(step: int) -> None:
    """Every rank exits as soon as the checkpoint of `step` is published: a clean stop at step N."""
    from orchestrator.train.checkpoint_manager import CheckpointManager

    original = CheckpointManager.save

    def save_then_exit(self, engine, state, info, final):
        saved = original(self, engine, state, info, final)
        if info.step == step:
            self.wait()  # an object store's upload too
            os._exit(0)
        return saved

    CheckpointManager.save = save_then_exit


def _kill_while_writing(step: int) -> None:
    """Rank 0 SIGKILLs itself halfway through writing its first file of checkpoint `step`."""
    import torch

    original = torch.save

    def save_or_die(obj, f, *args, **kwargs):
        if f"step-{step}" in str(f) and os.environ.get("RANK") == "0":
            with open(f, "wb") as handle:
                handle.write(b"PK\x03\x04 half a checkpoint")
                handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return original(obj, f, *args, **kwargs)

    torch.save = save_or_die


def _nan_loss_at(micro_batch: int) -> None:
    """The loss of one training micro batch on rank 1 becomes NaN (counting from 1)."""
    from orchestrator.train import loop

    original = loop.compute_loss
    calls = {"train": 0}

    def maybe_nan(engine, inputs, targets):
        loss, logits = original(engine, inputs, targets)
        if engine.module.training and os.environ.get("RANK") == "1":
            calls["train"] += 1
            if calls["train"] == micro_batch:
                loss = loss * float("nan")
        return loss, logits

    loop.compute_loss = maybe_nan


if __name__ == "__main__":
    main()
