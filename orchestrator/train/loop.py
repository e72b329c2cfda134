"""The training loop: micro batches -> optimizer steps -> logging, evaluation, early stopping and
checkpoints, all at step boundaries so a checkpoint always describes a clean point to resume from.

The data position is the number of micro batches of this rank's shard consumed in the current epoch;
each epoch's shard is a seeded permutation, so a resumed run continues exactly where it stopped.

The step itself has no collective and no host synchronisation of its own: losses are summed on the
engine's device and read once per logging step, in the one all-reduce that averages them over the
ranks. A NaN/inf loss makes that sum non-finite, so with ``nan_policy: stop`` it is found there (or
before a checkpoint between logging steps) and the run stops before anything is saved; only
``nan_policy: skip`` checks every micro batch on every rank, because skipping must be agreed on
before the backward pass.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orchestrator.errors import OrchestratorError
from orchestrator.text import format_duration
from orchestrator.track import startup
from orchestrator.track.events import MetricEvent, MetricSink
from orchestrator.train import resume
from orchestrator.train.early_stopping import EarlyStopping
from orchestrator.train.evaluate import batches, compute_loss, evaluate, evaluate_whole_split, perplexity
from orchestrator.train.state import TrainingState

if TYPE_CHECKING:
    import torch
    from deepspeed import DeepSpeedEngine

    from orchestrator.data.dataset import TokenDataset
    from orchestrator.plan import Plan


class NonFiniteLossError(OrchestratorError):
    """The loss became NaN or infinite; training stopped before a checkpoint could save the damage."""


@dataclass
class Window:
    """What happened since the last logging step (``first_step``: the first step it covers)."""

    first_step: int = 1
    loss_sum: Any = 0.0  # a tensor on the engine's device once a micro batch was added
    micro_batches: int = 0
    tokens: int = 0
    start: float = field(default_factory=time.perf_counter)
    paused_s: float = 0.0  # spent evaluating and checkpointing: not training time

    def add(self, loss, tokens: int) -> None:
        self.loss_sum = self.loss_sum + loss.detach().double()
        self.micro_batches += 1
        self.tokens += tokens


@dataclass(kw_only=True)
class Session:
    """One rank's training: what it trains with, where it is, and where its metrics go."""

    plan: Plan
    engine: DeepSpeedEngine
    dataset: TokenDataset
    device: torch.device
    rank: int
    world: int
    stopper: EarlyStopping
    sinks: list[MetricSink] = field(default_factory=list)
    state: TrainingState = field(default_factory=TrainingState)
    window: Window = field(default_factory=Window)
    started: float = field(default_factory=time.perf_counter)
    start_step: int = 0
    stop_reason: str | None = None
    micro_in_step: int = 0  # micro batches of the optimizer step under way


def run(session: Session) -> None:
    """Train until the planned number of steps, or until early stopping says so; then validate on
    the whole validation split."""
    session.start_step = session.state.step
    session.window = Window(first_step=session.state.step + 1)
    while session.stop_reason is None and session.state.step < session.plan.total_steps:
        train_epoch(session)
    final_validation(session)


def final_validation(s: Session) -> None:
    """Periodic evaluations see ``eval_batches`` micro batches per rank; the final one sees every
    validation sequence once: ``final_val_loss``, ``final_val_perplexity``, ``final_val_accuracy``
    and ``final_eval_seconds``, at the last step."""
    started = time.perf_counter()
    loss, accuracy, tokens = evaluate_whole_split(s.plan, s.engine, s.dataset, s.device)
    took, step = time.perf_counter() - started, s.state.step
    _write(
        s,
        [
            MetricEvent("final_val_loss", loss, step),
            MetricEvent("final_val_perplexity", perplexity(loss), step),
            MetricEvent("final_val_accuracy", accuracy, step),
            MetricEvent("final_eval_seconds", took, step),
        ],
    )
    if s.rank == 0:
        print(
            f"[train] final validation on the whole split ({len(s.dataset.val_blocks)} sequences, "
            f"{tokens:,} tokens): loss {loss:.4f}, perplexity {perplexity(loss):.2f}, accuracy "
            f"{accuracy:.3f} in {took:.1f}s",
            flush=True,
        )


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
    if s.plan.spec.train.nan_policy == "skip" and _nonfinite_on_any_rank(loss):
        _skip_or_stop(s)
        return False, 0.0
    s.engine.backward(loss)
    lr = s.engine.get_lr()[0]  # the rate this optimizer step applies
    s.engine.step()
    s.window.add(loss, inputs.numel())
    s.micro_in_step += 1
    if s.micro_in_step < s.plan.spec.train.gradient_accumulation_steps:
        return False, lr
    s.state.step += 1
    s.micro_in_step = 0
    return True, lr


