"""The engine's spec fields: bounds and named cross-field checks with a hint."""

from __future__ import annotations

import pytest

from orchestrator.spec import SpecError, parse_spec


def problem(text: str):
    with pytest.raises(SpecError) as info:
        parse_spec(text, "spec.yaml")
    (only,) = info.value.problems
    return only


def test_fp16_without_a_gpu_says_why_and_what_to_use():
    p = problem("name: x\ndeepspeed: {precision: fp16}\n")
    assert "fp16 needs a GPU" in p.message and "not supported on your device" in p.message
    assert p.hint.startswith("use precision: bf16")
    assert parse_spec("name: x\ndeepspeed: {precision: fp16}\ncluster: {gpus_per_worker: 1}\n")


def test_parameter_offload_needs_stage_3():
    p = problem("name: x\ndeepspeed: {zero_stage: 2, offload_params: cpu}\n")
    assert p.path == "deepspeed" and "needs ZeRO stage 3" in p.message and "zero_stage: 3" in p.hint


def test_nvme_offload_needs_a_path():
    p = problem("name: x\ndeepspeed: {zero_stage: 3, offload_optimizer: nvme}\n")
    assert p.hint == "set deepspeed.nvme_path"


def test_nan_skip_refuses_gradient_accumulation():
    p = problem("name: x\ntrain: {nan_policy: skip, gradient_accumulation_steps: 2}\n")
    assert "nan_policy: stop" in p.hint


def test_early_stopping_and_checkpoint_bounds():
    assert problem("name: x\nearly_stopping: {patience: 0}\n").path == "early_stopping.patience"
    assert problem("name: x\ncheckpoint: {keep_last: 0}\n").path == "checkpoint.keep_last"
    assert problem("name: x\nearly_stopping: {metric: train_loss}\n").path == "early_stopping.metric"
