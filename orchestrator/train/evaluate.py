"""Validation: loss, perplexity and next-token accuracy, summed over every rank.

Sums stay on the engine's device until the one all-reduce at the end. Every rank runs the same number
of forward passes (ZeRO-3 gathers parameters collectively inside them): a rank whose shard is shorter
pads its last batches with rows that count for nothing, and every batch has the full micro batch size
(a compiled model sees one shape).
"""

from __future__ import annotations

import math

from orchestrator.track.events import MetricEvent


def compute_loss(engine, inputs, targets):
    """Mean next-token cross-entropy (in fp32 whatever the precision) and the logits."""
    from torch.nn import functional as F

    logits = engine(inputs)
    loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1))
    return loss, logits


def evaluation_ids(plan, dataset, world: int):
    """The fixed sample of periodic evaluations: ``eval_batches`` micro batches per rank, drawn once
    (seeded) from the whole validation split, so every evaluation estimates the whole split's loss
    on the same samples."""
    from orchestrator.data.cursor import evaluation_sample

    train = plan.spec.train
    return evaluation_sample(
        dataset.val_samples, train.eval_batches * train.micro_batch_size * world, plan.spec.data.seed
    )


def evaluate(plan, engine, dataset, device, step: int, ids) -> list[MetricEvent]:
    """Loss, perplexity and accuracy on ``ids`` (see ``evaluation_ids``), each rank a part."""
    loss, accuracy, _ = _over(plan, engine, dataset, device, ids)
    return [
        MetricEvent("val_loss", loss, step),
        MetricEvent("val_perplexity", perplexity(loss), step),
        MetricEvent("val_accuracy", accuracy, step),
    ]


def final_evaluation_ids(plan, dataset):
    """The final validation's sequences: every one of the split, or, when it holds more than
    ``train.final_eval_sequences``, a fixed seeded sample of that many spread over it (a corpus of
    gigabytes holds millions: the whole split would take longer than the training)."""
    from orchestrator.data.cursor import evaluation_sample

    most = plan.spec.train.final_eval_sequences or dataset.val_samples
    return evaluation_sample(dataset.val_samples, most, plan.spec.data.seed + 1)


def evaluate_final(plan, engine, dataset, device, ids) -> tuple[float, float, int]:
    """(mean loss, accuracy, tokens) over ``ids`` (see ``final_evaluation_ids``), each counted once."""
    return _over(plan, engine, dataset, device, ids)


def _over(plan, engine, dataset, device, ids) -> tuple[float, float, int]:
    import torch.distributed as dist

    micro, world = plan.spec.train.micro_batch_size, dist.get_world_size()
    n_batches = math.ceil(len(ids[0::world]) / micro)  # rank 0's part is never shorter than another's
    return validation_totals(engine, dataset, ids[dist.get_rank() :: world], micro, n_batches, device)


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
    end of ``blocks`` repeat its first sample (or sample 0) and are not real."""
    import torch

    from orchestrator.train.batches import to_device

    filler = blocks[0] if len(blocks) else 0
    for start in range(0, n_batches * micro, micro):
        chosen = list(blocks[start : start + micro])
        real = torch.tensor([True] * len(chosen) + [False] * (micro - len(chosen)), device=device)
        rows = dataset.rows("val", chosen + [filler] * (micro - len(chosen)))
        batch = to_device(torch.from_numpy(rows), device)
        yield batch[:, :-1], batch[:, 1:], real


def perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 700 else math.inf
