"""Every GPU measurement of the throughput work in one run (about 5 minutes on one H100/H200).

GPT-2 124M (12 layers, d_model 768, context 1024, vocabulary 50,257 padded to 50,304), bf16, one GPU,
``--micro`` x ``--accum`` x 1024 tokens per optimizer step (default 32 x 4 = 131,072; llm.c uses
524,288: ``--accum 16``), on the built-in corpus repeated until no epoch ends inside the run. Each
measurement is its own process; the first ``--warmup`` steps (``torch.compile`` among them) are left
out of every timed window, and inductor's cache (``--cache-dir``) is kept between runs, so the second
run of a graph loads its kernels. In this order, so a run cut short keeps the most important:

1. ``bare``: ``benchmarks/bare_gpt.py``, a nanoGPT-style loop (plain PyTorch: SDPA, fused AdamW, bf16
   autocast over fp32 weights, ``torch.compile``), on the same tokens.
2. ``worker-bf16-z0`` (and ``-z1``, ``-z2``): the orchestrator's worker under ``torch.distributed.run``
   on the same model, tokens per step and data: DeepSpeed's bf16 mode (bf16 weights, its fp32 master
   copy) with the client's fused torch AdamW, at ZeRO stage 0 (what the plan recommends for one GPU),
   1 and 2.
3. ``worker-autocast-z0``: DeepSpeed's ``torch_autocast`` mode (fp32 weights, bf16 autocast, as the
   bare loop does).
4. ``profile``: ``torch.profiler`` over one optimizer step of the worker's engine (the recommended
   configuration), the top operators by device time.

The report (``--out DIR``: ``gpu_suite.json``, ``gpu_suite.md``, rewritten after each measurement) has
tokens/s, achieved TFLOP/s and MFU (6N + 12LdT against the device's dense bf16 peak: H100/H200 SXM 989
TFLOP/s) of each, orchestrator / bare, the versions and the date.

    .venv/bin/python -m benchmarks.gpu_suite --out gpu-results              # on a GPU machine
    .venv/bin/python -m benchmarks.gpu_suite --device cpu --size tiny --no-compile --out /tmp/s
    .venv/bin/python -m benchmarks.gpu_suite --only bare worker-bf16-z0 --out gpu-results

``--device cpu`` runs the same logic at a tiny size on the CPU (no peak there: no MFU).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import pickle
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.harness import REPO, flat_tokens, plan_for, run_checked, torchrun, training_env

SIZES = {
    # the corpus repeated: about 200k GPT-2-sized tokens a copy, enough for 40 steps of 131,072
    "gpt2": {"layers": 12, "heads": 12, "d": 768, "ctx": 1024, "vocab": 50257, "repeats": 60},
    "tiny": {"layers": 2, "heads": 2, "d": 64, "ctx": 64, "vocab": 512, "repeats": 1},
}
SPEC = """\
name: gpu-suite
model: {{n_layers: {layers}, n_heads: {heads}, d_model: {d}, context_length: {ctx}, vocab_size: {vocab},
        vocab_multiple: 64, compile: {compile}}}
data: {{corpus: files, files: [{corpus}], tokenizer: {{train_sample_mb: 4}}}}
optimizer: {{lr: 6.0e-4, betas: [0.9, 0.95], weight_decay: 0.1, grad_clip: 1.0}}
schedule: {{warmup_steps: 5, min_lr: 6.0e-5}}
train: {{epochs: 100, max_steps: {max_steps}, micro_batch_size: {micro}, gradient_accumulation_steps: {accum},
        log_interval: {log_interval}, eval_interval: {eval_interval}, eval_batches: 1}}
