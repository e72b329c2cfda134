"""The preflight memory plan: arithmetic that matches the real model, stage by stage."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from orchestrator.plan.deepspeed_config import build_deepspeed_config
from orchestrator.plan.memory import MIB, count_parameters, estimate_memory
from orchestrator.spec import parse_spec
from tests.conftest import REPO


@pytest.mark.parametrize("tie", ["true", "false"])
def test_parameter_count_matches_the_torch_model(tie):
    from orchestrator.train.model import build_model

    spec = parse_spec(f"name: x\nmodel: {{n_layers: 3, d_model: 48, n_heads: 4, tie_weights: {tie}}}\n")
    model = build_model(spec.model)
    real = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    assert count_parameters(spec)[0] == real


def plan_for(stage: int, **extra):
    fields = ", ".join(f"{k}: {v}" for k, v in {"zero_stage": stage, **extra}.items())
    spec = parse_spec(f"name: x\nmodel: {{d_model: 512, n_layers: 8, n_heads: 8}}\ndeepspeed: {{{fields}}}\n")
    return estimate_memory(spec, world_size=4)


def states(stage: int, **extra) -> int:
    return plan_for(stage, **extra).model_state_bytes


def test_higher_stages_hold_less_per_worker():
    assert states(0) > states(1) > states(2) > states(3)


def test_bf16_holds_less_than_fp32_and_offload_moves_states_off_the_device():
    assert states(2, precision="bf16") < states(2)
    offloaded = plan_for(2, offload_optimizer="cpu")
    # fp32 ZeRO-2 on 4 workers: 4 B/param of weights stay, the fp32 master and Adam's 12 B/param / 4 move
    assert offloaded.model_state_bytes < states(2)
    assert offloaded.model_state_bytes + offloaded.offloaded_bytes == states(2)
    assert offloaded.offloaded_bytes == 12 * offloaded.parameters // 4


def test_a_plan_that_does_not_fit_suggests_a_remedy_that_does():
    spec = parse_spec(
        "name: x\nmodel: {d_model: 1024, n_layers: 12, n_heads: 8}\ndeepspeed: {zero_stage: 0}\n"
    )
    need = estimate_memory(spec, world_size=2).per_worker_bytes
    plan = estimate_memory(spec, world_size=2, capacity_bytes=need - 100 * MIB)
    assert plan.fits is False
    suggested = re.search(r"would need about ([\d,]+) MiB per worker", plan.suggestion)
    assert int(suggested.group(1).replace(",", "")) * MIB <= need - 100 * MIB
    assert "DOES NOT FIT" in plan.describe() and f"hint: {plan.suggestion}" in plan.describe()


def test_offload_blocks_in_the_deepspeed_config():
    spec = parse_spec("name: x\ndeepspeed: {zero_stage: 3, offload_optimizer: cpu, offload_params: cpu}\n")
    zero = build_deepspeed_config(spec)["zero_optimization"]
    assert zero["offload_optimizer"]["device"] == "cpu" and zero["offload_param"]["device"] == "cpu"


def test_validate_prints_the_memory_plan_without_importing_torch(tmp_path):
    code = (
        "import sys; from orchestrator.cli import main; rc = main(['validate', 'configs/quickstart.yaml']);"
        "print('HEAVY', sorted(m for m in ('torch', 'deepspeed', 'ray') if m in sys.modules)); sys.exit(rc)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "memory     " in result.stdout and "MiB per worker on cpu" in result.stdout
    assert "HEAVY []" in result.stdout


def test_one_worker_is_recommended_a_cheaper_zero_stage_and_keeps_its_own():
    """Printed by validate, plan and submit; the spec's stage is what the run uses."""
    from orchestrator.plan.memory import single_worker_stage_hint

    def spec(workers: int, stage: int, offload: str = "none"):
        return parse_spec(
            "name: x\nmodel: {d_model: 512, n_layers: 8, n_heads: 8}\n"
            f"cluster: {{num_workers: {workers}}}\n"
            f"deepspeed: {{zero_stage: {stage}, offload_optimizer: {offload}}}\n"
        )

    hint = single_worker_stage_hint(spec(1, 2), None)
    assert hint is not None and "deepspeed.zero_stage: 0 needs about" in hint
    assert single_worker_stage_hint(spec(1, 2), 64 * 2**30).endswith(
        "of 65,536 MiB and does less work per step"
    )
    stage0 = estimate_memory(spec(1, 0), 1).per_worker_bytes
    assert single_worker_stage_hint(spec(1, 3), stage0) is not None
    assert single_worker_stage_hint(spec(1, 3), stage0 - 1) is None  # it would not fit
    for quiet in (spec(2, 2), spec(1, 0), spec(1, 2, "cpu")):
        assert single_worker_stage_hint(quiet, None) is None
    assert build_deepspeed_config(spec(1, 2))["zero_optimization"]["stage"] == 2  # never switched
