"""Sampling speed on the CPU: tokens per second recomputing the whole context for every new token (as
`generate` did before it kept a KV cache) and with the KV cache, side by side.

    .venv/bin/python benchmarks/generate_speed.py                 # context 128 and 1024
    .venv/bin/python benchmarks/generate_speed.py --contexts 128 --batch 8

The model is the quickstart's shape (4 layers, d_model 128, 4 heads, vocabulary 512) with random
weights and the given context length; a prompt of 1/8 of the context is continued until the context
is full, with the CLI's default sampling (temperature 0.8, top-k 50, a fixed seed). Both ways must
produce the same tokens; the benchmark checks that before it reports a number.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from orchestrator.generate import Sampling, generate_ids
from orchestrator.train.model import GPT


def measure(context: int, batch: int, repeats: int) -> tuple[float, float, int]:
    """(tokens/s without cache, tokens/s with cache, new tokens per row): best of `repeats`."""
    torch.manual_seed(0)
    model = GPT(vocab_size=512, context_length=context, d_model=128, n_layers=4, n_heads=4).eval()
    prompt_length = context // 8
    prompts = torch.randint(0, 512, (batch, prompt_length)).tolist()
    sampling = Sampling(max_new_tokens=context - prompt_length, temperature=0.8, top_k=50, seed=0)
    timings, outputs = {}, {}
    for use_cache in (False, True):
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            outputs[use_cache] = generate_ids(model, prompts, sampling, use_cache=use_cache)
            best = min(best, time.perf_counter() - started)
        timings[use_cache] = best
    if outputs[False] != outputs[True]:
        raise SystemExit(f"context {context}: the cache changed the sampled tokens")
    produced = batch * sampling.max_new_tokens
    return produced / timings[False], produced / timings[True], sampling.max_new_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contexts", type=int, nargs="+", default=[128, 1024])
    parser.add_argument("--batch", type=int, default=1, help="prompts sampled together")
    parser.add_argument("--repeats", type=int, default=2, help="best of N runs per way")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}")
    print(f"{'context':>8} {'new tokens':>11} {'no cache tok/s':>15} {'KV cache tok/s':>15} {'ratio':>7}")
    for context in args.contexts:
        before, after, new = measure(context, args.batch, args.repeats)
        print(f"{context:>8} {new:>11} {before:>15,.0f} {after:>15,.0f} {after / before:>6.1f}x")


if __name__ == "__main__":
    main()
