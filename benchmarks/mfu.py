"""Benchmark 6: tokens/s and model FLOPs utilisation (MFU) of GPT-2 124M on GPUs, through the worker.

GPT-2 small (12 layers, 12 heads, d_model 768, context 1024, vocabulary 50,304, tied embedding), bf16,
ZeRO-2 (``--stage 1`` for ZeRO-1), trained by the orchestrator's own worker under
``torch.distributed.run`` (one rank per GPU, tracking on) on the built-in corpus repeated 20 times
(enough tokens that no epoch ends inside the timed steps). Throughput is measured over steps
FIRST..LAST from rank 0's clock; FLOPs per token are ``6 N + 12 L d T`` (``orchestrator/plan/flops.py``,
which the worker's mfu metric uses too: N the weights a token multiplies with, the tied embedding
once as the head, without the position table; L layers, d model width, T context), compared with
the GPUs' dense bf16 peak (H100 and H200 SXM: 989 TFLOP/s; ``--peak-tflops`` for other cards).

    .venv/bin/python -m benchmarks.mfu                        # every visible GPU
    .venv/bin/python -m benchmarks.mfu --compile --micro 32 --accum 2
    .venv/bin/python -m benchmarks.mfu --cpu-check            # no GPU: the checks below, at a tiny size

``--cpu-check`` checks the FLOPs formula against PyTorch's own FLOP counter (GPT-2 124M on the meta
device) and runs the same measurement end to end at a tiny size on 2 CPU ranks.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchmarks.harness import REPO, plan_for, run_checked, torchrun, training_env
from orchestrator.plan.flops import flops_per_token

SPEC = """\
name: mfu
model: {{n_layers: {layers}, n_heads: {heads}, d_model: {d}, context_length: {ctx}, vocab_size: {vocab},
        compile: {compile}}}
data: {{corpus: files, files: [{corpus}]}}
optimizer: {{lr: 6.0e-4, betas: [0.9, 0.95], weight_decay: 0.1, grad_clip: 1.0}}
schedule: {{warmup_steps: 10, min_lr: 6.0e-5}}
train: {{epochs: 100, max_steps: {steps}, micro_batch_size: {micro}, gradient_accumulation_steps: {accum},
        log_interval: 10, eval_interval: 1000, eval_batches: 1}}
