"""The worker entry: the same function on every launcher.

``train_worker(plan)`` runs on each rank after the launcher has set up ``torch.distributed``
(Ray Train does; so does ``torchrun``). It builds the GPT, this rank's data shard and the DeepSpeed
engine, trains, evaluates, and on rank 0 sends metric events to the sinks.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from orchestrator.data.dataset import TokenDataset
from orchestrator.plan import Plan
from orchestrator.track.events import MetricEvent
from orchestrator.track.status import RunStatusFile


@dataclass
class LoopState:
    step: int = 0
    epoch: int = 1
    window_losses: list[float] = field(default_factory=list)
    window_tokens: int = 0
    window_start: float = field(default_factory=time.perf_counter)
    started: float = field(default_factory=time.perf_counter)
    is_rank0: bool = False


def train_worker(plan: Plan) -> None:
    import torch.distributed as dist

    engine, dataset, device = _setup(plan)
    rank, world = dist.get_rank(), dist.get_world_size()
    sinks = _sinks(plan) if rank == 0 else []
    sinks.append(RunStatusFile(plan.checkpoint_dir, plan.total_steps, rank))  # every rank: heartbeats
    state = LoopState(is_rank0=rank == 0)
    _announce(plan, rank)
    try:
        while state.step < plan.total_steps:
            shard = dataset.train_shard(state.epoch - 1, rank, world, plan.spec.train.seed)
            _train_epoch(plan, engine, dataset, shard, device, state, sinks)
            state.epoch += 1
        engine.save_checkpoint(plan.checkpoint_dir, tag=f"step-{state.step}")
        dist.barrier()
    finally:
        for sink in sinks:
            sink.close()
    if rank == 0:
        elapsed = time.perf_counter() - state.started
        print(f"[train] done: {state.step} steps in {elapsed:.1f}s", flush=True)


def _setup(plan: Plan):
    import deepspeed
    import torch

    from orchestrator.train.model import GPT
    from orchestrator.train.schedule import WarmupCosine

    spec = plan.spec
    deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
    torch.manual_seed(spec.train.seed)  # identical initial weights on every rank
    m = spec.model
    model = GPT(m.vocab_size, m.context_length, m.d_model, m.n_layers, m.n_heads, m.dropout)
    optimizer = torch.optim.AdamW(
        _param_groups(model, spec.optimizer.weight_decay),
        lr=spec.optimizer.lr,
        betas=tuple(spec.optimizer.betas),
        eps=spec.optimizer.eps,
    )
    factor = WarmupCosine(
        spec.schedule.warmup_steps, plan.total_steps, spec.schedule.min_lr / spec.optimizer.lr
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=plan.deepspeed_config
    )
    dataset = TokenDataset(
        plan.data.tokens_path, m.context_length, spec.data.validation_fraction, spec.data.seed
    )
    return engine, dataset, engine.device


def _param_groups(model, weight_decay: float) -> list[dict]:
    """Decay matrices (and the tied embedding); never biases or layer-norm gains."""
    params = {id(p): p for p in model.parameters() if p.requires_grad}.values()
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def _sinks(plan: Plan) -> list:
    from orchestrator.track.live import LiveArtifacts
    from orchestrator.track.mlflow_sink import MlflowSink

    return [MlflowSink(plan.tracking_uri, plan.run_id), LiveArtifacts(plan.checkpoint_dir)]


def _announce(plan: Plan, rank: int) -> None:
    if rank == 0:
        print(
            f"[train] {plan.world_size} workers, global batch {plan.global_batch_size} sequences "
            f"({plan.tokens_per_step} tokens/step), {plan.steps_per_epoch} steps/epoch, "
            f"{plan.total_steps} steps in total",
            flush=True,
        )


def _batches(dataset: TokenDataset, blocks, micro: int, device):
    import numpy as np
    import torch

    for start in range(0, len(blocks) - micro + 1, micro):
        rows = np.stack([dataset.block_tokens(i) for i in blocks[start : start + micro]])
        batch = torch.from_numpy(rows).to(device)
        yield batch[:, :-1], batch[:, 1:]


def _loss(engine, inputs, targets):
    from torch.nn import functional as F

    logits = engine(inputs)
    loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1))
    return loss, logits


def _train_epoch(plan, engine, dataset, shard, device, state: LoopState, sinks) -> None:
    spec = plan.spec.train
    accum = spec.gradient_accumulation_steps
    engine.train()
    micro_losses: list[float] = []
    # Exactly steps_per_epoch optimizer steps per epoch, so accumulation never straddles epochs.
    shard = shard[: plan.steps_per_epoch * accum * spec.micro_batch_size]
    for inputs, targets in _batches(dataset, shard, spec.micro_batch_size, device):
        loss, _ = _loss(engine, inputs, targets)
        engine.backward(loss)
        lr = engine.get_lr()[0]  # the rate this optimizer step applies
        engine.step()
        micro_losses.append(loss.item())
        state.window_tokens += inputs.numel()
        if len(micro_losses) < accum:
            continue
        state.step += 1
        state.window_losses.append(sum(micro_losses) / accum)
        micro_losses = []
        _after_step(plan, engine, dataset, device, state, sinks, lr)
        if state.step >= plan.total_steps:
            return


def _after_step(plan, engine, dataset, device, state: LoopState, sinks, lr: float) -> None:
    spec = plan.spec.train
    last = state.step == plan.total_steps
    if state.step % spec.log_interval and not last:
        return
    events = _train_events(engine, state, lr)
    if state.step % spec.eval_interval == 0 or last:
        events += _evaluate(plan, engine, dataset, device, state.step)
    for sink in sinks:
        sink.write(events)
    if state.is_rank0:
        _print_progress(plan, state, events)


def _train_events(engine, state: LoopState, lr: float) -> list[MetricEvent]:
    """Mean training loss of the window since the last log, averaged over all ranks."""
    import torch
    import torch.distributed as dist

    totals = torch.tensor(
        [sum(state.window_losses), len(state.window_losses), state.window_tokens],
        dtype=torch.float64,
    )
    dist.all_reduce(totals)
    train_loss = totals[0].item() / totals[1].item()
    elapsed = time.perf_counter() - state.window_start
    events = [
        MetricEvent("train_loss", train_loss, state.step),
        MetricEvent("train_perplexity", _perplexity(train_loss), state.step),
        MetricEvent("learning_rate", lr, state.step),
        MetricEvent("epoch", float(state.epoch), state.step),
        MetricEvent("tokens_per_second", totals[2].item() / max(elapsed, 1e-9), state.step),
    ]
    grad_norm = engine.get_global_grad_norm()
    if grad_norm is not None and math.isfinite(float(grad_norm)):
        events.append(MetricEvent("grad_norm", float(grad_norm), state.step))
    state.window_losses, state.window_tokens = [], 0
    state.window_start = time.perf_counter()
    return events


def _evaluate(plan, engine, dataset, device, step: int) -> list[MetricEvent]:
    """Loss, perplexity and next-token accuracy on the validation split, summed over ranks.

    Every rank runs the same number of batches (ZeRO-3 gathers parameters collectively).
    """
    import torch
    import torch.distributed as dist

    rank, world = dist.get_rank(), dist.get_world_size()
    micro = plan.spec.train.micro_batch_size
    blocks = dataset.val_shard(rank, world)[: plan.spec.train.eval_batches * micro]
    totals = torch.zeros(3, dtype=torch.float64)  # summed loss, correct tokens, tokens
    engine.eval()
    with torch.no_grad():
        for inputs, targets in _batches(dataset, blocks, min(micro, len(blocks)), device):
            loss, logits = _loss(engine, inputs, targets)
            totals[0] += loss.item() * targets.numel()
            totals[1] += (logits.argmax(-1) == targets).sum().item()
            totals[2] += targets.numel()
    engine.train()
    dist.all_reduce(totals)
    val_loss = totals[0].item() / totals[2].item()
    return [
        MetricEvent("val_loss", val_loss, step),
        MetricEvent("val_perplexity", _perplexity(val_loss), step),
        MetricEvent("val_accuracy", totals[1].item() / totals[2].item(), step),
    ]


def _perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 700 else math.inf


def _print_progress(plan, state: LoopState, events: list[MetricEvent]) -> None:
    values = {e.name: e.value for e in events}
    done = time.perf_counter() - state.started
    eta = done / state.step * (plan.total_steps - state.step)
    line = (
        f"[train] step {state.step}/{plan.total_steps} epoch {state.epoch} "
        f"loss {values['train_loss']:.4f} lr {values['learning_rate']:.2e} "
        f"{values['tokens_per_second']:,.0f} tok/s"
    )
    if "val_loss" in values:
        line += f" | val loss {values['val_loss']:.4f} acc {values['val_accuracy']:.3f}"
    print(f"{line} | ETA {_duration(eta)}", flush=True)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
