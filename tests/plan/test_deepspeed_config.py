"""RunSpec -> DeepSpeed config and the Plan's arithmetic."""

from __future__ import annotations

import pytest

from orchestrator.plan import PlanError, build_deepspeed_config
from orchestrator.spec import parse_spec
from tests.conftest import prepared_plan


def test_batch_sizes_multiply_out():
    spec = parse_spec(
        "name: x\ntrain: {micro_batch_size: 3, gradient_accumulation_steps: 4}\ncluster: {num_workers: 5}\n"
    )
    config = build_deepspeed_config(spec)
    assert config["train_batch_size"] == 60
    assert config["train_micro_batch_size_per_gpu"] == 3
    assert config["gradient_accumulation_steps"] == 4


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_zero_stage_comes_from_the_spec(stage):
    spec = parse_spec(f"name: x\ndeepspeed: {{zero_stage: {stage}}}\n")
    assert build_deepspeed_config(spec)["zero_optimization"]["stage"] == stage


def test_precision_blocks():
    bf16 = build_deepspeed_config(parse_spec("name: x\ndeepspeed: {precision: bf16}\n"))
    fp32 = build_deepspeed_config(parse_spec("name: x\n"))
    assert bf16["bf16"] == {"enabled": True} and "fp16" not in bf16
    assert "bf16" not in fp32 and "fp16" not in fp32


def test_plan_resolves_paths_and_steps(tmp_path):
    spec = parse_spec("name: x\ntrain: {epochs: 2, micro_batch_size: 4}\ncluster: {num_workers: 2}\n")
    plan = prepared_plan(spec, tmp_path)
    assert plan.steps_per_epoch == plan.data.train_samples // 8
    assert plan.total_steps == 2 * plan.steps_per_epoch
    assert plan.checkpoint_dir.startswith(str(tmp_path / "checkpoints" / "x-"))
    assert plan.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_max_steps_caps_the_run(tmp_path):
    spec = parse_spec("name: x\ntrain: {max_steps: 7}\nschedule: {warmup_steps: 2}\n")
    assert prepared_plan(spec, tmp_path).total_steps == 7


def test_batch_larger_than_the_data_is_a_plan_error(tmp_path):
    spec = parse_spec("name: x\ntrain: {micro_batch_size: 4096}\ncluster: {num_workers: 4}\n")
    with pytest.raises(PlanError, match="hint: lower"):
        prepared_plan(spec, tmp_path)
