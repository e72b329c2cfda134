"""The DeepSpeed escape hatch: raw keys merge into the config, typed keys stay typed, and DeepSpeed
itself judges the values."""

from __future__ import annotations

import pytest

from orchestrator.cli import main
from orchestrator.plan import build_deepspeed_config
from orchestrator.spec import SpecError, parse_spec


def test_raw_keys_merge_into_the_section_they_name():
    spec = parse_spec("name: x\ndeepspeed:\n  raw_config: {zero_optimization: {overlap_comm: true}}\n")
    zero = build_deepspeed_config(spec)["zero_optimization"]
    assert zero == {"stage": 2, "overlap_comm": True}


@pytest.mark.parametrize(
    ("raw", "path", "hint"),
    [
        ("{train_batch_size: 64}", "deepspeed.raw_config.train_batch_size", "train.global_batch_size"),
        ("{bf16: {enabled: true}}", "deepspeed.raw_config.bf16", "deepspeed.precision"),
        ("{zero_optimization: {stage: 3}}", "deepspeed.raw_config.zero_optimization.stage", "zero_stage"),
        ("{zero_optimisation: {}}", "deepspeed.raw_config.zero_optimisation", "`zero_optimization`"),
    ],
)
def test_owned_or_unknown_keys_are_refused_with_a_pointer(raw, path, hint):
    with pytest.raises(SpecError) as info:
        parse_spec(f"name: x\ndeepspeed:\n  raw_config: {raw}\n", "s.yaml")
    (problem,) = info.value.problems
    assert problem.path == path and problem.line == 3
    assert hint in problem.hint


@pytest.mark.slow
def test_deepspeed_itself_rejects_a_bad_value(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "s.yaml"
    spec.write_text("name: x\ndeepspeed:\n  raw_config: {zero_optimization: {reduce_bucket_size: lots}}\n")
    assert main(["plan", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "DeepSpeed refuses deepspeed.raw_config" in err and "reduce_bucket_size" in err
    spec.write_text("name: x\ndeepspeed:\n  raw_config: {zero_optimization: {reduce_bucket_size: 1000}}\n")
    assert main(["plan", str(spec)]) == 0
    assert '"reduce_bucket_size": 1000' in capsys.readouterr().out
