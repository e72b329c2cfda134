"""The worker entry: the same function on every launcher.

``train_worker(plan)`` runs on each rank after the launcher has set up ``torch.distributed``
(Ray Train does; so does ``torchrun``). It builds the GPT, this rank's data shard and the DeepSpeed
engine, restores the latest complete checkpoint of the run if there is one (a retry or
``submit --resume``), trains, evaluates, checkpoints, and on rank 0 sends metric events to the sinks.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

from orchestrator.imports import kept_out, stand_in
from orchestrator.plan import Plan
from orchestrator.track import startup
from orchestrator.track.pipeline import MetricsPipeline, open_sinks
from orchestrator.train.early_stopping import from_spec as early_stopping_from_spec
from orchestrator.train.loop import Session, run


def train_worker(plan: Plan, make_sinks: Callable[[Plan, int, bool], MetricsPipeline] = open_sinks) -> None:
    """``make_sinks(plan, rank, resumed)`` builds where this rank's metric events go (the benchmarks
    swap it to measure what tracking costs)."""
    import torch.distributed as dist

    startup.mark("entry")
    quiet_library_warnings()
    owns_process_group = not dist.is_initialized()  # torchrun: ours (DeepSpeed sets it up); Ray Train's
    session, restore = _setup(plan)
    session.sinks = make_sinks(plan, session.rank, restore is not None)
    startup.mark("ready")
    _announce(session, restore)
    try:
        run(session)
    finally:
        session.feeder.close()
        session.sinks.close()
    if session.rank == 0:
        _finish(plan, session)
    if owns_process_group:
        # Torn down by every rank together rather than by each interpreter's exit, where one rank's
        # gloo connections can close under a peer still tearing down (a benchmark run saw SIGABRT).
        dist.barrier()
        dist.destroy_process_group()


def quiet_library_warnings() -> None:
    """Warnings that libraries raise about each other (torch's FutureWarning for the collectives
    DeepSpeed calls, `all_gather_into_tensor is deprecated`) are nothing a user can act on, and read as
    failures on the console: ignored in this process before DeepSpeed runs. Warnings about this
    project's own calls still show."""
    for module in ("torch", "deepspeed"):
        warnings.filterwarnings("ignore", category=FutureWarning, module=rf"{module}(\.|$)")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=rf"{module}(\.|$)")


def _setup(plan: Plan):
    """The session of this rank: dataset, checkpoint manager, engine (restored if a checkpoint
    exists), data cursor and batch feeder."""
    # DeepSpeed's autotuner imports MLflow whenever it is installed: about 1.5 s of every rank's
    # start-up (a third of its imports) for autotuning, which workers never run. Rank 0's tracking
    # child process imports MLflow itself.
    with kept_out("mlflow"):
        import deepspeed
    import torch
    import torch.distributed as dist

    from orchestrator.train.checkpoint_manager import CheckpointManager

    startup.mark("imports")
    _skip_cpu_shm_comm_op()
    deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
    startup.mark("process_group")
    rank, world = dist.get_rank(), dist.get_world_size()
    if world != plan.world_size:
        from orchestrator.errors import LaunchError

        raise LaunchError(
            f"{world} workers started, but the plan is for {plan.world_size} (cluster.num_workers): its "
            "DeepSpeed config and data split are made for that many"
        )
    dataset = _open_dataset(plan)
    from orchestrator.data.dataset import rank_cache_note
    from orchestrator.track.status import WORKER_FACTS

    WORKER_FACTS["data"] = rank_cache_note(dataset)  # where this rank's shards are, in its heartbeat
    startup.mark("data")
    checkpoints = CheckpointManager(plan, rank, world)
    restore = checkpoints.choose_restore()
    engine = _engine(plan, deepspeed, universal=restore is not None and restore.universal)
    startup.mark("engine")
    session = _session(plan, engine, dataset, checkpoints, rank, world)
    if restore is not None:
        session.load_state_dicts(checkpoints.restore(engine, restore))
    session.feeder = _feeder(plan, session)
    return session, restore


def _open_dataset(plan: Plan):
    from orchestrator.data.dataset import TokenDataset
    from orchestrator.storage.store import StoreSettings

    settings = StoreSettings.from_env(plan.spec.storage)
    data = plan.data
    return TokenDataset.open(data.dataset_uri, data.manifest_digest, plan.spec.model.context_length, settings)


# DeepSpeed's ZeRO asks whether the optimizer is its Muon by importing that class (in the engine's
# set-up) and imports Muon's update in every gradient partitioning (the first step); their module's
# torch.compile decorators import all of inductor: about 1.2 s of CPU on every rank at every start.
# The worker's optimizer is torch's AdamW: light stand-ins take their place.
DEEPSPEED_MUON = "deepspeed.runtime.zero.muon.muon_optimizer"
DEEPSPEED_MUON_UPDATE = "deepspeed.runtime.zero.muon.original_muon"


