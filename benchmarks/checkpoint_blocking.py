"""What a checkpoint costs training: the time every rank is blocked per save, written synchronously to a
local directory against the asynchronous path to an object store (SeaweedFS's S3 on loopback), for the
quickstart model and a model of about 50M parameters; and the upload throughput to that store.

    .venv/bin/python -m benchmarks.checkpoint_blocking [--json OUT]

Each configuration trains a few steps under torchrun (2 CPU ranks, ZeRO-2 fp32, the real worker,
tracking on) with a checkpoint every ``interval`` steps; ``checkpoint_seconds`` (blocked) and
``checkpoint_upload_seconds`` come from the run's MLflow history, the checkpoint's size from its
files. Goal: the blocked time no longer grows with the upload.
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import tempfile
from pathlib import Path

from benchmarks.harness import REPO, emit, plan_for, run_checked, torchrun, training_env

MODELS = {  # name -> (model section, steps, checkpoint interval)
    "quickstart": ("{n_layers: 4, n_heads: 4, d_model: 128, context_length: 128, vocab_size: 512}", 24, 4),
    "50M": ("{n_layers: 8, n_heads: 8, d_model: 704, context_length: 128, vocab_size: 512}", 12, 3),
}
SPEC = """\
name: ckpt-bench
model: {model}
train: {{epochs: 1, max_steps: {steps}, micro_batch_size: 4, log_interval: 1, eval_interval: 1000,
        eval_batches: 1}}
schedule: {{warmup_steps: 2}}
deepspeed: {{zero_stage: 2, precision: fp32}}
checkpoint: {{interval: {interval}, keep_last: 2}}
storage: {{retry_deadline_s: 300}}
report: {{artifacts: false}}
"""


def run_one(work: Path, name: str, where: str, store_env: dict, checkpoint_uri: str | None) -> dict:
    from orchestrator.spec import parse_spec
    from orchestrator.track.mlflow_run import client
    from orchestrator.train.checkpoint import latest_complete_checkpoint

    model, steps, interval = MODELS[name]
    spec = parse_spec(SPEC.format(model=model, steps=steps, interval=interval))
    plan = plan_for(spec, work, f"{name}-{where}", checkpoint_uri=checkpoint_uri)
    plan_path = work / f"{name}-{where}.pkl"
    plan_path.write_bytes(pickle.dumps(plan))
    env = training_env({**store_env, "ORCHESTRATOR_SCRATCH_DIR": str(work / "scratch")})
    entry = REPO / "benchmarks" / "worker_entry.py"
    command = torchrun(entry, str(plan_path), "--tracking", "on", "--out", str(work / f"{name}-{where}.json"))
    run_checked(command, work, env, work / f"{name}-{where}.log")
    mlflow = client(plan.tracking_uri)

    def history(key: str) -> list[float]:
        return [m.value for m in sorted(mlflow.get_metric_history(plan.run_id, key), key=lambda m: m.step)]

    blocked, uploads = history("checkpoint_seconds"), history("checkpoint_upload_seconds")
    latest = latest_complete_checkpoint(plan.checkpoint_store())
    size = sum(f["size"] for f in latest.files.values()) if latest.files else _folder_size(latest.path)
    return {
        "blocked_s": blocked,
        "blocked_median_s": statistics.median(blocked),
        "upload_s": uploads,
        "upload_median_s": statistics.median(uploads) if uploads else None,
        "checkpoint_mb": size / 1e6,
        "upload_mb_per_s": size / 1e6 / statistics.median(uploads) if uploads else None,
    }


def _folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def main() -> None:
    from tests.servers import S3Server

    parser = argparse.ArgumentParser()
    parser.add_argument("--json")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ckpt-bench-"))
    server = S3Server(work / "s3").start().wait_ready()
    os.environ.update(server.env())  # this process reads the checkpoints on the store too
    try:
        results = {}
        for name in args.models:
            local = run_one(work, name, "local", {}, None)
            s3 = run_one(work, name, "s3", server.env(), f"s3://{server.BUCKET}/bench/{name}")
            results[name] = {"local": local, "s3": s3}
    finally:
        server.stop()
    emit(results, args.json)


if __name__ == "__main__":
    main()
