"""The part of start-up that is Ray's and Ray Train's: an embedded Ray started as a run starts it
(``launchers.ray_local.connect``: 127.0.0.1, token authentication, the workers' environment), then a
``TorchTrainer`` of 2 workers whose training function only notes the time. No MLflow, no DeepSpeed,
no model: whatever a run spends before its own training function is entered is at least this.

    .venv/bin/python -m benchmarks.ray_train_floor [--runs 3] [--prestart] [--json OUT]

Each run is a process of its own (``--one``). The figures: ``ray.init``; from ``fit()`` to the
worker processes' start (the controller actor's process and its set-up); from ``fit()`` to the
training function's entry on the later of the two ranks (the worker processes' imports and Ray
Train's process group on top). ``--prestart``: Ray's worker prestart on (the launcher turns it off),
to see whether idle workers started ahead shorten the worker group's start.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import REPO, emit, median, plan_for

SPEC = """\
name: floor
model: {n_layers: 2, n_heads: 2, d_model: 32, context_length: 32, vocab_size: 300}
cluster: {backend: ray-local, num_workers: 2}
"""


def _entry(config: dict) -> None:
    import ray.train

    from orchestrator.track.startup import process_start_time

    rank = ray.train.get_context().get_world_rank()
    mark = {"rank": rank, "entry": time.time(), "process_start": process_start_time()}
    Path(config["marks"], f"rank-{rank}.json").write_text(json.dumps(mark))


def one(work: Path, prestart: bool = False) -> dict[str, float]:
    """One embedded Ray and one empty training run (in this process). Ray is imported once
    ``connect`` has set its authentication mode, which Ray reads at its import."""
    from launchers.ray_local import connect, private_ray_token
    from orchestrator.spec import parse_spec

    plan = plan_for(parse_spec(SPEC), work, tracking=False)
    marks = work / "marks"
    marks.mkdir()
    with private_ray_token():
        if prestart:
            _with_worker_prestart(plan)
        started = time.time()
        connect(plan, None, log_to_driver=False)
        connected = time.time()
        import ray
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer

        from launchers.loopback_torch import LoopbackTorchConfig

        try:
            trainer = TorchTrainer(
                _entry,
                train_loop_config={"marks": str(marks)},
                scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
                torch_config=LoopbackTorchConfig(backend="gloo"),
                run_config=RunConfig(storage_path=str(work / "ray")),
            )
            fit = time.time()
            trainer.fit()
        finally:
            ray.shutdown()
    ranks = [json.loads(path.read_text()) for path in sorted(marks.glob("rank-*.json"))]
    return {
        "ray_init_s": connected - started,
        "fit_to_worker_process_s": min(r["process_start"] for r in ranks) - fit,
        "fit_to_entry_s": max(r["entry"] for r in ranks) - fit,
    }


def _with_worker_prestart(plan) -> None:
    """Every ``ray.init`` of this process from now on with Ray's worker prestart on (Ray imported with
    the authentication mode ``connect`` sets)."""
    import os

    from launchers.ray_local import RAY_AUTH_MODE, embedded_ray_auth

    os.environ[RAY_AUTH_MODE] = embedded_ray_auth(plan.spec.cluster)
    import ray

    init = ray.init

    def with_prestart(*args, **kwargs):
        kwargs["_system_config"] = {"enable_worker_prestart": True, "prestart_worker_first_driver": True}
        return init(*args, **kwargs)

    ray.init = with_prestart


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--prestart", action="store_true", help="Ray's worker prestart on")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a single run in this process, into this file
    args = parser.parse_args()
    if args.one:
        with tempfile.TemporaryDirectory(prefix="floor-") as work:
            Path(args.one).write_text(json.dumps(one(Path(work), args.prestart)))
        return
    runs = []
    with tempfile.TemporaryDirectory(prefix="floor-runs-") as scratch:
        for index in range(args.runs):
            out = Path(scratch) / f"run-{index}.json"
            command = [sys.executable, "-m", "benchmarks.ray_train_floor", "--one", str(out)]
            command += ["--prestart"] if args.prestart else []
            subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
            runs.append(json.loads(out.read_text()))
            print(f"  run {index + 1}: " + ", ".join(f"{k} {v:.2f}" for k, v in runs[-1].items()), flush=True)
    figures = {key: median([run[key] for run in runs]) for key in runs[0]}
    figures["floor_s"] = figures["ray_init_s"] + figures["fit_to_entry_s"]
    emit({"runs": runs, "median": figures}, args.json)


if __name__ == "__main__":
    main()
