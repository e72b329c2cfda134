"""Preflight memory estimate vs measured peak RSS per worker, on CPU, side by side.

Trains each configuration for a few steps with the real worker (2 ranks under torchrun, DeepSpeed on
the CPU accelerator, gloo, MLflow on a scratch sqlite store) and prints the plan's per-worker estimate
next to the peak resident memory of each rank (``ru_maxrss``, the whole process lifetime).

    .venv/bin/python benchmarks/memory_plan.py            # all configurations (several minutes)
    .venv/bin/python benchmarks/memory_plan.py tiny mid-s2
"""

from __future__ import annotations

import os
import pickle
import re
import resource
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

BASE = """\
name: memory
model: {{n_layers: {layers}, n_heads: 4, d_model: {d}, context_length: {ctx}, vocab_size: {vocab},
        activation_checkpointing: {ckpt}}}
schedule: {{warmup_steps: 2}}
train: {{max_steps: 6, micro_batch_size: {micro}, log_interval: 1, eval_interval: 6, eval_batches: 2}}
deepspeed: {{zero_stage: {stage}, precision: {precision}, offload_optimizer: {offload}}}
cluster: {{num_workers: 2}}
"""
TINY = dict(
    layers=2, d=32, ctx=32, vocab=300, micro=4, stage=2, precision="fp32", offload="none", ckpt="false"
)
SMALL = dict(TINY, layers=4, d=128, ctx=128, vocab=512, micro=8)
MID = dict(TINY, layers=6, d=384, ctx=128, vocab=512, micro=8)
BIG = dict(MID, layers=12, d=512)
CONFIGS = {
    "tiny": TINY,
    "quickstart": SMALL,
    "mid-s0": dict(MID, stage=0),
    "mid-s1": dict(MID, stage=1),
    "mid-s2": MID,
    "mid-s3": dict(MID, stage=3),
    "mid-s2-bf16": dict(MID, precision="bf16"),
    "mid-s2-ckpt-mb16": dict(MID, ckpt="true", micro=16),
    "mid-s2-offload": dict(MID, offload="cpu"),
    "big-s2": BIG,
    "big-s3-bf16": dict(BIG, stage=3, precision="bf16"),
}


def main(names: list[str]) -> None:
    from orchestrator.plan.memory import MIB

    print(f"{'config':<18} {'params':>11} {'estimate':>9} {'rank 0':>8} {'rank 1':>8} {'error':>7}  (MiB)")
    for name in names or list(CONFIGS):
        plan, peaks = measure(CONFIGS[name])
        estimate = plan.memory.per_worker_bytes
        peak = max(peaks)
        error = (estimate - peak) / peak * 100
        print(
            f"{name:<18} {plan.memory.parameters:>11,} {estimate / MIB:>9.0f} {peaks[0] / MIB:>8.0f} "
            f"{peaks[1] / MIB:>8.0f} {error:>+6.1f}%",
            flush=True,
        )


def measure(fields: dict) -> tuple:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script
    from benchmarks.harness import plan_for
    from orchestrator.spec import parse_spec

    text = BASE.format(**fields)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        plan = plan_for(parse_spec(text), work)
        (work / "plan.pkl").write_bytes(pickle.dumps(plan))
        out = _torchrun(work / "plan.pkl")
    peaks = {int(r): int(b) for r, b in re.findall(r"^PEAK_RSS rank=(\d+) bytes=(\d+)$", out, re.M)}
    if len(peaks) != 2:
        raise SystemExit(f"a rank did not report its peak memory:\n{out[-4000:]}")
    return plan, [peaks[0], peaks[1]]


def _torchrun(plan_path: Path) -> str:
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    # a build cache of this venv's own: other checkouts' builds would otherwise trigger a rebuild
    env.setdefault("TORCH_EXTENSIONS_DIR", str(Path(sys.prefix) / "torch_extensions"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(port), __file__, "--worker", str(plan_path),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    if result.returncode:
        raise SystemExit(f"training failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout


def worker(plan_path: str) -> None:
    """One rank: train, then report this process's peak resident memory."""
    from orchestrator.train.worker import train_worker

    plan = pickle.loads(Path(plan_path).read_bytes())
    train_worker(plan)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    print(f"PEAK_RSS rank={os.environ['RANK']} bytes={peak}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        worker(sys.argv[2])
    else:
        main(sys.argv[1:])
