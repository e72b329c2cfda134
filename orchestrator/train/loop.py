"""The training loop: micro batches -> optimizer steps -> logging, evaluation, early stopping and
checkpoints, all at step boundaries so a checkpoint always describes a clean point to resume from.

The data position is the number of micro batches of this rank's shard consumed in the current epoch;
each epoch's shard is a seeded permutation, so a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from orchestrator.track import startup
from orchestrator.track.events import MetricEvent
from orchestrator.train import resume
from orchestrator.train.early_stopping import EarlyStopping
from orchestrator.train.evaluate import batches, compute_loss, evaluate, perplexity
from orchestrator.train.state import TrainingState


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped before the update could poison the model."""


@dataclass
class Window:
    """What happened since the last logging step."""

    losses: list[float] = field(default_factory=list)
    tokens: int = 0
    start: float = field(default_factory=time.perf_counter)


@dataclass
class Session:
    plan: Any
    engine: Any
    dataset: Any
    device: Any
    rank: int
    world: int
    sinks: list
    stopper: EarlyStopping
    state: TrainingState = field(default_factory=TrainingState)
    window: Window = field(default_factory=Window)
    started: float = field(default_factory=time.perf_counter)
    start_step: int = 0
    stop_reason: str | None = None
    micro_losses: list[float] = field(default_factory=list)


def run(session: Session) -> None:
    """Train until the planned number of steps, or until early stopping says so."""
    session.start_step = session.state.step
    while session.stop_reason is None and session.state.step < session.plan.total_steps:
        train_epoch(session)


def micro_batches_per_epoch(plan) -> int:
    # Exactly steps_per_epoch optimizer steps per epoch, so accumulation never straddles epochs.
    return plan.steps_per_epoch * plan.spec.train.gradient_accumulation_steps


def train_epoch(s: Session) -> None:
    plan, state = s.plan, s.state
    micro = plan.spec.train.micro_batch_size
    shard = s.dataset.train_shard(state.epoch - 1, s.rank, s.world, plan.spec.train.seed)
    shard = shard[: micro_batches_per_epoch(plan) * micro]
    remaining = shard[state.micro_batches_done * micro :]
    s.engine.train()
    for inputs, targets in batches(s.dataset, remaining, micro, s.device):
        stepped, lr = train_micro_batch(s, inputs, targets)
        state.micro_batches_done += 1
        epoch_end = state.micro_batches_done >= micro_batches_per_epoch(plan)
        if stepped:
            after_step(s, lr, epoch_end)
        elif epoch_end:
            next_epoch(state)
        if s.stop_reason is not None or state.step >= plan.total_steps:
            return
    if state.micro_batches_done >= micro_batches_per_epoch(plan):
        next_epoch(state)


def next_epoch(state: TrainingState) -> None:
    state.epoch += 1
    state.micro_batches_done = 0


def train_micro_batch(s: Session, inputs, targets) -> tuple[bool, float]:
    """Forward, backward and (at an accumulation boundary) the optimizer step.

    Returns whether an optimizer step completed, and the learning rate it applied.
    """
    loss, _ = compute_loss(s.engine, inputs, targets)
    if _nonfinite_on_any_rank(loss):
        _handle_nonfinite(s)
        return False, 0.0
    s.engine.backward(loss)
    lr = s.engine.get_lr()[0]  # the rate this optimizer step applies
    s.engine.step()
    s.micro_losses.append(loss.item())
    s.window.tokens += inputs.numel()
    if len(s.micro_losses) < s.plan.spec.train.gradient_accumulation_steps:
        return False, lr
    s.state.step += 1
    s.window.losses.append(sum(s.micro_losses) / len(s.micro_losses))
    s.micro_losses = []
    return True, lr


def _nonfinite_on_any_rank(loss) -> bool:
    """All ranks must agree, or one would step while another skips and the collectives hang."""
    import torch
    import torch.distributed as dist

    flag = torch.tensor([0.0 if torch.isfinite(loss.detach()).item() else 1.0])
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return flag.item() > 0


