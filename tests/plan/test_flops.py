"""FLOPs per token and the accelerators' peaks behind the mfu metric."""

from __future__ import annotations

import pytest

from orchestrator.plan.flops import flops_per_token, matmul_parameters, padded_vocab, peak_tflops
from orchestrator.spec import parse_spec
from orchestrator.spec.loader import SpecError
from orchestrator.spec.models import ModelSpec


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("multiple", [1, 64])
def test_n_is_every_multiplied_weight_of_the_built_model(tie, multiple):
    """N counts the blocks, the final norm and the head at the padded vocabulary, never a lookup."""
    from orchestrator.train.model import build_model

    spec = ModelSpec(
        n_layers=2, n_heads=2, d_model=32, context_length=32, vocab_size=300, tie_weights=tie,
        vocab_multiple=multiple,
    )  # fmt: skip
    model = build_model(spec)
    unique = {id(p): p for p in model.parameters()}.values()
    lookups = model.pos_emb.weight.numel() + (0 if tie else model.tok_emb.weight.numel())
    assert matmul_parameters(spec) == sum(p.numel() for p in unique) - lookups
    assert model.head.out_features == padded_vocab(spec) == (300 if multiple == 1 else 320)


def test_the_formula_agrees_with_pytorch_s_flop_counter():
    """6N + 12LdT against FlopCounterMode's count of one forward and backward (matrix multiplies and
    attention; it leaves out the norms and biases N includes: under 1% at this width)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from orchestrator.train.model import build_model

    spec = ModelSpec(n_layers=2, n_heads=4, d_model=256, context_length=256, vocab_size=512)
    with torch.device("meta"):
        model = build_model(spec)
        idx = torch.zeros(2, spec.context_length, dtype=torch.long)
    counter = FlopCounterMode(display=False)
    with counter:
        model(idx).float().sum().backward()
    counted = counter.get_total_flops() / idx.numel()
    assert flops_per_token(spec) == pytest.approx(counted, rel=0.01)


@pytest.mark.parametrize(
    ("name", "precision", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", "bf16", 989.0),
        ("NVIDIA H100 PCIe", "bf16", 756.0),
        ("NVIDIA H100 NVL", "fp16", 835.0),
        ("NVIDIA H200", "bf16", 989.0),
        ("NVIDIA GH200 480GB", "bf16", 989.0),
        ("NVIDIA A100-SXM4-80GB", "bf16", 312.0),
        ("NVIDIA A100 80GB PCIe", "fp16", 312.0),
        ("NVIDIA H100 80GB HBM3", "fp32", None),  # the table holds 16-bit peaks only
        ("NVIDIA GeForce RTX 4090", "bf16", None),
        ("Tesla V100-SXM2-16GB", "fp16", None),
    ],
)
def test_known_peaks_by_cuda_device_name(name, precision, peak):
    assert peak_tflops(name, precision) == peak


def test_the_spec_s_peak_is_validated():
    assert parse_spec("name: x\ntrain: {peak_tflops: 989}\n").train.peak_tflops == 989.0
    for bad in ("0", "-3", ".nan", "'fast'"):
        with pytest.raises(SpecError, match=r"train\.peak_tflops"):
            parse_spec(f"name: x\ntrain: {{peak_tflops: {bad}}}\n")


def test_no_peak_known_means_no_mfu_only_tflops():
    """On a CPU without train.peak_tflops: the achieved FLOP/s, never a made-up utilisation."""
    from types import SimpleNamespace

    from orchestrator.train.loop import utilisation_events
    from orchestrator.train.worker import device_peak_tflops

    plan = SimpleNamespace(spec=parse_spec("name: x"), flops_per_token=1e9)
    assert device_peak_tflops(plan, "cpu") is None
    session = SimpleNamespace(plan=plan, world=2, peak_tflops=None)
    (event,) = utilisation_events(session, tokens_per_s=4000.0, step=5)
    assert (event.name, event.value, event.step) == ("tflops", 4000.0 * 1e9 / 2 / 1e12, 5)
    session.peak_tflops = 4.0  # 2 TFLOP/s per device achieved
    assert [(e.name, e.value) for e in utilisation_events(session, 4000.0, 5)][1] == (
        "mfu",
        pytest.approx(0.5),
    )
