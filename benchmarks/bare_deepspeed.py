"""A bare DeepSpeed training loop: the baseline the orchestrator's overhead is measured against.

No Ray, no MLflow, no artifacts, no status file, and no import of the orchestrator: a GPT-2-style
decoder (pre-norm, SDPA attention, GELU MLP, tied head) of the given size, trained with torch AdamW,
warmup then cosine decay, on a uint16 token file split 80/20 into blocks of context + 1 tokens. It
logs the mean loss (one all-reduce) every ``log_interval`` steps and evaluates ``eval_batches`` micro
batches every ``eval_interval`` steps and at each epoch end, as a typical training script does.
Rank 0 writes the wall time of every logging step to ``--out`` (JSON).

    python -m torch.distributed.run --nproc_per_node 2 benchmarks/bare_deepspeed.py SETUP.json --out T.json

SETUP.json: {"tokens": path, "deepspeed": {...}, "model": {n_layers, n_heads, d_model, context_length,
vocab_size}, "lr", "betas", "eps", "weight_decay", "warmup", "min_lr", "steps", "log_interval",
"eval_interval", "eval_batches", "val_fraction", "seed"}
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.out = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.up, self.down = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.out(att.transpose(1, 2).reshape(b, t, d))
        return x + self.down(F.gelu(self.up(self.norm2(x))))


class Decoder(nn.Module):
    def __init__(self, n_layers, n_heads, d_model, context_length, vocab_size):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab_size, d_model), nn.Embedding(context_length, d_model)
        self.blocks = nn.Sequential(*[Block(d_model, n_heads) for _ in range(n_layers)])
        self.norm = nn.LayerNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight
        for name, p in self.named_parameters():
            if p.dim() >= 2:  # residual projections scaled down by depth, the rest N(0, 0.02)
                std = 0.02 / math.sqrt(2 * n_layers) if name.endswith(("out.weight", "down.weight")) else 0.02
                nn.init.normal_(p, std=std)
            elif "norm" not in name:
                nn.init.zeros_(p)

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        return self.lm_head(self.norm(self.blocks(x)))


def lr_factor(step: int, warmup: int, total: int, floor: float) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - 1 - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("setup")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    cfg = json.loads(Path(args.setup).read_text())
    import deepspeed

    deepspeed.init_distributed(dist_backend="gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(cfg["seed"])
    model = Decoder(**cfg["model"])
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg["weight_decay"]}, {"params": other, "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=cfg["lr"], betas=tuple(cfg["betas"]), eps=cfg["eps"])
    floor = cfg["min_lr"] / cfg["lr"]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg["warmup"], cfg["steps"], floor))
    engine, *_ = deepspeed.initialize(model=model, optimizer=opt, lr_scheduler=sched, config=cfg["deepspeed"])
    times = train(engine, cfg, rank, world)
    if rank == 0:
        n_params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
        Path(args.out).write_text(json.dumps({"times": times, "params": n_params}))
    dist.barrier()  # torn down together: left to the interpreter's exit, gloo sometimes aborted a rank
    dist.destroy_process_group()


def train(engine, cfg, rank: int, world: int) -> dict[int, float]:
    ctx = cfg["model"]["context_length"]
    tokens = np.memmap(cfg["tokens"], dtype=np.uint16, mode="r")
    blocks = np.random.default_rng(cfg["seed"]).permutation(len(tokens) // (ctx + 1))
    n_val = max(1, round(len(blocks) * cfg["val_fraction"]))
    val, train_blocks = blocks[:n_val], blocks[n_val:]
    micro = cfg["deepspeed"]["train_micro_batch_size_per_gpu"]
    accum = cfg["deepspeed"]["gradient_accumulation_steps"]
    per_epoch = len(train_blocks) // (micro * accum * world)

    def batch(ids):
        rows = np.stack([tokens[i * (ctx + 1) : (i + 1) * (ctx + 1)] for i in ids]).astype(np.int64)
        rows = torch.from_numpy(rows)
        return rows[:, :-1], rows[:, 1:]

    def loss_of(ids):
        x, y = batch(ids)
        logits = engine(x)
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1))

    times, running, step = {}, torch.zeros(2, dtype=torch.float64), 0
    engine.train()
    while step < cfg["steps"]:
        epoch = step // per_epoch
        order = np.random.default_rng([cfg["seed"], epoch]).permutation(train_blocks)[rank::world]
        for i in range((step % per_epoch) * accum, per_epoch * accum):
            loss = loss_of(order[i * micro : (i + 1) * micro])
            engine.backward(loss)
            engine.step()
            running += torch.tensor([loss.item(), 1.0], dtype=torch.float64)
            if (i + 1) % accum:
                continue
            step += 1
            epoch_end = step % per_epoch == 0
            if step % cfg["log_interval"] == 0 or epoch_end or step == cfg["steps"]:
                dist.all_reduce(running)
                running.zero_()
                if step % cfg["eval_interval"] == 0 or epoch_end or step == cfg["steps"]:
                    evaluate(loss_of, val[rank::world][: cfg["eval_batches"] * micro], micro, engine)
                times[step] = time.time()
            if step == cfg["steps"] or epoch_end:
                break
    return times


def evaluate(loss_of, ids, micro: int, engine) -> None:
    engine.eval()
    total = torch.zeros(2, dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, len(ids) - micro + 1, micro):
            total += torch.tensor([loss_of(ids[start : start + micro]).item(), 1.0], dtype=torch.float64)
    dist.all_reduce(total)
    engine.train()


if __name__ == "__main__":
    main()
