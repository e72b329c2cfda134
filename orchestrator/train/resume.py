"""Save a DeepSpeed checkpoint with the training state, and restore the latest complete one.

Every rank calls both functions (DeepSpeed saves and loads collectively). The run directory is
shared storage: all ranks write their ZeRO shards into it; rank 0 alone publishes and prunes.
"""

from __future__ import annotations

from pathlib import Path

from orchestrator.train.checkpoint import (
    CheckpointInfo,
    check_compatible,
    latest_complete_checkpoint,
    publish,
    remove_incomplete,
    step_tag,
    training_state_of,
)
from orchestrator.train.safe_load import require_inside, weights_only_loading
from orchestrator.train.state import TrainingState, capture_rng, restore_rng


def save(engine, plan, state: TrainingState, metric: str, higher_is_better: bool) -> CheckpointInfo:
    """Write ``step-<N>`` on every rank; it becomes visible (complete) only when all ranks are done."""
    import torch.distributed as dist

    run_dir = Path(plan.checkpoint_dir)
    rank, world = dist.get_rank(), dist.get_world_size()
    rng_by_rank: list = [None] * world
    dist.all_gather_object(rng_by_rank, capture_rng())
    client_state = {"orchestrator": {**state.to_dict(), "rng_by_rank": rng_by_rank}}
    tag = step_tag(state.step)
    # save_latest=False: DeepSpeed's own `latest` is written before other ranks may be done.
    engine.save_checkpoint(str(run_dir), tag=tag, client_state=client_state, save_latest=False)
    dist.barrier()  # every rank's shards are on disk
    info = CheckpointInfo(
        path=run_dir / tag,
        step=state.step,
        world_size=world,
        zero_stage=plan.spec.deepspeed.zero_stage,
        metric=metric if metric in state.last_eval else None,
        metric_value=state.last_eval.get(metric),
        higher_is_better=higher_is_better,
    )
    if rank == 0:
        ckpt = plan.spec.checkpoint
        publish(run_dir, info, ckpt.keep_last, ckpt.keep_best)
    dist.barrier()  # nobody runs ahead (or exits) before the checkpoint is published
    return info


def check_resumable(plan) -> None:
    """Before any engine exists: refuse a checkpoint this world cannot load (clear message)."""
    import torch.distributed as dist

    info = latest_complete_checkpoint(plan.checkpoint_dir)
    if info is not None:
        check_compatible(info, dist.get_world_size(), plan.spec.deepspeed.zero_stage)


def restore_latest(engine, plan) -> tuple[TrainingState, CheckpointInfo] | None:
    """Load the newest complete checkpoint of the run, if there is one, into the engine."""
    import torch.distributed as dist

    run_dir = Path(plan.checkpoint_dir)
    chosen: list = [latest_complete_checkpoint(run_dir)]
    dist.broadcast_object_list(chosen, src=0)  # every rank loads the checkpoint rank 0 picked
    info: CheckpointInfo | None = chosen[0]
    if info is None:
        return None
    check_compatible(info, dist.get_world_size(), plan.spec.deepspeed.zero_stage)
    require_inside(info.path, run_dir)  # a step-<N> link out of the run's directory is not loaded
    if dist.get_rank() == 0:
        remove_incomplete(run_dir, info.step)
    with weights_only_loading():  # DeepSpeed unpickles with weights_only=False: not here
        load_path, client_state = engine.load_checkpoint(str(run_dir), tag=info.tag)
    if load_path is None:
        raise RuntimeError(f"DeepSpeed could not load checkpoint {info.path}")
    fields = dict(training_state_of(client_state))
    rng_by_rank = fields.pop("rng_by_rank")
    restore_rng(rng_by_rank[dist.get_rank()])
    dist.barrier()
    return TrainingState.from_dict(fields), info