def _handle_nonfinite(s: Session) -> None:
    spec, state = s.plan.spec.train, s.state
    where = f"at step {state.step + 1} (epoch {state.epoch}, micro batch {state.micro_batches_done + 1})"
    if spec.nan_policy == "skip" and state.skipped_batches < spec.max_skipped_steps:
        state.skipped_batches += 1
        if s.rank == 0:
            print(
                f"[train] non-finite loss {where}: batch skipped "
                f"({state.skipped_batches}/{spec.max_skipped_steps} allowed)",
                flush=True,
            )
        return
    reason = (
        f"the loss became NaN/inf {where}"
        + (f" after {state.skipped_batches} skipped batches" if spec.nan_policy == "skip" else "")
        + "; no update was applied, so the latest checkpoint is clean. Lower optimizer.lr, keep "
        "optimizer.grad_clip on, prefer bf16 over fp16, or set train.nan_policy: skip"
    )
    raise NonFiniteLossError(reason)


def after_step(s: Session, lr: float, epoch_end: bool) -> None:
    """Log, evaluate, decide on early stopping, then checkpoint: in that order."""
    plan, state, spec = s.plan, s.state, s.plan.spec.train
    if state.step == s.start_step + 1:
        _first_step_done(s.rank)
    last = state.step >= plan.total_steps
    events: list[MetricEvent] = []
    if state.step % spec.log_interval == 0 or last or epoch_end:
        events = train_events(s, lr)
    if state.step % spec.eval_interval == 0 or last or epoch_end:
        events += _evaluate_and_decide(s)
    if epoch_end:
        next_epoch(state)
    if events:
        for sink in s.sinks:
            sink.write(events)
        if s.rank == 0:
            print_progress(s, events)
    interval = plan.spec.checkpoint.interval
    if last or s.stop_reason is not None or (interval and state.step % interval == 0):
        save_checkpoint(s)


def _first_step_done(rank: int) -> None:
    startup.mark("first_step")
    if rank == 0:
        print(f"[train] start-up: {startup.describe(startup.startup_marks())}", flush=True)


def _evaluate_and_decide(s: Session) -> list[MetricEvent]:
    events = evaluate(s.plan, s.engine, s.dataset, s.device, s.state.step)
    s.state.last_eval = {e.name: e.value for e in events}
    value = s.state.last_eval[s.stopper.metric]
    if s.stopper.update(value, s.state.step):
        s.stop_reason = s.stopper.reason
    return events


def save_checkpoint(s: Session) -> None:
    s.state.early_stopping = s.stopper.state_dict()
    resume.save(s.engine, s.plan, s.state, s.stopper.metric, s.stopper.higher_is_better)


def train_events(s: Session, lr: float) -> list[MetricEvent]:
    """Mean training loss of the window since the last log, averaged over all ranks."""
    import torch
    import torch.distributed as dist

    window, step = s.window, s.state.step
    totals = torch.tensor([sum(window.losses), len(window.losses), window.tokens], dtype=torch.float64)
    dist.all_reduce(totals)
    train_loss = totals[0].item() / totals[1].item()
    elapsed = time.perf_counter() - window.start
    events = [
        MetricEvent("train_loss", train_loss, step),
        MetricEvent("train_perplexity", perplexity(train_loss), step),
        MetricEvent("learning_rate", lr, step),
        MetricEvent("epoch", float(s.state.epoch), step),
        MetricEvent("tokens_per_second", totals[2].item() / max(elapsed, 1e-9), step),
    ]
    grad_norm = s.engine.get_global_grad_norm()
    if grad_norm is not None and math.isfinite(float(grad_norm)):
        events.append(MetricEvent("grad_norm", float(grad_norm), step))
    if s.plan.spec.train.nan_policy == "skip":
        events.append(MetricEvent("skipped_batches", float(s.state.skipped_batches), step))
    s.window = Window()
    return events


def print_progress(s: Session, events: list[MetricEvent]) -> None:
    values = {e.name: e.value for e in events}
    plan, step = s.plan, s.state.step
    done = time.perf_counter() - s.started
    eta = done / max(1, step - s.start_step) * (plan.total_steps - step)
    line = f"[train] step {step}/{plan.total_steps} epoch {int(values.get('epoch', s.state.epoch))}"
    if "train_loss" in values:
        line += (
            f" loss {values['train_loss']:.4f} lr {values['learning_rate']:.2e} "
            f"{values['tokens_per_second']:,.0f} tok/s"
        )
    if "val_loss" in values:
        line += f" | val loss {values['val_loss']:.4f} acc {values['val_accuracy']:.3f}"
    print(f"{line} | ETA {_duration(eta)}", flush=True)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
