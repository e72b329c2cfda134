"""The training loop, one optimizer step at a time (``train_step``, top to bottom): this rank's micro
batches of the next global batch, the optimizer step at DeepSpeed's accumulation boundary, then the
hooks in order: log, evaluate, decide on early stopping, checkpoint. Everything happens at step
boundaries, so a checkpoint always describes a clean point to resume from.

The data position is the ``DataCursor`` (epoch, samples of it consumed by all ranks together); the
sample order depends on the seed and the epoch only, so a resumed run, on any number of workers with
the same global batch, continues exactly where it stopped.

The step has no collective and no host synchronisation of its own: losses are summed on the engine's
device and read once per logging step, in the one all-reduce that averages them over the ranks. A
NaN/inf loss makes that sum non-finite, so with ``nan_policy: stop`` it is found there (or before a
checkpoint between logging steps) and the run stops before anything is saved; only ``nan_policy:
skip`` checks every micro batch on every rank, because skipping must be agreed on before the backward
pass.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orchestrator.data.cursor import DataCursor
from orchestrator.errors import OrchestratorError
from orchestrator.text import format_duration
from orchestrator.track import startup
from orchestrator.track.events import MetricEvent
from orchestrator.train.batches import to_device
from orchestrator.train.early_stopping import EarlyStopping
from orchestrator.train.evaluate import (
    compute_loss,
    evaluate,
    evaluate_final,
    final_evaluation_ids,
    perplexity,
)
from orchestrator.train.state import TrainingState

if TYPE_CHECKING:
    import torch
    from deepspeed import DeepSpeedEngine

    from orchestrator.data.dataset import TokenDataset
    from orchestrator.plan import Plan
    from orchestrator.track.pipeline import MetricsPipeline
    from orchestrator.train.batches import BatchFeeder
    from orchestrator.train.checkpoint_manager import CheckpointManager


class NonFiniteLossError(OrchestratorError):
    """The loss became NaN or infinite; training stopped before a checkpoint could save the damage."""


@dataclass
class Window:
    """What happened since the last logging step (``first_step``: the first step it covers)."""

    first_step: int = 1
    loss_sum: Any = 0.0  # a tensor on the engine's device once a micro batch was added
    micro_batches: int = 0
    tokens: int = 0
    steps: int = 0
    data_s: float = 0.0  # waited for batches
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
    cursor: DataCursor
    feeder: BatchFeeder
    checkpoints: CheckpointManager
    eval_ids: Any
    sinks: MetricsPipeline | None = None
    peak_tflops: float | None = None  # one device's peak at the run's precision: mfu (None: no mfu)
    state: TrainingState = field(default_factory=TrainingState)
    window: Window = field(default_factory=Window)
    started: float = field(default_factory=time.perf_counter)
    start_step: int = 0
    stop_reason: str | None = None

    def state_dicts(self) -> dict[str, Any]:
        """Everything of the orchestrator's that a checkpoint holds (DeepSpeed saves its own)."""
        return {
            "training": self.state.state_dict(),
            "cursor": self.cursor.state_dict(),
            "early_stopping": self.stopper.state_dict(),
        }

    def load_state_dicts(self, saved: dict[str, Any]) -> None:
        self.state.load_state_dict(saved["training"])
        self.cursor.load_state_dict(saved["cursor"])
        self.stopper.load_state_dict(saved["early_stopping"])


def run(session: Session) -> None:
    """Train until the planned number of steps, or until early stopping says so; wait for the last
    checkpoint's upload; then validate on the whole validation split."""
    session.start_step = session.state.step
    session.window = Window(first_step=session.state.step + 1)
    while session.stop_reason is None and session.state.step < session.plan.total_steps:
        train_step(session)
    session.checkpoints.wait()
    _report_upload(session)
    final_validation(session)