class NoMuon:
    """What DeepSpeed finds as its Muon optimizer in a worker: no optimizer is one."""

    def __init__(self, *args, **kwargs):
        raise TypeError("DeepSpeed's Muon optimizer is not used by the orchestrator's workers")


def no_muon_update(*args, **kwargs):
    raise TypeError("DeepSpeed's Muon update is not used by the orchestrator's workers")


def _without_deepspeed_muon() -> None:
    stand_in(DEEPSPEED_MUON, MuonWithAuxAdam=NoMuon)
    stand_in(DEEPSPEED_MUON_UPDATE, muon_update=no_muon_update)


def _engine(plan: Plan, deepspeed, universal: bool):
    import torch

    from orchestrator.train.model import build_model
    from orchestrator.train.schedule import WarmupCosine

    spec = plan.spec
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
    config = dict(plan.deepspeed_config)
    if universal:  # a checkpoint of another world size, converted to DeepSpeed's universal form
        config["checkpoint"] = {**config.get("checkpoint", {}), "load_universal": True}
    _without_deepspeed_muon()
    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=config
    )
    if spec.model.compile:
        keep_compiled_kernels()
        engine.compile()
    return engine


def keep_compiled_kernels() -> None:
    """torch.compile's kernels and graphs in this node's cache (``ORCHESTRATOR_CACHE_DIR``, beside the
    prepared data) rather than in /tmp, so a restarted worker or the next run of the same model loads
    them instead of compiling from nothing (inductor's FX graph and autograd caches are on by
    default; inductor reads the directory when it first compiles). A TORCHINDUCTOR_CACHE_DIR already
    set wins."""
    import os

    from orchestrator.data.prepare import cache_root

    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_root() / "inductor"))


def _session(plan: Plan, engine, dataset, checkpoints, rank: int, world: int) -> Session:
    from orchestrator.data.cursor import DataCursor
    from orchestrator.train.evaluate import evaluation_ids

    cursor = DataCursor(
        seed=plan.spec.train.seed,
        samples_per_epoch=plan.steps_per_epoch * plan.global_batch_size,
        dataset=plan.data.manifest_digest,
    )
    return Session(
        plan=plan,
        engine=engine,
        dataset=dataset,
        device=engine.device,
        rank=rank,
        world=world,
        stopper=early_stopping_from_spec(plan.spec),
        cursor=cursor,
        feeder=None,  # set once the cursor is where the run resumes
        checkpoints=checkpoints,
        eval_ids=evaluation_ids(plan, dataset, world),
        peak_tflops=device_peak_tflops(plan, engine.device),
    )


def device_peak_tflops(plan: Plan, device) -> float | None:
    """The spec's ``train.peak_tflops``, else the known peak of this GPU at the run's precision
    (asked once, here, never on the step path), else None: no mfu metric rather than a made-up one."""
    import torch

    from orchestrator.plan.flops import peak_tflops

    if plan.spec.train.peak_tflops:
        return plan.spec.train.peak_tflops
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return peak_tflops(torch.cuda.get_device_name(device), plan.spec.deepspeed.precision)


def _feeder(plan: Plan, session: Session):
    from orchestrator.data.cursor import SampleOrder
    from orchestrator.train.batches import BatchFeeder, Feed

    train = plan.spec.train
    feed = Feed(
        order=SampleOrder(session.dataset.train_samples, train.seed),
        rank=session.rank,
        world=session.world,
        micro=train.micro_batch_size,
        accumulation=train.gradient_accumulation_steps,
    )
    pin = getattr(session.device, "type", "") == "cuda"
    return BatchFeeder(session.dataset, feed, session.cursor, pin=pin)


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


def _announce(session: Session, restore) -> None:
    plan = session.plan
    if session.rank != 0:
        return
    from orchestrator.data.dataset import rank_cache_note

    print(
        f"[data] {plan.data.train_samples:,} training sequences; shards read from "
        f"{rank_cache_note(session.dataset)}",
        flush=True,
    )
    print(
        f"[train] {plan.world_size} workers, global batch {plan.global_batch_size} sequences "
        f"({plan.tokens_per_step} tokens/step), {plan.steps_per_epoch} steps/epoch, "
        f"{plan.total_steps} steps in total",
        flush=True,
    )
    if restore is not None:
        cursor, info = session.cursor, restore.info
        how = (
            f", converted from {info.world_size} workers (universal checkpoint)" if restore.universal else ""
        )
        print(
            f"[train] resumed from {info.location} (step {session.state.step}, epoch {cursor.epoch}, "
            f"{cursor.sample_in_epoch} samples into the epoch{how})",
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
