"""The worker entry: the same function on every launcher.

``train_worker(plan)`` runs on each rank after the launcher has set up ``torch.distributed``
(Ray Train does; so does ``torchrun``). It builds the GPT, this rank's data shard and the DeepSpeed
engine, restores the latest complete checkpoint of the run if there is one (a retry or
``submit --resume``), trains, evaluates, checkpoints, and on rank 0 sends metric events to the sinks.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator

from orchestrator.data.dataset import TokenDataset
from orchestrator.plan import Plan
from orchestrator.track import startup
from orchestrator.track.status import RunStatusFile
from orchestrator.train import resume
from orchestrator.train.early_stopping import from_spec as early_stopping_from_spec
from orchestrator.train.loop import Session, run
from orchestrator.train.report_to_ray import EvaluationsToRay


def build_sinks(plan: Plan, rank: int, resumed: bool) -> list:
    """Rank 0: the metric journal, with the tracking child process behind it (MLflow, the live
    report); every rank: the status file (its own heartbeat; rank 0 also writes status.json)."""
    sinks = _sinks(plan, resumed) if rank == 0 else []
    sinks.append(RunStatusFile(plan.checkpoint_dir, plan.total_steps, rank))
    if plan.report_to_ray:  # a sweep trial; every rank, since each report is a barrier
        sinks.append(EvaluationsToRay())
    return sinks


def train_worker(plan: Plan, make_sinks: Callable[[Plan, int, bool], list] = build_sinks) -> None:
    """``make_sinks(plan, rank, resumed)`` builds where this rank's metric events go (the benchmarks
    swap it to measure what tracking costs)."""
    import torch.distributed as dist

    startup.mark("entry")
    owns_process_group = not dist.is_initialized()  # torchrun: ours (DeepSpeed sets it up); Ray Train's
    engine, dataset = _setup(plan)
    rank = dist.get_rank()
    session = Session(
        plan=plan,
        engine=engine,
        dataset=dataset,
        device=engine.device,
        rank=rank,
        world=dist.get_world_size(),
        stopper=early_stopping_from_spec(plan.spec),
    )
    restored = resume.restore_latest(engine, plan)
    if restored is not None:
        session.state = restored[0]
        session.stopper.load_state_dict(session.state.early_stopping)
    session.sinks = make_sinks(plan, rank, restored is not None)
    startup.mark("ready")
    _announce(plan, rank, restored)
    try:
        run(session)
    finally:
        for sink in session.sinks:
            sink.close()
    if rank == 0:
        _finish(plan, session)
    if owns_process_group:
        # Torn down by every rank together rather than by each interpreter's exit, where one rank's
        # gloo connections can close under a peer still tearing down (a benchmark run saw SIGABRT).
        dist.barrier()
        dist.destroy_process_group()


def _setup(plan: Plan):
    with _without_mlflow():
        import deepspeed
    import torch

    from orchestrator.train.model import build_model
    from orchestrator.train.schedule import WarmupCosine

    startup.mark("imports")
    spec = plan.spec
    _skip_cpu_shm_comm_op()
    deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
    startup.mark("process_group")
    resume.check_resumable(plan)
    torch.manual_seed(spec.train.seed)  # identical initial weights on every rank
    model = build_model(spec.model)
    optimizer = torch.optim.AdamW(
        _param_groups(model, spec.optimizer.weight_decay),
        lr=spec.optimizer.lr,
        betas=tuple(spec.optimizer.betas),
        eps=spec.optimizer.eps,
        # One kernel for all parameters on a GPU; offloaded optimizer states stay on the CPU.
        fused=torch.cuda.is_available() and spec.deepspeed.offload_optimizer == "none",
    )
    factor = WarmupCosine(
        spec.schedule.warmup_steps, plan.total_steps, spec.schedule.min_lr / spec.optimizer.lr
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=plan.deepspeed_config
    )
    if spec.model.compile:
        engine.compile()
    startup.mark("engine")
    m = spec.model
    dataset = TokenDataset(
        plan.data.tokens_path, m.context_length, spec.data.validation_fraction, spec.data.seed
    )
    return engine, dataset


@contextlib.contextmanager
def _without_mlflow() -> Iterator[None]:
    """DeepSpeed's autotuner imports MLflow whenever it is installed: about 1.5 s of every rank's
    start-up (a third of its imports) for autotuning, which workers never run. Rank 0's tracking
    child process imports MLflow itself."""
    if "mlflow" in sys.modules:
        yield
        return
    sys.modules["mlflow"] = None  # type: ignore[assignment]  # `import mlflow` raises ImportError
    try:
        yield
    finally:
        if sys.modules.get("mlflow", False) is None:
            del sys.modules["mlflow"]


def _skip_cpu_shm_comm_op() -> None:
    """On the CPU accelerator DeepSpeed builds its shared-memory communication op with the C++ compiler
    when it sets up communication (30-60 s at a machine's first run, and again whenever the build
    command changes, e.g. another venv path). Only its inference all-reduce uses the op; training's
    collectives go through gloo. Marked incompatible, it is neither built nor loaded."""
    from deepspeed.accelerator import get_accelerator

    if get_accelerator().device_name() != "cpu":
        return
    import deepspeed.ops

    name = get_accelerator().get_op_builder("ShareMemCommBuilder").NAME
    # DeepSpeed probes every op builder on first access of this dict; filling it first skips that.
    vars(deepspeed.ops).setdefault("__compatible_ops__", {})[name] = False


def _param_groups(model, weight_decay: float) -> list[dict]:
    """Decay matrices (and the tied embedding); never biases or layer-norm gains."""
    params = {id(p): p for p in model.parameters() if p.requires_grad}.values()
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def _sinks(plan: Plan, resumed: bool) -> list:
    """Rank 0's sinks: the journal, with MLflow and the live report files in a child process."""
    from orchestrator.report.live import LiveArtifacts
    from orchestrator.track.sinks import SkipLoggedSteps
    from orchestrator.train.tracking import rank0_sinks

    if not resumed or not plan.run_id:
        return rank0_sinks(plan)
    # After a restart the live artifacts must still show the steps before it, and steps logged
    # before the kill that are now replayed from an older checkpoint must not be logged twice.
    # What was logged is MLflow's history and the journal's: points journaled by the killed attempt
    # may not have reached MLflow yet (the driver's replay delivers them at the end).
    from orchestrator.track.journal import journal_path, journaled_per_step
    from orchestrator.track.mlflow_read import read_latest_per_step

    history = read_latest_per_step(plan.tracking_uri, plan.run_id, LiveArtifacts.METRICS)
    for key, values in journaled_per_step(journal_path(plan.checkpoint_dir), LiveArtifacts.METRICS).items():
        history.setdefault(key, {}).update(values)
    logged = max(history.get("train_loss", {0: 0.0}))
    return [SkipLoggedSteps(sink, logged) for sink in rank0_sinks(plan, history)]