def _nonfinite_on_any_rank(loss) -> bool:
    """All ranks must agree, or one would step while another skips and the collectives hang."""
    import torch
    import torch.distributed as dist

    flag = (~torch.isfinite(loss.detach())).float().reshape(1)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return flag.item() > 0


def _skip_or_stop(s: Session) -> None:
    spec, state = s.plan.spec.train, s.state
    where = f"at step {state.step + 1} (epoch {state.epoch}, micro batch {state.micro_batches_done + 1})"
    if state.skipped_batches < spec.max_skipped_steps:
        state.skipped_batches += 1
        if s.rank == 0:
            print(
                f"[train] non-finite loss {where}: batch skipped "
                f"({state.skipped_batches}/{spec.max_skipped_steps} allowed)",
                flush=True,
            )
        return
    raise NonFiniteLossError(
        f"the loss became NaN/inf {where} after {state.skipped_batches} skipped batches; no update was "
        f"applied, so the latest checkpoint is clean. {NONFINITE_HINT}"
    )


NONFINITE_HINT = (
    "Lower optimizer.lr, keep optimizer.grad_clip on, prefer bf16 over fp16, or set train.nan_policy: skip"
)


def _stop_nonfinite(window: Window, step: int) -> None:
    where = (
        f"at step {step}" if window.first_step >= step else f"between steps {window.first_step} and {step}"
    )
    raise NonFiniteLossError(
        f"the loss became NaN/inf {where}; training stopped before any checkpoint could save it, so the "
        f"latest checkpoint is clean. {NONFINITE_HINT}"
    )


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
        events += _paused(s, "eval_seconds", lambda: _evaluate_and_decide(s))
    if epoch_end:
        next_epoch(state)
    if events:
        _write(s, events)
        if s.rank == 0:
            print_progress(s, events)
    interval = plan.spec.checkpoint.interval
    if last or s.stop_reason is not None or (interval and state.step % interval == 0):
        if not events:  # between logging steps: the losses since the last log must be finite first
            _window_totals(s)
        _write(s, _paused(s, "checkpoint_seconds", lambda: save_checkpoint(s)))


def _paused(s: Session, metric: str, work) -> list[MetricEvent]:
    """Run ``work`` (evaluating, checkpointing) outside the training throughput: its time is taken out
    of the window's and reported as ``metric``. Returns its events and that one."""
    started = time.perf_counter()
    events = work() or []
    took = time.perf_counter() - started
    s.window.paused_s += took
    return [*events, MetricEvent(metric, took, s.state.step)]


def _write(s: Session, events: list[MetricEvent]) -> None:
    for sink in s.sinks:
        sink.write(events)


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


def _window_totals(s: Session) -> tuple[float, float, float]:
    """(summed loss, micro batches, tokens) of the window over all ranks: one all-reduce and one read
    from the device. Stops the run if a loss was NaN/inf (the sum is then not finite)."""
    import torch
    import torch.distributed as dist

    w = s.window
    loss = torch.as_tensor(w.loss_sum, dtype=torch.float64, device=s.device).reshape(1)
    counts = torch.tensor([w.micro_batches, w.tokens], dtype=torch.float64, device=s.device)
    totals = torch.cat([loss, counts])
    dist.all_reduce(totals)
    loss_sum, micro_batches, tokens = totals.tolist()
    if not math.isfinite(loss_sum):
        _stop_nonfinite(w, s.state.step)
    return loss_sum, micro_batches, tokens


def train_events(s: Session, lr: float) -> list[MetricEvent]:
    """Mean training loss of the window since the last log, averaged over all ranks."""
    window, step = s.window, s.state.step
    loss_sum, micro_batches, tokens = _window_totals(s)
    train_loss = loss_sum / max(micro_batches, 1)
    training_s = time.perf_counter() - window.start - window.paused_s  # no evaluation or checkpoint
    events = [
        MetricEvent("train_loss", train_loss, step),
        MetricEvent("train_perplexity", perplexity(train_loss), step),
        MetricEvent("learning_rate", lr, step),
        MetricEvent("epoch", float(s.state.epoch), step),
        MetricEvent("tokens_per_second", tokens / max(training_s, 1e-9), step),
    ]
    grad_norm = s.engine.get_global_grad_norm()
    if grad_norm is not None and math.isfinite(float(grad_norm)):
        events.append(MetricEvent("grad_norm", float(grad_norm), step))
    if s.plan.spec.train.nan_policy == "skip":
        events.append(MetricEvent("skipped_batches", float(s.state.skipped_batches), step))
    s.window = Window(first_step=step + 1)
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
        line += f" ({values['eval_seconds']:.2f} s)" if "eval_seconds" in values else ""
    print(f"{line} | ETA {format_duration(eta)}", flush=True)
