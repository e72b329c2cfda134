"""Checkpoints are pickles: a planted one must never run. `generate` and resume load weights only,
and only from inside the run's directory, whatever the MLflow tags say.

No training here: the planted files are written by hand (DeepSpeed's file names, a completion
marker), the MLflow run by ``create_run`` on a sqlite store. Real checkpoints of every ZeRO stage are
loaded through the same path by tests/train/test_engine.py (generate, resume)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.errors import UntrustedInput
from orchestrator.train.checkpoint import MARKER
from orchestrator.train.safe_load import load_model_states, require_inside

SPEC = "name: planted\nmodel: {n_layers: 1, n_heads: 2, d_model: 32, context_length: 32, vocab_size: 300}\n"


class Payload:
    """Unpickling this creates a file: the stand-in for any code a planted checkpoint would run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def plant(run_dir: Path, marker: Path, zero_stage: int = 0) -> Path:
    import shutil

    import torch

    tag = run_dir / "step-10"
    shutil.rmtree(tag, ignore_errors=True)
    tag.mkdir(parents=True)
    payload = {"module": {}, "buffer_names": [], "param_shapes": [], "evil": Payload(marker)}
    name = "mp_rank_00_model_states.pt" if zero_stage == 0 else "zero_pp_rank_0_mp_rank_00_model_states.pt"
    torch.save(payload, tag / name)
    fields = {"step": 10, "world_size": 1, "zero_stage": zero_stage}
    (tag / MARKER).write_text(json.dumps(fields))
    return tag


@pytest.fixture(scope="module")
def started(tmp_path_factory):
    """A run of this orchestrator in <work>/mlflow.db with its directory <work>/checkpoints/<name>."""
    from orchestrator.lifecycle import plan_run, start_run
    from orchestrator.spec import parse_spec

    work = tmp_path_factory.mktemp("planted")
    return work, start_run(plan_run(parse_spec(SPEC), work), work)


@pytest.fixture
def run(started, monkeypatch):
    work, plan = started
    monkeypatch.chdir(work)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return plan


@pytest.mark.parametrize("zero_stage", [0, 2])
def test_generate_refuses_a_planted_checkpoint_without_running_it(run, tmp_path, capsys, zero_stage):
    marker = tmp_path / "pwned"
    plant(Path(run.checkpoint_dir), marker, zero_stage)
    assert main(["generate", run.run_id, "--prompt", "x", "--max-new-tokens", "1"]) == 2
    err = capsys.readouterr().err
    assert "refusing to load a checkpoint" in err and "it names io.open" in err, err
    assert not marker.exists(), "the planted pickle ran"


def test_a_run_directory_outside_the_checkpoint_root_is_refused(run, tmp_path, capsys):
    """The directory comes from an MLflow tag: anyone who can write the store can point it anywhere."""
    from orchestrator.track.runs import CHECKPOINT_DIR_TAG, set_tags

    elsewhere = tmp_path / "elsewhere" / run.run_name
    plant(elsewhere, tmp_path / "pwned")
    set_tags(run.tracking_uri, run.run_id, {CHECKPOINT_DIR_TAG: str(elsewhere)})
    try:
        assert main(["generate", run.run_id, "--prompt", "x"]) == 2
        err = capsys.readouterr().err
        assert f"lies outside {Path(run.checkpoint_dir).parent}" in err, err
        assert main(["submit", "--resume", run.run_id]) == 2
        assert "lies outside" in capsys.readouterr().err
    finally:
        set_tags(run.tracking_uri, run.run_id, {CHECKPOINT_DIR_TAG: run.checkpoint_dir})
    assert not (tmp_path / "pwned").exists()


def test_a_checkpoint_linked_out_of_the_run_directory_is_refused(tmp_path):
    run_dir, outside = tmp_path / "checkpoints" / "r", tmp_path / "outside"
    run_dir.mkdir(parents=True)
    outside.mkdir()
    (run_dir / "step-5").symlink_to(outside)
    with pytest.raises(UntrustedInput, match="lies outside"):
        require_inside(run_dir / "step-5", run_dir)
    assert require_inside(run_dir / "step-6", run_dir) == (run_dir / "step-6").resolve()


def test_weights_load_and_the_forcing_is_undone(tmp_path):
    import os

    import numpy as np
    import torch

    path = tmp_path / "states.pt"
    torch.save({"module": {"w": torch.ones(2)}, "rng": np.random.get_state()}, path)
    states = load_model_states(path)
    assert torch.equal(states["module"]["w"], torch.ones(2)) and states["rng"][0] == "MT19937"
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ
