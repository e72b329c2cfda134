"""Validation: loss, perplexity and next-token accuracy, summed over every rank.

Sums stay on the engine's device until the one all-reduce at the end. Every rank runs the same number
of forward passes (ZeRO-3 gathers parameters collectively inside them): a rank whose shard is shorter
pads its last batches with rows that count for nothing, and every batch has the full micro batch size
(a compiled model sees one shape).
"""

from __future__ import annotations

import math

from orchestrator.track.events import MetricEvent


def batches(dataset, blocks, micro: int, device):
    """(inputs, targets) micro batches of whole blocks, in order."""
    import numpy as np

    for start in range(0, len(blocks) - micro + 1, micro):
        rows = np.stack([dataset.block_tokens(i) for i in blocks[start : start + micro]])
        batch = to_device(rows, device)
        yield batch[:, :-1], batch[:, 1:]


def to_device(rows, device):
    """A host array on ``device``; to a GPU through pinned memory, without waiting for the copy."""
    import torch

    batch = torch.from_numpy(rows)
    if getattr(device, "type", str(device)) == "cuda":
        return batch.pin_memory().to(device, non_blocking=True)
    return batch.to(device)


def compute_loss(engine, inputs, targets):
    """Mean next-token cross-entropy (in fp32 whatever the precision) and the logits."""
    from torch.nn import functional as F

    logits = engine(inputs)
    loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1))
    return loss, logits


def evaluate(plan, engine, dataset, device, step: int) -> list[MetricEvent]:
    """``train.eval_batches`` micro batches of each rank's validation shard."""
    import torch.distributed as dist

    micro, world = plan.spec.train.micro_batch_size, dist.get_world_size()
    wanted = plan.spec.train.eval_batches * micro
    longest = len(dataset.val_shard(0, world))  # rank 0's shard is never shorter than another's
    n_batches = math.ceil(min(wanted, longest) / micro)
    blocks = dataset.val_shard(dist.get_rank(), world)[:wanted]
    loss, accuracy, _ = validation_totals(engine, dataset, blocks, micro, n_batches, device)
    return [
        MetricEvent("val_loss", loss, step),
        MetricEvent("val_perplexity", perplexity(loss), step),
        MetricEvent("val_accuracy", accuracy, step),
    ]


def evaluate_whole_split(plan, engine, dataset, device) -> tuple[float, float, int]:
    """(mean loss, accuracy, tokens) over every validation sequence, each counted once."""
    import torch.distributed as dist

    micro, world = plan.spec.train.micro_batch_size, dist.get_world_size()
    n_batches = math.ceil(len(dataset.val_shard(0, world)) / micro)
    blocks = dataset.val_shard(dist.get_rank(), world)
    return validation_totals(engine, dataset, blocks, micro, n_batches, device)


def validation_totals(
    engine, dataset, blocks, micro: int, n_batches: int, device
) -> tuple[float, float, int]:
    """(mean loss, accuracy, tokens) over ``blocks`` on every rank, in ``n_batches`` forward passes."""
    import torch
    import torch.distributed as dist
    from torch.nn import functional as F

    totals = torch.zeros(3, dtype=torch.float64, device=device)  # summed loss, correct tokens, tokens
    engine.eval()
    with torch.no_grad():
        for inputs, targets, real in _padded_batches(dataset, blocks, micro, n_batches, device):
            logits = engine(inputs)
            losses = F.cross_entropy(
                logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="none"
            )
            counted = real[:, None].expand_as(targets).reshape(-1)
            totals[0] += torch.where(counted, losses, 0.0).sum(dtype=torch.float64)
            totals[1] += ((logits.argmax(-1).reshape(-1) == targets.reshape(-1)) & counted).sum()
            totals[2] += counted.sum()
    engine.train()
    dist.all_reduce(totals)
    loss_sum, correct, tokens = totals.tolist()
    return loss_sum / max(tokens, 1), correct / max(tokens, 1), int(tokens)


def _padded_batches(dataset, blocks, micro: int, n_batches: int, device):
    """(inputs, targets, real rows) for exactly ``n_batches`` batches of ``micro`` rows; rows past the
    end of ``blocks`` repeat its first block (or block 0) and are not real."""
    import numpy as np
    import torch

    filler = blocks[0] if len(blocks) else dataset.val_blocks[0]
    for start in range(0, n_batches * micro, micro):
        chosen = list(blocks[start : start + micro])
        real = torch.tensor([True] * len(chosen) + [False] * (micro - len(chosen)), device=device)
        rows = np.stack([dataset.block_tokens(i) for i in chosen + [filler] * (micro - len(chosen))])
        batch = to_device(rows, device)
        yield batch[:, :-1], batch[:, 1:], real


def perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 700 else math.inf
