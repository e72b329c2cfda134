"""Benchmark 3: where start-up goes, from ``orchestrator submit`` to the first optimizer step.

A tiny 2-layer model on an embedded local Ray (2 workers, ZeRO-2, fp32), submitted through the real
command line (``benchmarks/timed_submit.py`` times the driver's phases) while each worker's own marks
come from the run's ``status.json`` (``orchestrator.track.startup``). The first run uses an empty
``TORCH_EXTENSIONS_DIR`` and an empty data cache (a machine's first run: any JIT build of a DeepSpeed op
and the tokenizer training show up), the others are warm; the table shows the cold run and the median
of the warm ones.

    .venv/bin/python -m benchmarks.startup              # 1 cold + 2 warm runs
    .venv/bin/python -m benchmarks.startup --warm 1 --no-cold
    .venv/bin/python -m benchmarks.startup --no-cold --running-head   # warm runs on a running head

``--running-head`` starts a ``ray start --head`` on 127.0.0.1 first (token authentication, its own
ports and directory: ``tests/launchers/ray_head.py``) and submits every run to it
(``cluster.address``), as a user who keeps a local Ray running would: Ray's start leaves the
critical path, joining the cluster takes its place.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import REPO, median, run_checked

SPEC = """\
name: startup
model: {n_layers: 2, n_heads: 2, d_model: 32, context_length: 32, vocab_size: 300}
optimizer: {lr: 3.0e-3}
schedule: {warmup_steps: 2, min_lr: 3.0e-4}
train: {max_steps: 10, micro_batch_size: 4, log_interval: 5, eval_interval: 10, eval_batches: 1}
cluster: {backend: ray-local, num_workers: 2}
"""
# (label, start mark, end mark): consecutive spans from the spawn of `submit` to the first step.
PHASES = (
    ("python start + CLI imports", "spawn", "load_spec_start"),
    ("spec + plan (data preparation)", "load_spec_start", "build_plan_end"),
    ("  of which data preparation", "data_start", "data_end"),
    ("MLflow run created", "build_plan_end", "mlflow_run_end"),
    ("Ray start (embedded, 127.0.0.1) or join", "mlflow_run_end", "ray_start_end"),
    ("placement (workers' bundles ready)", "ray_start_end", "placement_end"),
    ("Ray Train trainer built (imports)", "placement_end", "trainer_end"),
    ("controller + worker group start", "trainer_end", "worker.entry"),
    ("imports in the worker", "worker.entry", "worker.imports"),
    ("process group (DeepSpeed comm)", "worker.imports", "worker.process_group"),
    ("DeepSpeed engine init", "worker.process_group", "worker.engine"),
    ("restore + sinks", "worker.engine", "worker.ready"),
    ("first step", "worker.ready", "worker.first_step"),
)


def run_once(work: Path, name: str, cold: bool, head=None) -> dict[str, float]:
    work.mkdir(parents=True)
    (work / "spec.yaml").write_text(SPEC)
    base = head.env if head is not None else os.environ
    env = {**base, "STARTUP_MARKS_FILE": str(work / "marks.json"), "MLFLOW_DISABLE_TELEMETRY": "true"}
    if cold:
        env["TORCH_EXTENSIONS_DIR"] = str(work / "torch_extensions")
        env["ORCHESTRATOR_CACHE_DIR"] = str(work / "data_cache")
    command = [
        sys.executable, str(REPO / "benchmarks" / "timed_submit.py"), "submit", "spec.yaml",
        "--set", f"tracking.run_name={name}", "--progress", "off",
        # one store for all runs, as a user's ./mlflow.db: only the first run creates its tables
        "--set", f"tracking.uri=sqlite:///{work.parent / 'mlflow.db'}",
        # a cluster's workers read the prepared data where every node can: here, this machine's disk
        *(["--set", f"cluster.address={head.gcs_address}", "--set", f"data.prepared={work.parent / 'data'}"]
          if head is not None else []),
    ]  # fmt: skip
    marks = {"spawn": time.time()}
    run_checked(command, work, env, work / "submit.log")
    marks.update(json.loads((work / "marks.json").read_text()))
    status = json.loads((work / "checkpoints" / name / "status.json").read_text())
    marks.update({f"worker.{k}": v for k, v in status["startup"].items()})
    return marks


def spans(marks: dict[str, float]) -> dict[str, float]:
    out = {
        label: marks[end] - marks[start] for label, start, end in PHASES if start in marks and end in marks
    }
    out["total: submit -> first step"] = marks["worker.first_step"] - marks["spawn"]
    counted = sum(v for label, v in out.items() if not label.startswith(("  ", "total")))
    out["  (not in a phase above)"] = out["total: submit -> first step"] - counted
    out["worker process started, after the trainer was built"] = (
        marks["worker.process_start"] - marks["trainer_end"]
    )
    out["after the first step: training, finishing, Ray shutdown"] = marks["end"] - marks["worker.first_step"]
    return out


def measure(warm: int, cold: bool, work: Path, head=None) -> dict:
    runs = {"cold": [], "warm": []}
    plan = (["cold"] if cold else []) + ["warm"] * warm
    for index, kind in enumerate(plan):
        marks = run_once(work / f"run-{index}", f"startup-{index}", kind == "cold", head)
        runs[kind].append(spans(marks))
        total = runs[kind][-1]["total: submit -> first step"]
        print(f"  {kind} run {index + 1}: first step {total:.1f} s after submit", flush=True)
    return runs


def render(runs: dict) -> str:
    labels = list((runs["warm"] or runs["cold"])[0])
    header = "| phase | cold run, s | warm runs, median s |"
    lines = [header, "|---|---:|---:|"]
    for label in labels:
        cold = f"{runs['cold'][0][label]:.1f}" if runs["cold"] else "–"
        warm = f"{median([r[label] for r in runs['warm']]):.1f}" if runs["warm"] else "–"
        name = f"… {label.strip()}" if label.startswith("  ") else label
        lines.append(f"| {name} | {cold} | {warm} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm", type=int, default=2, help="warm runs")
    parser.add_argument("--no-cold", action="store_true", help="skip the cold first run")
    parser.add_argument("--running-head", action="store_true", help="submit to a running local Ray head")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        if args.running_head:
            from tests.launchers.ray_head import ray_head

            with ray_head() as head:
                runs = measure(args.warm, not args.no_cold, Path(tmp), head)
        else:
            runs = measure(args.warm, not args.no_cold, Path(tmp))
    print(render(runs))
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
