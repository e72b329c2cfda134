"""What Ray Tune's scheduling costs per trial: a sweep of N trials against N `orchestrator submit` runs
of the same specs, one after another, measured side by side on the same machine.

The N specs are the tiny model (1 CPU worker, 40 steps) with N learning rates. It runs, in order:

1. ``orchestrator submit`` once per rate (``--set optimizer.lr=...``), one after another;
2. ``orchestrator sweep`` over the same rates as a grid with ``max_concurrent_trials: 1`` (the same
   work, in the same order, in one Ray);
3. the same sweep with the default concurrency (as many trials as the CPUs hold).

For each it prints the wall time, and from MLflow each run's own time (run start to end) and the gap
between one run's end and the next one's start. The overhead per trial is (sequential sweep - sum of
the submits) / N: negative when the sweep saves more (one Ray start instead of N) than Tune costs.
The results are appended to benchmarks/SWEEPS.md (``--no-append``: print only); ``make bench`` rewrites
RESULTS.md as a whole, so sweeps keep their own file.

    .venv/bin/python benchmarks/sweep_overhead.py            # about 6 minutes on 2 CPU cores
    .venv/bin/python benchmarks/sweep_overhead.py --trials 2 --no-append
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("SWEEPS.md")
SECTION = "## Sweeps"
RATES = [3.0e-3, 1.0e-3, 6.0e-3, 2.0e-3, 4.5e-3, 1.5e-3, 8.0e-3, 2.5e-3]
SPEC = """\
name: overhead
model: {n_layers: 2, n_heads: 2, d_model: 32, context_length: 32, vocab_size: 300}
optimizer: {lr: 3.0e-3}
schedule: {warmup_steps: 4, min_lr: 3.0e-4}
train: {max_steps: 40, micro_batch_size: 4, log_interval: 10, eval_interval: 20, eval_batches: 2}
cluster: {backend: ray-local, num_workers: 1, cpus_per_worker: 1}
"""


def _run(work: Path, *args: str) -> float:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator", *args], cwd=work, capture_output=True, text=True, timeout=1800
    )
    if result.returncode != 0:
        tail = f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        raise SystemExit(f"orchestrator {' '.join(args)} failed:\n{tail}")
    return time.perf_counter() - started


def _run_times(work: Path, trials_only: bool) -> list[tuple[float, float]]:
    """(start, end) in seconds of every training run in the store, in start order."""
    from orchestrator.track.mlflow_run import client
    from orchestrator.track.runs import SWEEP_TAG

    mlflow = client(f"sqlite:///{work / 'mlflow.db'}")
    runs = mlflow.search_runs([e.experiment_id for e in mlflow.search_experiments()])
    runs = [r for r in runs if not (trials_only and SWEEP_TAG in r.data.tags)]
    return sorted((r.info.start_time / 1000, r.info.end_time / 1000) for r in runs)


def _summary(name: str, wall: float, times: list[tuple[float, float]]) -> dict:
    durations = [end - start for start, end in times]
    gaps = [later[0] - earlier[1] for earlier, later in itertools.pairwise(times)]
    return {
        "name": name,
        "wall_s": wall,
        "run_s": statistics.mean(durations),
        "gap_s": statistics.mean(gaps) if gaps else 0.0,
    }


def submits(root: Path, rates: list[float]) -> dict:
    work = root / "submit"
    work.mkdir()
    (work / "spec.yaml").write_text(SPEC)
    wall = sum(_run(work, "submit", "spec.yaml", "--set", f"optimizer.lr={rate!r}") for rate in rates)
    return _summary(f"{len(rates)} x orchestrator submit, one after another", wall, _run_times(work, False))


def sweep(root: Path, rates: list[float], concurrency: int | None) -> dict:
    work = root / f"sweep-{concurrency or 'auto'}"
    work.mkdir()
    limit = f"\n  max_concurrent_trials: {concurrency}" if concurrency else ""
    grid = f"optimizer.lr: {{grid: {json.dumps(rates)}}}"
    (work / "spec.yaml").write_text(f"{SPEC}sweep:\n  parameters:\n    {grid}{limit}\n")
    wall = _run(work, "sweep", "spec.yaml", "--table", "lines")
    at_once = f"{concurrency} at a time" if concurrency else "as many at once as the CPUs hold"
    return _summary(f"orchestrator sweep of {len(rates)} trials, {at_once}", wall, _run_times(work, True))


def render(rows: list[dict], trials: int) -> str:
    submit, sequential = rows[0], rows[1]
    overhead = (sequential["wall_s"] - submit["wall_s"]) / trials
    lines = [
        f"{dt.datetime.now():%Y-%m-%d %H:%M}, {os.cpu_count()} CPU cores, "
        f"Python {platform.python_version()}, tiny model, 1 worker x 40 steps per trial, {trials} trials:",
        "",
        "| what | wall s | per trial s | mean run s (MLflow start to end) | mean gap between runs s |",
        "|---|---:|---:|---:|---:|",
        *(_row(r, trials) for r in rows),
        "",
        f"Overhead per trial of the sequential sweep against the submits: {overhead:+.1f} s "
        f"({sequential['wall_s'] / submit['wall_s']:.2f}x the submits' wall time; negative: the sweep "
        "starts Ray once, each submit starts its own). Between one trial's end and the next one's "
        f"start Tune took {sequential['gap_s']:.1f} s (one submit's process to the next: "
        f"{submit['gap_s']:.1f} s).",
    ]
    return "\n".join(lines)


def _row(r: dict, trials: int) -> str:
    numbers = [f"{n:.1f}" for n in (r["wall_s"], r["wall_s"] / trials, r["run_s"])]
    gap = f"{r['gap_s']:.1f}" if r["gap_s"] >= 0 else "(runs overlap)"
    return f"| {r['name']} | " + " | ".join([*numbers, gap]) + " |"


def append_results(text: str) -> None:
    """Add the run to the Sweeps section of SWEEPS.md."""
    existing = RESULTS.read_text() if RESULTS.exists() else "# Sweep benchmark results\n"
    if SECTION not in existing:
        intro = (
            f"\n{SECTION}\n\nFrom `benchmarks/sweep_overhead.py`: a sweep of N trials against N sequential "
            "`orchestrator submit` runs of the same specs.\n"
        )
        existing = existing.rstrip("\n") + "\n" + intro
    head, _, tail = existing.partition(SECTION)
    body, marker, rest = tail.partition("\n## ")
    updated = f"{head}{SECTION}{body.rstrip()}\n\n{text}\n" + (f"\n## {rest}" if marker else "")
    RESULTS.write_text(updated)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4, choices=range(2, len(RATES) + 1))
    parser.add_argument("--no-append", action="store_true", help=f"print only; leave {RESULTS.name} alone")
    args = parser.parse_args()
    rates = RATES[: args.trials]
    # DeepSpeed's CPU op is built once per environment, not into the shared ~/.cache
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(sys.prefix) / "torch_extensions"))
    with tempfile.TemporaryDirectory(prefix="sweep-overhead-") as tmp:
        root = Path(tmp)
        rows = [submits(root, rates), sweep(root, rates, 1), sweep(root, rates, None)]
    text = render(rows, args.trials)
    print(text)
    if not args.no_append:
        append_results(text)
        print(f"\nappended to {RESULTS}")


if __name__ == "__main__":
    main()