def train_step(s: Session) -> None:
    """One optimizer step: forward and backward over this rank's micro batches, DeepSpeed's step at
    the accumulation boundary, the cursor past the global batch, then the hooks."""
    accumulation = s.plan.spec.train.gradient_accumulation_steps
    lr = s.engine.get_lr()[0]  # the rate this optimizer step applies
    for _ in range(accumulation):
        batch, _ids, waited = s.feeder.next()
        s.window.data_s += waited
        batch = to_device(batch, s.device)
        inputs, targets = batch[:, :-1], batch[:, 1:]
        loss, _ = compute_loss(s.engine, inputs, targets)
        if s.plan.spec.train.nan_policy == "skip" and _nonfinite_on_any_rank(loss):
            _skip_or_stop(s)  # (accumulation is 1 with skip: the whole step is dropped)
            s.cursor.advance(s.feeder.feed.global_batch)
            return
        s.engine.backward(loss)
        s.engine.step()  # DeepSpeed applies the update at the accumulation boundary
        s.window.add(loss, inputs.numel())
    epoch = s.cursor.epoch  # the epoch this step belongs to, before the cursor may move past it
    epoch_end = s.cursor.advance(s.feeder.feed.global_batch)
    s.state.step += 1
    s.window.steps += 1
    after_step(s, lr, epoch, epoch_end)


def final_validation(s: Session) -> None:
    """Periodic evaluations see a fixed sample of the validation split; the final one sees every
    validation sequence once (or a seeded sample of ``train.final_eval_sequences`` of a larger
    split): ``final_val_loss``, ``final_val_perplexity``, ``final_val_accuracy`` and
    ``final_eval_seconds``, at the last step."""
    started = time.perf_counter()
    ids = final_evaluation_ids(s.plan, s.dataset)
    loss, accuracy, tokens = evaluate_final(s.plan, s.engine, s.dataset, s.device, ids)
    took, step = time.perf_counter() - started, s.state.step
    _write(
        s,
        [
            MetricEvent("final_val_loss", loss, step),
            MetricEvent("final_val_perplexity", perplexity(loss), step),
            MetricEvent("final_val_accuracy", accuracy, step),
            MetricEvent("final_eval_seconds", took, step),
            MetricEvent("final_eval_sequences", float(len(ids)), step),
            MetricEvent("val_sequences", float(s.dataset.val_samples), step),
        ],
    )
    if s.rank == 0:
        total = s.dataset.val_samples
        which = (
            f"the whole split ({total} sequences"
            if len(ids) == total
            else f"a seeded sample of {len(ids):,} of its {total:,} sequences (train.final_eval_sequences"
        )
        print(
            f"[train] final validation on {which}, {tokens:,} tokens): loss {loss:.4f}, perplexity "
            f"{perplexity(loss):.2f}, accuracy {accuracy:.3f} in {took:.1f}s",
            flush=True,
        )


def _nonfinite_on_any_rank(loss) -> bool:
    """All ranks must agree, or one would step while another skips and the collectives hang."""
    import torch
    import torch.distributed as dist

    flag = (~torch.isfinite(loss.detach())).float().reshape(1)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return flag.item() > 0


def _skip_or_stop(s: Session) -> None:
    spec, state = s.plan.spec.train, s.state
    where = f"at step {state.step + 1} (epoch {s.cursor.epoch}, sample {s.cursor.sample_in_epoch})"
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


def after_step(s: Session, lr: float, epoch: int, epoch_end: bool) -> None:
    """Log, evaluate, decide on early stopping, then checkpoint: in that order."""
    plan, state, spec = s.plan, s.state, s.plan.spec.train
    if state.step == s.start_step + 1:
        _first_step_done(s.rank)
    last = state.step >= plan.total_steps
    events: list[MetricEvent] = []
    if state.step % spec.log_interval == 0 or last or epoch_end:
        events = train_events(s, lr, epoch)
    if state.step % spec.eval_interval == 0 or last or epoch_end:
        events += _paused(s, "eval_seconds", lambda: _evaluate_and_decide(s))
    if events:
        _write(s, events)
        if s.rank == 0:
            print_progress(s, events)
    interval = plan.spec.checkpoint.interval
    if last or s.stop_reason is not None or (interval and state.step % interval == 0):
        if not events:  # between logging steps: the losses since the last log must be finite first
            _window_totals(s)
        final = last or s.stop_reason is not None
        _write(s, _paused(s, "checkpoint_seconds", lambda: save_checkpoint(s, final)))
    _report_upload(s)


def _paused(s: Session, metric: str, work) -> list[MetricEvent]:
    """Run ``work`` (evaluating, checkpointing) outside the training throughput: its time is taken out
    of the window's and reported as ``metric``. Returns its events and that one."""
    started = time.perf_counter()
    events = work() or []
    took = time.perf_counter() - started
    s.window.paused_s += took
    return [*events, MetricEvent(metric, took, s.state.step)]


def _write(s: Session, events: list[MetricEvent]) -> None:
    if s.sinks is not None:
        s.sinks.write(events)


