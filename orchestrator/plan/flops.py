"""Model FLOPs per token and the accelerators' peaks: what the ``mfu`` metric is measured against.

Training one token costs ``6 N + 12 L d T`` FLOPs (forward 2 and backward 4 per weight of a matrix
multiply, plus attention's scores and weighted sums; the formula of the PaLM paper's appendix B,
which nanoGPT and llm.c use): ``L`` layers, ``d`` the model width, ``T`` the context length.

``N`` counts the weights a token's forward pass multiplies with: every block (its biases and layer
norms too, a rounding error), the final layer norm and the output head at the padded vocabulary
(``model.vocab_multiple``: those columns are computed too). With tied weights the token embedding
*is* the head and counts once. The position table and an untied token embedding are lookups, not
matrix multiplies, and are left out. For GPT-2 124M (vocabulary 50,304, context 1024) this gives
855.4M FLOPs per token; PyTorch's own ``FlopCounterMode`` counts 854.7M for a forward and backward
(``benchmarks/mfu.py --cpu-check`` compares the two).

>>> from orchestrator.spec.models import ModelSpec
>>> gpt2 = ModelSpec(n_layers=12, n_heads=12, d_model=768, context_length=1024, vocab_size=50257,
...                  vocab_multiple=64)
>>> padded_vocab(gpt2), f"{flops_per_token(gpt2) / 1e6:.1f}M"
(50304, '855.4M')
>>> peak_tflops("NVIDIA H100 80GB HBM3", "bf16"), peak_tflops("NVIDIA A100-SXM4-80GB", "fp32")
(989.0, None)
"""

from __future__ import annotations

# Dense (no sparsity) bf16/fp16 tensor-core peaks of one device, TFLOP/s, from the vendors' data
# sheets, matched in this order on the CUDA device name (so "H100 PCIe" before "H100"). A GH200's
# name holds "H200"; its GPU has the same peak.
PEAK_BF16_TFLOPS: tuple[tuple[tuple[str, ...], float], ...] = (
    (("H100", "PCIE"), 756.0),
    (("H100", "NVL"), 835.0),
    (("H100",), 989.0),  # SXM
    (("H200",), 989.0),
    (("A100",), 312.0),
)
# The table holds the 16-bit peaks: an fp32 run's MFU needs train.peak_tflops.
TABLE_PRECISIONS = ("bf16", "fp16")


def padded_vocab(model) -> int:
    """The vocabulary the embedding and the head are built with: ``vocab_size`` rounded up to a
    multiple of ``vocab_multiple`` (the tokenizer, exports and sampling keep ``vocab_size``)."""
    multiple = model.vocab_multiple
    return -(-model.vocab_size // multiple) * multiple


def matmul_parameters(model) -> int:
    """``N`` of the formula (see the module's docstring)."""
    d = model.d_model
    block = 12 * d * d + 13 * d  # qkv, projection, the two FFN matrices with their biases; two norms
    return model.n_layers * block + 2 * d + padded_vocab(model) * d


def flops_per_token(model) -> float:
    """Training FLOPs per token, ``6 N + 12 L d T``."""
    return 6.0 * matmul_parameters(model) + 12.0 * model.n_layers * model.d_model * model.context_length


def peak_tflops(device_name: str, precision: str) -> float | None:
    """The known dense peak of a device at a precision, or None (an unknown device, fp32, a CPU)."""
    if precision not in TABLE_PRECISIONS:
        return None
    name = device_name.upper()
    for words, peak in PEAK_BF16_TFLOPS:
        if all(word in name for word in words):
            return peak
    return None
