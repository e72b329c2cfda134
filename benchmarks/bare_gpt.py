"""A bare nanoGPT-style training loop: the GPU baseline the orchestrator's worker is measured against.

Plain PyTorch, one process, no DeepSpeed, no Ray, no MLflow and no import of the orchestrator: a
GPT-2-style decoder (pre-norm, SDPA attention, GELU MLP, tied head, the vocabulary padded to a
multiple of 64), fp32 weights under bf16 autocast, torch's fused AdamW on a GPU, gradient clipping,
``torch.compile`` if asked, batches pinned and copied with ``non_blocking``. The first ``--warmup``
optimizer steps (compilation among them) are left out of the timed window, which starts and ends
with a device synchronisation; nothing else synchronises. Writes tokens/s and the last loss to
``--out`` (JSON).

    python benchmarks/bare_gpt.py --tokens T.bin --layers 12 --heads 12 --d 768 --ctx 1024 \\
        --vocab 50257 --micro 32 --accum 4 --warmup 10 --steps 20 --compile --out bare.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.c_attn, self.c_proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.c_fc, self.mlp_proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))


class GPT(nn.Module):
    def __init__(self, layers: int, heads: int, d: int, ctx: int, vocab: int):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(ctx, d)
        self.h = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.wte.weight
        residual = ("c_proj.weight", "mlp_proj.weight")  # scaled down by depth, as GPT-2 does
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * layers) if name.endswith(residual) else 0.02)
            elif "ln" not in name:
                nn.init.zeros_(p)

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def padded(vocab: int, multiple: int = 64) -> int:
    return -(-vocab // multiple) * multiple


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("layers", "heads", "d", "ctx", "vocab", "micro", "accum", "warmup", "steps"):
        parser.add_argument(f"--{name}", type=int, required=True)
    parser.add_argument("--tokens", required=True, help="a plain uint16 token file")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--lr", type=float, default=6e-4)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    result = train(args)
    Path(args.out).write_text(json.dumps(result))
    print(json.dumps(result))


def train(args) -> dict:
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 leftovers (the loss) on tensor cores
        torch.backends.cudnn.allow_tf32 = True
    model = GPT(args.layers, args.heads, args.d, args.ctx, padded(args.vocab)).to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95), fused=cuda)
    step_model = torch.compile(model) if args.compile else model
    tokens = np.memmap(args.tokens, dtype=np.uint16, mode="r")
    rng = np.random.default_rng(args.seed)

    def batch():
        starts = rng.integers(0, len(tokens) - args.ctx - 1, args.micro)
        rows = torch.from_numpy(np.stack([tokens[s : s + args.ctx + 1] for s in starts]).astype(np.int64))
        rows = rows.pin_memory().to(device, non_blocking=True) if cuda else rows
        return rows[:, :-1], rows[:, 1:]

    started, loss = None, torch.zeros((), device=device)
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            _synchronize(device)
            started = time.perf_counter()
        for _ in range(args.accum):
            x, y = batch()
            with torch.autocast(device.type, dtype=torch.bfloat16):
                logits = step_model(x)
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1)) / args.accum
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    _synchronize(device)
    seconds = time.perf_counter() - started
    tokens_per_step = args.micro * args.accum * args.ctx
    return {
        "tokens_per_s": args.steps * tokens_per_step / seconds,
        "tokens_per_step": tokens_per_step,
        "window_steps": [args.warmup, args.warmup + args.steps],
        "seconds": seconds,
        "last_loss": float(loss) * args.accum,
        "padded_vocab": padded(args.vocab),
        "params": sum(p.numel() for p in {id(p): p for p in model.parameters()}.values()),
    }


def _synchronize(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


if __name__ == "__main__":
    main()