deepspeed: {{zero_stage: {stage}, precision: {precision}, raw_config: {raw}}}
cluster: {{backend: ray-local, num_workers: 1, gpus_per_worker: {gpus}}}
checkpoint: {{keep_last: 1, keep_best: false}}
tracking: {{system_metrics: false}}
report: {{artifacts: false}}
"""
AUTOCAST = "{torch_autocast: {enabled: true, dtype: bfloat16}}"
# name -> (ZeRO stage, precision, raw DeepSpeed config)
WORKERS = {
    "worker-bf16-z0": (0, "bf16", "{}"),
    "worker-autocast-z0": (0, "fp32", AUTOCAST),
    "worker-bf16-z1": (1, "bf16", "{}"),
    "worker-bf16-z2": (2, "bf16", "{}"),
}
MEASUREMENTS = ("bare", "worker-bf16-z0", "worker-autocast-z0", "profile", "worker-bf16-z1", "worker-bf16-z2")


@dataclass
class Suite:
    args: argparse.Namespace
    work: Path
    size: dict
    corpus: Path
    results: dict = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    @property
    def cuda(self) -> bool:
        return self.args.device == "cuda"

    def env(self) -> dict[str, str]:
        cache = Path(self.args.cache_dir).expanduser().resolve()
        extra = {"TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"), "ORCHESTRATOR_CACHE_DIR": str(cache)}
        if self.cuda:
            extra["DS_ACCELERATOR"] = "cuda"
        return training_env(extra)


def spec_text(suite: Suite, stage: int, precision: str, raw: str) -> str:
    a, window_end = suite.args, suite.args.warmup + suite.args.steps
    log = _log_interval(a.warmup, a.steps)
    return SPEC.format(
        **{k: v for k, v in suite.size.items() if k != "repeats"}, corpus=suite.corpus,
        compile=str(not a.no_compile).lower(), max_steps=window_end + log, micro=a.micro, accum=a.accum,
        log_interval=log, eval_interval=1000 * log, stage=stage, precision=precision, raw=raw,
        gpus=1 if suite.cuda else 0,
    )  # fmt: skip


def _log_interval(warmup: int, steps: int) -> int:
    """Logging steps at the window's ends (the worker's clock reads the time there)."""
    import math

    return math.gcd(warmup, steps)


def worker_plan(suite: Suite, name: str, work: str | None = None):
    """The plan of worker configuration ``name``, in a directory of its own (``work``: another one)."""
    from orchestrator.spec import parse_spec

    stage, precision, raw = WORKERS[name]
    spec = parse_spec(spec_text(suite, stage, precision, raw))
    return plan_for(spec, suite.work / (work or name), tracking=False)


def measure_worker(suite: Suite, name: str) -> dict:
    plan = worker_plan(suite, name)
    work = Path(plan.checkpoint_dir).parent
    (work / "plan.pkl").write_bytes(pickle.dumps(plan))
    out = work / "result.json"
    script = REPO / "benchmarks" / "worker_entry.py"
    command = torchrun(script, str(work / "plan.pkl"), "--tracking", "off", "--out", str(out), nproc=1)
    run_checked(command, work, suite.env(), work / "worker.log", timeout=suite.args.timeout)
    times = {int(k): v for k, v in json.loads(out.read_text())["times"].items()}
    first, last = suite.args.warmup, suite.args.warmup + suite.args.steps
    return {
        "tokens_per_s": (last - first) * plan.tokens_per_step / (times[last] - times[first]),
        "tokens_per_step": plan.tokens_per_step,
        "window_steps": [first, last],
        "deepspeed": {"stage": WORKERS[name][0], "precision": WORKERS[name][1], "raw": WORKERS[name][2]},
    }


def measure_bare(suite: Suite) -> dict:
    plan = worker_plan(suite, "worker-bf16-z0", "bare-data")  # the workers' data (prepared once)
    work = suite.work / "bare"
    work.mkdir(exist_ok=True)
    tokens = flat_tokens(plan, work / "tokens.bin")
    a, s = suite.args, suite.size
    command = [
        sys.executable, str(REPO / "benchmarks" / "bare_gpt.py"), "--tokens", str(tokens),
        "--layers", str(s["layers"]), "--heads", str(s["heads"]), "--d", str(s["d"]), "--ctx", str(s["ctx"]),
        "--vocab", str(s["vocab"]), "--micro", str(a.micro), "--accum", str(a.accum),
        "--warmup", str(a.warmup), "--steps", str(a.steps), "--device", a.device,
        "--out", str(work / "r.json"), *([] if a.no_compile else ["--compile"]),
    ]  # fmt: skip
    run_checked(command, work, suite.env(), work / "bare.log", timeout=a.timeout)
    return json.loads((work / "r.json").read_text())


def measure_profile(suite: Suite) -> dict:
    plan = worker_plan(suite, "worker-bf16-z0", "profile")
    work = Path(plan.checkpoint_dir).parent
    work.mkdir(exist_ok=True)
    (work / "plan.pkl").write_bytes(pickle.dumps(plan))
    out = work / "profile.json"
    command = torchrun(REPO / "benchmarks" / "profile_step.py", str(work / "plan.pkl"), str(out), nproc=1)
    run_checked(command, work, suite.env(), work / "profile.log", timeout=suite.args.timeout)
    return json.loads(out.read_text())


def utilisation(suite: Suite, tokens_per_s: float) -> dict:
    from orchestrator.plan.flops import flops_per_token
    from orchestrator.spec.models import ModelSpec

    s = suite.size
    model = ModelSpec(
        n_layers=s["layers"], n_heads=s["heads"], d_model=s["d"], context_length=s["ctx"],
        vocab_size=s["vocab"], vocab_multiple=64,
    )  # fmt: skip
    tflops = tokens_per_s * flops_per_token(model) / 1e12
    peak = suite.results["machine"].get("peak_tflops")
    return {"tflops": tflops, "mfu": tflops / peak if peak else None}


def machine(args) -> dict:
    import torch

    info = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "deepspeed": _version("deepspeed"),
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else platform.processor() or "cpu",
        "load_average": os.getloadavg()[0],
    }
    from orchestrator.plan.flops import peak_tflops

    known = peak_tflops(info["device"], "bf16") if args.device == "cuda" else None
    info["peak_tflops"] = args.peak_tflops or known
    return info


def _version(package: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def run_suite(suite: Suite, only: list[str]) -> None:
    out = Path(suite.args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in [m for m in MEASUREMENTS if m in only]:
        started = time.monotonic()
        try:
            result = _measure(suite, name)
        except Exception as exc:  # one failure must not cost the others' figures
            result = {"error": " ".join(str(exc).split())[-2000:]}
        result["wall_s"] = round(time.monotonic() - started, 1)
        if "tokens_per_s" in result:
            result.update(utilisation(suite, result["tokens_per_s"]))
        suite.results["measurements"][name] = result
        _write(suite, out)
        print(f"  {name}: {_one_line(result)}", flush=True)


def _measure(suite: Suite, name: str) -> dict:
    if name == "bare":
        return measure_bare(suite)
    if name == "profile":
        return measure_profile(suite)
    return measure_worker(suite, name)


def _one_line(result: dict) -> str:
    if "error" in result:
        return f"failed: {result['error'][:300]}"
    if "tokens_per_s" not in result:
        return f"{len(result.get('top', []))} operators ({result['wall_s']} s)"
    mfu = f", MFU {result['mfu']:.1%}" if result.get("mfu") is not None else ""
    rate = f"{result['tokens_per_s']:,.0f} tokens/s, {result['tflops']:.4g} TFLOP/s"
    return f"{rate}{mfu} ({result['wall_s']} s)"


def _write(suite: Suite, out: Path) -> None:
    (out / "gpu_suite.json").write_text(json.dumps(suite.results, indent=1))
    (out / "gpu_suite.md").write_text(render(suite.results) + "\n")


def render(results: dict) -> str:
    m, runs = results["machine"], results["measurements"]
    lines = [
        f"- date: {m['date']}; device: {m['device']}; torch {m['torch']} (CUDA {m['cuda']}), DeepSpeed "
        f"{m['deepspeed']}, Python {m['python']}; peak {m['peak_tflops'] or 'unknown'} TFLOP/s; "
        f"load average at the start {m['load_average']:.2f}",
        f"- {results['size']}, {results['tokens_per_step']:,} tokens per optimizer step, steps "
        f"{results['window'][0]}..{results['window'][1]} timed, compile {results['compile']}",
        "",
        "| measurement | tokens/s | TFLOP/s | MFU | / bare |",
        "|---|---:|---:|---:|---:|",
    ]
    bare = runs.get("bare", {}).get("tokens_per_s")
    for name, r in runs.items():
        if "tokens_per_s" not in r:
            continue
        mfu = f"{r['mfu']:.1%}" if r.get("mfu") is not None else "–"
        ratio = f"{r['tokens_per_s'] / bare:.3f}" if bare else "–"
        lines.append(f"| {name} | {r['tokens_per_s']:,.0f} | {r['tflops']:.4g} | {mfu} | {ratio} |")
    lines += [f"| {n} | failed: {r['error'][:200]} | | | |" for n, r in runs.items() if "error" in r]
    if "top" in runs.get("profile", {}):
        step_s = runs["profile"]["step_s"]
        lines += ["", f"One optimizer step of worker-bf16-z0 under torch.profiler ({step_s:.3f} s):", ""]
        lines += ["| operator | self time on the device (CPU without one), ms | share of the step | calls |"]
        lines += ["|---|---:|---:|---:|"]
        for row in runs["profile"]["top"]:
            lines.append(f"| `{row['name']}` | {row['ms']:.2f} | {row['share']:.1%} | {row['calls']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--size", choices=tuple(SIZES), help="default: gpt2 on cuda, tiny on cpu")
    parser.add_argument("--micro", type=int, default=None, help="micro batch (default: 32 on cuda, 4 on cpu)")
    parser.add_argument("--accum", type=int, default=4, help="gradient accumulation steps")
    parser.add_argument("--warmup", type=int, default=10, help="steps left out of the window (compilation)")
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps")
    parser.add_argument("--no-compile", action="store_true", help="eager (the CPU check)")
    parser.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak, if not in the table")
    parser.add_argument("--only", nargs="+", choices=MEASUREMENTS, default=list(MEASUREMENTS))
    parser.add_argument("--cache-dir", default="~/.cache/gpt-orchestrator", help="inductor cache and data")
    parser.add_argument("--repeats", type=int, help="copies of the corpus (more for a larger --accum)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds for one measurement")
    parser.add_argument("--out", required=True, help="directory of gpu_suite.json and gpu_suite.md")
    args = parser.parse_args()
    args.size = args.size or ("gpt2" if args.device == "cuda" else "tiny")
    args.micro = args.micro or (32 if args.device == "cuda" else 4)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device visible: run with --device cpu to check the suite's logic")
    with tempfile.TemporaryDirectory(prefix="gpu-suite-") as tmp:
        suite = _suite(args, Path(tmp))
        run_suite(suite, args.only)
    print(render(suite.results))


def _suite(args, work: Path) -> Suite:
    from benchmarks.mfu import write_corpus

    size = SIZES[args.size]
    suite = Suite(args, work, size, write_corpus(work, args.repeats or size["repeats"]))
    suite.results = {
        "machine": machine(args),
        "size": args.size,
        "tokens_per_step": args.micro * args.accum * size["ctx"],
        "window": [args.warmup, args.warmup + args.steps],
        "compile": not args.no_compile,
        "measurements": {},
    }
    return suite


if __name__ == "__main__":
    main()
