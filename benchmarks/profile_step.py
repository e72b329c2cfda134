"""One optimizer step of the orchestrator's engine under ``torch.profiler``: where the step's time goes.

Run under ``torch.distributed.run`` (one rank) with a pickled Plan, as ``benchmarks/gpu_suite.py``
does: builds the worker's model, data and DeepSpeed engine exactly as ``train_worker`` does
(``orchestrator.train.worker._setup``), runs 3 optimizer steps (compilation, allocator warm-up),
then profiles the 4th (all its micro batches and DeepSpeed's step) and writes the operators with
the most device time (CPU time on a CPU) to OUT (JSON).

    python -m torch.distributed.run --nproc_per_node 1 benchmarks/profile_step.py PLAN.pkl OUT.json
"""

from __future__ import annotations

import json
import pickle
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WARM_STEPS = 3
TOP = 15


def main() -> None:
    plan = pickle.loads(Path(sys.argv[1]).read_bytes())
    import torch
    from torch.profiler import ProfilerActivity, profile

    from orchestrator.train.loop import train_step
    from orchestrator.train.worker import _setup

    session, _ = _setup(plan)  # no sinks: the step hands its events to nobody
    for _ in range(WARM_STEPS):
        train_step(session)
    cuda = session.device.type == "cuda" if hasattr(session.device, "type") else "cuda" in str(session.device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    _sync(torch, cuda)
    started = time.perf_counter()
    with profile(activities=activities) as prof:
        train_step(session)
        _sync(torch, cuda)
    step_s = time.perf_counter() - started
    session.feeder.close()
    Path(sys.argv[2]).write_text(json.dumps({"step_s": step_s, "top": top_operators(prof, cuda, step_s)}))
    import torch.distributed as dist

    dist.barrier()
    dist.destroy_process_group()


def top_operators(prof, cuda: bool, step_s: float) -> list[dict]:
    """The operators with the most self time on the device (the CPU without a GPU)."""
    attribute = "self_device_time_total" if cuda else "self_cpu_time_total"
    rows = sorted(prof.key_averages(), key=lambda e: getattr(e, attribute, 0), reverse=True)
    return [
        {"name": e.key, "ms": getattr(e, attribute) / 1000, "share": getattr(e, attribute) / 1e6 / step_s,
         "calls": e.count}
        for e in rows[:TOP]
    ]  # fmt: skip


def _sync(torch, cuda: bool) -> None:
    if cuda:
        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