def _announce(plan: Plan, rank: int, restored) -> None:
    if rank != 0:
        return
    print(
        f"[train] {plan.world_size} workers, global batch {plan.global_batch_size} sequences "
        f"({plan.tokens_per_step} tokens/step), {plan.steps_per_epoch} steps/epoch, "
        f"{plan.total_steps} steps in total",
        flush=True,
    )
    if restored is not None:
        state, info = restored
        print(
            f"[train] resumed from {info.path} (step {state.step}, epoch {state.epoch}, "
            f"{state.micro_batches_done} micro batches into the epoch)",
            flush=True,
        )


def _finish(plan: Plan, session: Session) -> None:
    elapsed = time.perf_counter() - session.started
    steps = session.state.step - session.start_step
    if session.stop_reason:
        print(f"[train] {session.stop_reason}", flush=True)
        _tag_stop_reason(plan, session.stop_reason)
    print(f"[train] done: {session.state.step} steps ({steps} in this attempt) in {elapsed:.1f}s", flush=True)


def _tag_stop_reason(plan: Plan, reason: str) -> None:
    from orchestrator.track.runs import STOP_REASON_TAG, set_tags

    if plan.run_id:
        set_tags(plan.tracking_uri, plan.run_id, {STOP_REASON_TAG: reason})
