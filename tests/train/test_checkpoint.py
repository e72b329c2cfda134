"""Checkpoint visibility, pointers and pruning: the file-level rules, without an engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import ResumeError
from orchestrator.train.checkpoint import (
    MARKER,
    CheckpointInfo,
    best_checkpoint,
    check_compatible,
    complete_checkpoints,
    latest_complete_checkpoint,
    prune,
    publish,
    remove_incomplete,
)


def fake_save(
    run_dir: Path, step: int, val_loss: float | None = None, complete: bool = True
) -> CheckpointInfo:
    path = run_dir / f"step-{step}"
    path.mkdir(parents=True)
    (path / "mp_rank_00_model_states.pt").write_bytes(b"weights")
    info = CheckpointInfo(str(path), step, 2, 2, "val_loss" if val_loss else None, val_loss)
    if complete:
        publish(run_dir, info, keep_last=2, keep_best=True)
    return info


def test_a_directory_without_marker_is_never_the_latest(tmp_path):
    fake_save(tmp_path, 5)
    fake_save(tmp_path, 10, complete=False)
    assert latest_complete_checkpoint(tmp_path).step == 5
    assert (tmp_path / "latest").read_text() == "step-5"


def test_an_unreadable_marker_counts_as_incomplete(tmp_path):
    fake_save(tmp_path, 5)
    fake_save(tmp_path, 10)
    (tmp_path / "step-10" / MARKER).write_text("{truncated")
    assert latest_complete_checkpoint(tmp_path).step == 5


def test_keeps_the_last_two_and_the_best(tmp_path):
    for step, loss in [(5, 3.0), (10, 2.0), (15, 2.5), (20, 2.6)]:
        fake_save(tmp_path, step, loss)
    assert [c.step for c in complete_checkpoints(tmp_path)] == [10, 15, 20]
    assert best_checkpoint(tmp_path).step == 10
    assert (tmp_path / "best").read_text() == "step-10"
    assert not (tmp_path / "step-5").exists()


def test_accuracy_is_better_when_higher(tmp_path):
    for step, acc in [(5, 0.1), (10, 0.3), (15, 0.2)]:
        path = tmp_path / f"step-{step}"
        path.mkdir()
        publish(tmp_path, CheckpointInfo(str(path), step, 1, 2, "val_accuracy", acc, True), 5, True)
    assert best_checkpoint(tmp_path).step == 10


def test_prune_removes_stale_incomplete_directories_but_not_newer_ones(tmp_path):
    fake_save(tmp_path, 5, complete=False)  # an old kill
    fake_save(tmp_path, 10)
    fake_save(tmp_path, 15, complete=False)  # a save in progress must survive
    prune(tmp_path, keep_last=2, best=None)
    assert not (tmp_path / "step-5").exists()
    assert (tmp_path / "step-15").exists()
    remove_incomplete(tmp_path, after_step=10)
    assert not (tmp_path / "step-15").exists() and (tmp_path / "step-10" / MARKER).exists()


def test_another_world_size_is_resharded_but_another_stage_is_refused_with_the_way_out(tmp_path):
    info = fake_save(tmp_path, 5)
    check_compatible(info, world_size=2, zero_stage=2)
    check_compatible(info, world_size=4, zero_stage=2)  # converted to DeepSpeed's universal form
    with pytest.raises(ResumeError, match=r"ZeRO stage 2, but this run uses stage 3.*zero_stage: 2"):
        check_compatible(info, world_size=2, zero_stage=3)


def test_a_hand_edited_marker_is_not_a_checkpoint(tmp_path):
    fake_save(tmp_path, 5)
    fake_save(tmp_path, 10)
    (tmp_path / "step-10" / MARKER).write_text('{"step": "ten", "world_size": 2, "zero_stage": 2}')
    assert latest_complete_checkpoint(tmp_path).step == 5