def _first_step_done(rank: int) -> None:
    startup.mark("first_step")
    if rank == 0:
        print(f"[train] start-up: {startup.describe(startup.startup_marks())}", flush=True)


def _evaluate_and_decide(s: Session) -> list[MetricEvent]:
    events = evaluate(s.plan, s.engine, s.dataset, s.device, s.state.step, s.eval_ids)
    s.state.last_eval = {e.name: e.value for e in events}
    value = s.state.last_eval[s.stopper.metric]
    if s.stopper.update(value, s.state.step):
        s.stop_reason = s.stopper.reason
    return events


def save_checkpoint(s: Session, final: bool) -> None:
    """Through the checkpoint manager: blocked for the local write; on an object store the upload
    goes on behind training (and a save that finds an upload still running is skipped)."""
    from orchestrator.train.checkpoint_manager import new_checkpoint_info

    info = new_checkpoint_info(
        s.plan, s.state.step, s.world, s.stopper.metric, s.state.last_eval, s.stopper.higher_is_better
    )
    s.checkpoints.save(s.engine, s.state_dicts(), info, final)


def _report_upload(s: Session) -> None:
    done = s.checkpoints.finished_uploads()
    if done:
        _write(s, [MetricEvent("checkpoint_upload_seconds", seconds, step) for step, seconds in done])


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


def train_events(s: Session, lr: float, epoch: int) -> list[MetricEvent]:
    """Mean training loss of the window since the last log, averaged over all ranks."""
    window, step = s.window, s.state.step
    loss_sum, micro_batches, tokens = _window_totals(s)
    train_loss = loss_sum / max(micro_batches, 1)
    training_s = time.perf_counter() - window.start - window.paused_s  # no evaluation or checkpoint
    tokens_per_s = tokens / max(training_s, 1e-9)
    events = [
        MetricEvent("train_loss", train_loss, step),
        MetricEvent("train_perplexity", perplexity(train_loss), step),
        MetricEvent("learning_rate", lr, step),
        MetricEvent("epoch", float(epoch), step),
        MetricEvent("tokens_per_second", tokens_per_s, step),
        *utilisation_events(s, tokens_per_s, step),
        MetricEvent("data_seconds", window.data_s / max(window.steps, 1), step),
    ]
    grad_norm = s.engine.get_global_grad_norm()
    if grad_norm is not None and math.isfinite(float(grad_norm)):
        events.append(MetricEvent("grad_norm", float(grad_norm), step))
    if s.plan.spec.train.nan_policy == "skip":
        events.append(MetricEvent("skipped_batches", float(s.state.skipped_batches), step))
    s.window = Window(first_step=step + 1)
    return events


def utilisation_events(s: Session, tokens_per_s: float, step: int) -> list[MetricEvent]:
    """``tflops``: the model FLOPs one device achieved per second (``plan.flops_per_token`` times
    the tokens/s of all ranks, shared by the ranks, one device each); ``mfu``: that over the
    device's peak, only where the peak is known (``train.peak_tflops`` or a known GPU)."""
    tflops = tokens_per_s * s.plan.flops_per_token / s.world / 1e12
    events = [MetricEvent("tflops", tflops, step)]
    if s.peak_tflops:
        events.append(MetricEvent("mfu", tflops / s.peak_tflops, step))
    return events


def print_progress(s: Session, events: list[MetricEvent]) -> None:
    values = {e.name: e.value for e in events}
    plan, step = s.plan, s.state.step
    done = time.perf_counter() - s.started
    eta = done / max(1, step - s.start_step) * (plan.total_steps - step)
    line = f"[train] step {step}/{plan.total_steps} epoch {int(values.get('epoch', s.cursor.epoch))}"
    if "train_loss" in values:
        line += (
            f" loss {values['train_loss']:.4f} lr {values['learning_rate']:.2e} "
            f"{values['tokens_per_second']:,.0f} tok/s"
        )
    if "mfu" in values:
        line += f" {values['tflops']:.4g} TFLOP/s/device MFU {values['mfu']:.1%}"
    if "val_loss" in values:
        line += f" | val loss {values['val_loss']:.4f} acc {values['val_accuracy']:.3f}"
        line += f" ({values['eval_seconds']:.2f} s)" if "eval_seconds" in values else ""
    print(f"{line} | ETA {format_duration(eta)}", flush=True)
