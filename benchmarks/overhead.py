"""Benchmarks 1 and 2: what the orchestrator costs on top of bare DeepSpeed, and what tracking costs.

The quickstart model, data, batch, schedule, logging and evaluation (``eval_batches: 1``), ZeRO-2
fp32, 2 ranks on the CPU, trained four ways, interleaved round by round (the order rotates each round):

  submit       ``orchestrator submit`` (embedded Ray, Ray Train, DeepSpeed, MLflow, live artifacts,
               status file), timed from MLflow's own timestamps of ``train_loss``
  worker       the orchestrator's worker under ``torch.distributed.run``, with every sink (tracking on)
  worker-off   the same worker with no sinks at all (tracking off)
  bare         ``benchmarks/bare_deepspeed.py`` under ``torch.distributed.run``: no orchestrator code

Each figure is steady-state tokens/s over the steps FIRST..LAST (start-up, the final checkpoint and
shutdown excluded; the evaluations inside the window included on every side). For each run it also
records the CPU time every process used inside that window (the two ranks vs everything else: Ray,
the driver, torchrun's agent, the tracking child process), and for ``worker`` the time rank 0 spent
in each sink's ``write``.

    .venv/bin/python -m benchmarks.overhead                     # 3 rounds, steps 10..210
    .venv/bin/python -m benchmarks.overhead --rounds 1 --last 40 --variants submit bare
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.harness import (
    REPO,
    CpuSampler,
    describe_cpu,
    flat_tokens,
    median,
    plan_for,
    spread,
    torchrun,
    training_env,
)

SPEC = REPO / "configs" / "quickstart.yaml"
VARIANTS = ("submit", "worker", "worker-off", "bare")
MODEL_FIELDS = ("n_layers", "n_heads", "d_model", "context_length", "vocab_size")


@dataclass
class Measurement:
    variant: str
    tokens_per_s: float
    late_tokens_per_s: float  # the window's second half: one-time costs of the first steps are behind
    cpu: dict
    sinks: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Setup:
    work: Path
    overrides: tuple[str, ...]
    first: int
    last: int
    tokens_per_step: int


def overrides_for(last: int, work: Path) -> tuple[str, ...]:
    return (
        f"train.max_steps={last}",
        "train.eval_batches=1",
        f"tracking.uri=sqlite:///{work / 'mlflow.db'}",
        "tracking.experiment=overhead",
    )


def build_plan_for(setup: Setup, run_name: str):
    from orchestrator.spec import load_spec

    return plan_for(load_spec(str(SPEC), list(setup.overrides)), setup.work, run_name)


def tokens_per_second(setup: Setup, times: dict[int, float], first: int | None = None) -> float:
    first = setup.first if first is None else first
    return (setup.last - first) * setup.tokens_per_step / (times[setup.last] - times[first])


def rates(setup: Setup, times: dict[int, float]) -> tuple[float, float]:
    """Tokens/s over the whole window and over its second half (from the logged step nearest the middle)."""
    middle = min(
        (s for s in times if setup.first < s < setup.last),
        key=lambda s: abs(2 * s - setup.first - setup.last),
    )
    return tokens_per_second(setup, times), tokens_per_second(setup, times, middle)


def _sampled(command: list[str], cwd: Path, env: dict, log: Path) -> tuple[int, object]:
    """Run with every process's CPU sampled; a failed run's log is kept next to the system's
    temporary files (the work directory goes away)."""
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        sampler = CpuSampler(process.pid)
        sampler.start()
        code = process.wait(timeout=900)
        samples = sampler.stop()
    if code != 0:
        kept = Path(tempfile.gettempdir()) / f"bench-failed-{int(time.time())}-{log.name}"
        shutil.copy(log, kept)
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"{' '.join(command[:5])}... failed ({code}), log kept in {kept}:\n{tail}")
    return code, samples


def _window_cpu(setup: Setup, samples, times: dict[int, float]) -> dict:
    start, end = times[setup.first], times[setup.last]
    return describe_cpu(samples.used_between(start, end), samples.names, ranks=2, seconds=end - start)


def run_submit(setup: Setup, index: str) -> Measurement:
    from orchestrator.track.mlflow_run import client

    log = setup.work / f"submit-{index}.log"
    sets = [arg for o in setup.overrides for arg in ("--set", o)]
    command = [sys.executable, "-m", "orchestrator", "submit", str(SPEC), *sets, "--progress", "off"]
    _, samples = _sampled(command, setup.work, training_env(), log)
    run_id = re.search(r"^run id\s+(\w+)", log.read_text(), re.MULTILINE).group(1)
    history = client(f"sqlite:///{setup.work / 'mlflow.db'}").get_metric_history(run_id, "train_loss")
    times = {m.step: m.timestamp / 1000 for m in history}
    return Measurement("submit", *rates(setup, times), _window_cpu(setup, samples, times))


def run_worker(setup: Setup, index: str, tracking: bool) -> Measurement:
    variant = "worker" if tracking else "worker-off"
    plan = build_plan_for(setup, f"{variant}-{index}")
    plan_file, out = setup.work / f"{variant}-{index}.pkl", setup.work / f"{variant}-{index}.json"
    plan_file.write_bytes(pickle.dumps(plan))
    script = REPO / "benchmarks" / "worker_entry.py"
    command = torchrun(script, str(plan_file), "--tracking", "on" if tracking else "off", "--out", str(out))
    _, samples = _sampled(command, setup.work, training_env(), setup.work / f"{variant}-{index}.log")
    result = json.loads(out.read_text())
    times = {int(step): t for step, t in result["times"].items()}
    return Measurement(variant, *rates(setup, times), _window_cpu(setup, samples, times), result["sinks"])


def bare_setup(setup: Setup) -> Path:
    """The bare loop's configuration: the orchestrator's plan, handed over as plain data."""
    from orchestrator.spec import load_spec

    spec = load_spec(str(SPEC), list(setup.overrides))
    plan = plan_for(spec, setup.work, "bare-setup", tracking=False)
    m, o, t = spec.model, spec.optimizer, spec.train
    config = {
        "tokens": str(flat_tokens(plan, setup.work / "bare-tokens.bin")),
        "deepspeed": plan.deepspeed_config,
        "model": {k: getattr(m, k) for k in MODEL_FIELDS},
        "lr": o.lr, "betas": list(o.betas), "eps": o.eps, "weight_decay": o.weight_decay,
        "warmup": spec.schedule.warmup_steps, "min_lr": spec.schedule.min_lr, "steps": plan.total_steps,
        "log_interval": t.log_interval, "eval_interval": t.eval_interval, "eval_batches": t.eval_batches,
        "val_fraction": spec.data.validation_fraction, "seed": t.seed,
    }  # fmt: skip
    path = setup.work / "bare-setup.json"
    path.write_text(json.dumps(config))
    return path


def run_bare(setup: Setup, index: str, config: Path) -> Measurement:
    out = setup.work / f"bare-{index}.json"
    command = torchrun(REPO / "benchmarks" / "bare_deepspeed.py", str(config), "--out", str(out))
    _, samples = _sampled(command, setup.work, training_env(), setup.work / f"bare-{index}.log")
    times = {int(step): t for step, t in json.loads(out.read_text())["times"].items()}
    return Measurement("bare", *rates(setup, times), _window_cpu(setup, samples, times))


def measure(rounds: int, first: int, last: int, variants: tuple[str, ...], work: Path) -> dict:
    from orchestrator.spec import load_spec

    overrides = overrides_for(last, work)
    setup = Setup(work, overrides, first, last, load_spec(str(SPEC), list(overrides)).tokens_per_step)
    config = bare_setup(setup)
    runners = {
        "submit": lambda i: run_submit(setup, i),
        "worker": lambda i: run_worker(setup, i, tracking=True),
        "worker-off": lambda i: run_worker(setup, i, tracking=False),
        "bare": lambda i: run_bare(setup, i, config),
    }
    results: dict[str, list[Measurement]] = {v: [] for v in variants}
    for index in range(rounds):
        order = variants[index % len(variants) :] + variants[: index % len(variants)]
        for variant in order:
            started = time.monotonic()
            result = _with_one_retry(runners[variant], index)
            results[variant].append(result)
            print(
                f"  round {index + 1} {variant:<11} {result.tokens_per_s:9,.0f} tok/s  "
                f"(others' CPU {result.cpu['others_cpu_s']:.1f} s in {result.cpu['window_s']:.1f} s; "
                f"run {time.monotonic() - started:.0f} s)",
                flush=True,
            )
    return summarize(results, first, last, setup.tokens_per_step)


def _with_one_retry(runner, index: int) -> Measurement:
    """One failed run (a flaky machine) is run again under a new name rather than losing the benchmark."""
    try:
        return runner(f"{index}")
    except RuntimeError as exc:
        print(f"  run failed, trying once more: {str(exc).splitlines()[0]}", flush=True)
        return runner(f"{index}-again")


def summarize(results: dict[str, list[Measurement]], first: int, last: int, tokens_per_step: int) -> dict:
    tok = {v: [m.tokens_per_s for m in ms] for v, ms in results.items()}
    late = {v: [m.late_tokens_per_s for m in ms] for v, ms in results.items()}
    ratios = {}
    for a, b in (("submit", "bare"), ("worker", "bare"), ("worker-off", "bare"), ("worker", "worker-off")):
        if tok.get(a) and tok.get(b):
            paired = [x / y for x, y in zip(tok[a], tok[b], strict=False)]
            ratios[f"{a}/{b}"] = {
                "of_medians": median(tok[a]) / median(tok[b]),
                "of_best": max(tok[a]) / max(tok[b]),
                "second_half_of_medians": median(late[a]) / median(late[b]),
                "paired": paired,
            }
    return {
        "window": [first, last],
        "tokens_per_step": tokens_per_step,
        "tokens_per_s": tok,
        "late_tokens_per_s": late,
        "ratios": ratios,
        "cpu": {v: [m.cpu for m in ms] for v, ms in results.items()},
        "sinks": [m.sinks for m in results.get("worker", [])],
    }


def render(summary: dict) -> str:
    """The figures as Markdown (also what `main` prints)."""
    first, last = summary["window"]
    lines = [
        f"Steady state, steps {first}..{last} ({summary['tokens_per_step']:,} tokens/step), tokens/s: "
        "median (min-max) of the rounds. On a shared machine other load slows some runs; the best run "
        "of each variant is the least disturbed one, so its ratio is given too.",
        "",
        "| variant | tokens/s | second half of the window | CPU of the 2 ranks, s "
        "| CPU of all other processes, s | window, s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for variant, values in summary["tokens_per_s"].items():
        cpu, late = summary["cpu"][variant], summary.get("late_tokens_per_s", {}).get(variant, [])
        ranks, others = median([c["ranks_cpu_s"] for c in cpu]), median([c["others_cpu_s"] for c in cpu])
        window = median([c["window_s"] for c in cpu])
        lines.append(
            f"| {variant} | {spread(values)} | {spread(late)} | {ranks:.1f} | {others:.1f} | {window:.1f} |"
        )
    lines += [
        "",
        "| ratio | of the medians | of the best runs | second half, of the medians | per round |",
        "|---|---:|---:|---:|---|",
    ]
    for name, r in summary["ratios"].items():
        paired = " / ".join(f"{x:.3f}" for x in r["paired"])
        best = f"{r['of_best']:.3f}" if "of_best" in r else "–"
        half = f"{r['second_half_of_medians']:.3f}" if "second_half_of_medians" in r else "–"
        lines.append(f"| {name} | {r['of_medians']:.3f} | {best} | {half} | {paired} |")
    lines += _tracking_lines(summary)
    for variant in ("submit", "worker"):
        if summary["cpu"].get(variant):
            top = ", ".join(f"`{name}` {cpu:.2f} s" for name, cpu in summary["cpu"][variant][0]["top_others"])
            lines += ["", f"Busiest other processes in the first {variant} run's window: {top or 'none'}."]
    return "\n".join(lines)


def _tracking_lines(summary: dict) -> list[str]:
    if not summary["sinks"]:
        return []
    window = median([c["window_s"] for c in summary["cpu"]["worker"]])
    lines = [
        "",
        f"Rank 0's time in each sink's `write` (worker, tracking on; per run, whole run; the window is "
        f"about {window:.0f} s):",
        "",
        "| sink | calls | seconds (median) | slowest call, s |",
        "|---|---:|---:|---:|",
    ]
    for name in summary["sinks"][0]:
        runs = [s[name] for s in summary["sinks"]]
        lines.append(
            f"| {name} | {runs[0]['calls']} | {median([r['seconds'] for r in runs]):.3f} "
            f"| {median([r['slowest'] for r in runs]):.3f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--first", type=int, default=10)
    parser.add_argument("--last", type=int, default=210)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        summary = measure(args.rounds, args.first, args.last, tuple(args.variants), Path(tmp))
    print(render(summary))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
