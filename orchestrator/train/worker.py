"""The worker entry: the same function on every launcher.

``train_worker(plan)`` runs on each rank after the launcher has set up ``torch.distributed``
(Ray Train does; so does ``torchrun``). It builds the GPT, this rank's data shard and the DeepSpeed
engine, restores the latest complete checkpoint of the run if there is one (a retry or
``submit --resume``), trains, evaluates, checkpoints, and on rank 0 sends metric events to the sinks.
"""

from __future__ import annotations

import time

from orchestrator.data.dataset import TokenDataset
from orchestrator.plan import Plan
from orchestrator.track.events import MetricSink
from orchestrator.track.runs import STOP_REASON_TAG, set_tags
from orchestrator.track.status import RunStatusFile
from orchestrator.train import resume
from orchestrator.train.early_stopping import from_spec as early_stopping_from_spec
from orchestrator.train.loop import Session, run
from orchestrator.train.report_to_ray import EvaluationsToRay


def train_worker(plan: Plan) -> None:
    import torch.distributed as dist

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
    if rank == 0:
        session.sinks = _sinks(plan, resumed=restored is not None)
    session.sinks.append(RunStatusFile(plan.checkpoint_dir, plan.total_steps, rank))  # every rank: heartbeats
    if plan.report_to_ray:  # a sweep trial; every rank, since each report is a barrier
        session.sinks.append(EvaluationsToRay())
    _announce(plan, rank, restored)
    try:
        run(session)
    finally:
        for sink in session.sinks:
            sink.close()
    if rank == 0:
        _finish(plan, session)


def _setup(plan: Plan):
    import deepspeed
    import torch

    from orchestrator.train.model import build_model
    from orchestrator.train.schedule import WarmupCosine

    spec = plan.spec
    deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
    resume.check_resumable(plan)
    torch.manual_seed(spec.train.seed)  # identical initial weights on every rank
    model = build_model(spec.model)
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
    if spec.model.compile:
        engine.compile()
    m = spec.model
    dataset = TokenDataset(
        plan.data.tokens_path, m.context_length, spec.data.validation_fraction, spec.data.seed
    )
    return engine, dataset


def _param_groups(model, weight_decay: float) -> list[dict]:
    """Decay matrices (and the tied embedding); never biases or layer-norm gains."""
    params = {id(p): p for p in model.parameters() if p.requires_grad}.values()
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def _sinks(plan: Plan, resumed: bool) -> list[MetricSink]:
    """Rank 0's sinks: the tracker (journal + MLflow) and the live report files."""
    from orchestrator.report.live import LiveArtifacts
    from orchestrator.track.sinks import SkipLoggedSteps, tracker_sinks

    sinks = tracker_sinks(plan)
    report = plan.spec.report
    live = LiveArtifacts(plan.checkpoint_dir, report.formats) if report.artifacts else None
    if not resumed or not plan.run_id:
        return sinks + ([live] if live else [])
    # After a restart the live artifacts must still show the steps before it, and steps logged
    # before the kill that are now replayed from an older checkpoint must not be logged twice.
    from orchestrator.track.mlflow_read import read_latest_per_step

    history = read_latest_per_step(plan.tracking_uri, plan.run_id, LiveArtifacts.METRICS)
    if live is not None:
        live.history.update(history)
        sinks.append(live)
    logged = max(history.get("train_loss", {0: 0.0}))
    return [SkipLoggedSteps(sink, logged) for sink in sinks]


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
    if plan.run_id:
        set_tags(plan.tracking_uri, plan.run_id, {STOP_REASON_TAG: reason})
