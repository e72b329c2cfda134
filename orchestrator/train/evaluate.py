"""Validation: loss, perplexity and next-token accuracy, summed over every rank."""

from __future__ import annotations

import math

from orchestrator.track.events import MetricEvent


def batches(dataset, blocks, micro: int, device):
    """(inputs, targets) micro batches of whole blocks, in order."""
    import numpy as np
    import torch

    for start in range(0, len(blocks) - micro + 1, micro):
        rows = np.stack([dataset.block_tokens(i) for i in blocks[start : start + micro]])
        batch = torch.from_numpy(rows).to(device)
        yield batch[:, :-1], batch[:, 1:]


def compute_loss(engine, inputs, targets):
    """Mean next-token cross-entropy (in fp32 whatever the precision) and the logits."""
    from torch.nn import functional as F

    logits = engine(inputs)
    loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1))
    return loss, logits


def evaluate(plan, engine, dataset, device, step: int) -> list[MetricEvent]:
    """Every rank runs the same number of batches (ZeRO-3 gathers parameters collectively)."""
    import torch
    import torch.distributed as dist

    rank, world = dist.get_rank(), dist.get_world_size()
    micro = plan.spec.train.micro_batch_size
    blocks = dataset.val_shard(rank, world)[: plan.spec.train.eval_batches * micro]
    totals = torch.zeros(3, dtype=torch.float64)  # summed loss, correct tokens, tokens
    engine.eval()
    with torch.no_grad():
        for inputs, targets in batches(dataset, blocks, min(micro, len(blocks)), device):
            loss, logits = compute_loss(engine, inputs, targets)
            totals[0] += loss.item() * targets.numel()
            totals[1] += (logits.argmax(-1) == targets).sum().item()
            totals[2] += targets.numel()
    engine.train()
    dist.all_reduce(totals)
    val_loss = totals[0].item() / totals[2].item()
    return [
        MetricEvent("val_loss", val_loss, step),
        MetricEvent("val_perplexity", perplexity(val_loss), step),
        MetricEvent("val_accuracy", totals[1].item() / totals[2].item(), step),
    ]


def perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 700 else math.inf