deepspeed: {{zero_stage: {stage}, precision: bf16}}
cluster: {{backend: ray-local, num_workers: {ranks}, gpus_per_worker: {gpus}}}
"""
GPT2 = {"layers": 12, "heads": 12, "d": 768, "ctx": 1024, "vocab": 50304}
TINY = {"layers": 2, "heads": 2, "d": 64, "ctx": 64, "vocab": 512}


@dataclass(frozen=True)
class Run:
    size: dict
    ranks: int
    gpus: int
    micro: int
    accum: int
    stage: int
    compile: bool
    first: int = 10
    last: int = 50


def counted_flops_per_token(size: dict, batch: int = 1) -> tuple[float, float]:
    """(formula, PyTorch's FlopCounterMode) for one forward + backward, per token, on the meta device."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from orchestrator.train.model import GPT

    with torch.device("meta"):
        model = GPT(size["vocab"], size["ctx"], size["d"], size["layers"], size["heads"])
        idx = torch.zeros(batch, size["ctx"], dtype=torch.long)
    counter = FlopCounterMode(display=False)
    with counter:
        logits = model(idx)
        logits.float().sum().backward()
    counted = counter.get_total_flops() / (batch * size["ctx"])
    return flops_per_token(_model_spec(size)), counted


def _model_spec(size: dict):
    from orchestrator.spec.models import ModelSpec

    return ModelSpec(
        n_layers=size["layers"], n_heads=size["heads"], d_model=size["d"], context_length=size["ctx"],
        vocab_size=size["vocab"],
    )  # fmt: skip


def write_corpus(work: Path, repeats: int) -> Path:
    from orchestrator.data.corpus import load_corpus

    path = work / "corpus.txt"
    path.write_text("\n\n".join([load_corpus("python-docs")] * repeats))
    return path


def plan_run(run: Run, work: Path, corpus: Path, tracking: bool = True):
    """``tracking``: an MLflow run for it (off: no run, for a GPU machine without MLflow)."""
    from orchestrator.spec import parse_spec

    text = SPEC.format(
        **run.size, corpus=corpus, steps=run.last, micro=run.micro, accum=run.accum, stage=run.stage,
        ranks=run.ranks, gpus=run.gpus, compile=str(run.compile).lower(),
    )  # fmt: skip
    return plan_for(parse_spec(text), work, tracking=tracking)


def measure(run: Run, work: Path, corpus: Path, peak_tflops: float | None, tracking: bool = True) -> dict:
    plan = plan_run(run, work, corpus, tracking)
    (work / "plan.pkl").write_bytes(pickle.dumps(plan))
    env = training_env() if run.gpus == 0 else {**training_env(), "DS_ACCELERATOR": "cuda"}
    out = work / "result.json"
    script = REPO / "benchmarks" / "worker_entry.py"
    sinks = ("--tracking", "on" if tracking else "off")
    command = torchrun(script, str(work / "plan.pkl"), *sinks, "--out", str(out), nproc=run.ranks)
    run_checked(command, work, env, work / "worker.log", timeout=1800)
    times = {int(k): v for k, v in json.loads(out.read_text())["times"].items()}
    tokens_per_s = (run.last - run.first) * plan.tokens_per_step / (times[run.last] - times[run.first])
    per_token = plan.flops_per_token  # the worker's mfu metric uses the same (orchestrator/plan/flops.py)
    achieved = tokens_per_s * per_token / 1e12
    devices = max(run.gpus * run.ranks, 1)
    return {
        "tokens_per_s": tokens_per_s,
        "flops_per_token": per_token,
        "achieved_tflops": achieved,
        "mfu": achieved / (devices * peak_tflops) if peak_tflops else None,
        "devices": devices,
        "tokens_per_step": plan.tokens_per_step,
    }


def gpu_peak(explicit: float | None) -> float:
    import torch

    if explicit:
        return explicit
    from orchestrator.plan.flops import peak_tflops

    name = torch.cuda.get_device_name(0)
    peak = peak_tflops(name, "bf16")  # the table the worker's mfu metric uses
    if peak:
        return peak
    raise SystemExit(f"unknown GPU {name!r}: pass --peak-tflops (its dense bf16 peak)")


def cpu_check(work: Path) -> dict:
    formula, counted = counted_flops_per_token(GPT2)
    print(f"GPT-2 124M FLOPs/token: formula {formula / 1e6:.1f}M, FlopCounterMode {counted / 1e6:.1f}M")
    corpus = write_corpus(work, 1)
    run = Run(TINY, ranks=2, gpus=0, micro=4, accum=1, stage=2, compile=False, first=10, last=40)
    result = measure(run, work, corpus, None)
    print(
        f"tiny model on 2 CPU ranks: {result['tokens_per_s']:,.0f} tokens/s, "
        f"{result['achieved_tflops'] * 1e3:.2f} GFLOP/s achieved"
    )
    return {"formula_flops_per_token": formula, "counted_flops_per_token": counted, "tiny_cpu": result}


def render(result: dict) -> str:
    if "tiny_cpu" in result:
        tiny = result["tiny_cpu"]
        return "\n".join([
            "| check | figure |",
            "|---|---:|",
            f"| GPT-2 124M FLOPs/token, 6N + 12 L d T | {result['formula_flops_per_token'] / 1e6:,.1f}M |",
            f"| GPT-2 124M FLOPs/token, PyTorch FlopCounterMode (fwd + bwd) | "
            f"{result['counted_flops_per_token'] / 1e6:,.1f}M |",
            f"| tiny model, 2 CPU ranks, bf16 ZeRO-2: tokens/s | {tiny['tokens_per_s']:,.0f} |",
            f"| ... achieved GFLOP/s | {tiny['achieved_tflops'] * 1e3:,.2f} |",
        ])  # fmt: skip
    return (
        f"{result['devices']} GPU(s): {result['tokens_per_s']:,.0f} tokens/s, "
        f"{result['achieved_tflops']:.1f} TFLOP/s, MFU {result['mfu']:.1%}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cpu-check", action="store_true", help="no GPU: check the measurement at a tiny size"
    )
    parser.add_argument("--gpus", type=int, default=None, help="default: every visible GPU")
    parser.add_argument("--micro", type=int, default=16, help="micro batch per GPU")
    parser.add_argument("--accum", type=int, default=4, help="gradient accumulation steps")
    parser.add_argument("--stage", type=int, choices=(1, 2), default=2, help="ZeRO stage")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--peak-tflops", type=float, help="dense bf16 peak of one GPU")
    parser.add_argument(
        "--tracking", choices=("on", "off"), default="on",
        help="off: no MLflow run and no sinks (a GPU machine without MLflow installed)",
    )  # fmt: skip
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-mfu-") as tmp:
        os.environ.setdefault("ORCHESTRATOR_CACHE_DIR", str(Path(tmp) / "cache"))
        if args.cpu_check:
            result = cpu_check(Path(tmp))
        else:
            import torch

            gpus = args.gpus or torch.cuda.device_count()
            if gpus < 1:
                raise SystemExit("no CUDA GPU visible: run with --cpu-check on a machine without one")
            run = Run(GPT2, gpus, 1, args.micro, args.accum, args.stage, args.compile)
            corpus, peak = write_corpus(Path(tmp), 20), gpu_peak(args.peak_tflops)
            result = measure(run, Path(tmp), corpus, peak, args.tracking == "on")
            print(
                f"GPT-2 124M, {gpus} GPU(s), ZeRO-{args.stage} bf16, micro {args.micro} x accum "
                f"{args.accum}, tracking {args.tracking}: {result['tokens_per_s']:,.0f} tokens/s, "
                f"{result['achieved_tflops']:.1f} TFLOP/s, MFU {result['mfu']:.1%}"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
