"""Data preparation at scale: `orchestrator prepare` against the raw `tokenizers` throughput, and the
memory of every process it runs (Ray's included), at two corpus sizes.

    .venv/bin/python -m benchmarks.prepare_speed --sizes-mb 100 1000 [--json OUT]

For each size, a synthetic corpus (words drawn from Python's documentation, paragraphs of 50-400
words, in 64 MB files) is written to a temporary directory; then, one after the other:

- raw: `Tokenizer.encode_batch` (batches of 1000 paragraphs, the library's own threads on every
  core) over the first 100 MB of the same text, with the tokenizer `prepare` trained: tokens/s;
- prepare: `orchestrator prepare` in a fresh process (an embedded Ray, one task per piece on each
  core), timed from start to the manifest; tokens/s with and without the tokenizer's training; the
  sum of the PSS of the command and every process under it, sampled every 0.25 s (peak), and the
  machine's available memory (lowest) against what it was before;
- Ray idle: the PSS of an embedded Ray started the same way with no work, for the baseline.

With ``--train-steps N``, a run then trains on the largest prepared dataset (`orchestrator submit`,
2 workers on the embedded Ray, a small model with the dataset's 50,257-token vocabulary): its
``data_seconds`` (the time a step waited for its batch) against its step time, from MLflow, and the
PSS of every process of the run.

The goal (issue: data at scale): prepare's tokens/s at least 0.9 of raw; all processes under 1.5 GB,
the same at 100 MB and 1 GB; a training step waits for data less than 1% of its time.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from benchmarks.harness import REPO, emit

FILE_BYTES = 64_000_000


def write_corpus(root: Path, size_mb: int, seed: int = 0) -> int:
    """Synthetic English-like text of about ``size_mb`` MB in files of 64 MB; bytes written."""
    from orchestrator.data.corpus import python_docs_text

    words = python_docs_text().split()
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    total, index = 0, 0
    target = size_mb * 1_000_000
    while total < target:
        with open(root / f"part-{index:04d}.txt", "w") as out:
            written = 0
            while written < FILE_BYTES and total + written < target:
                block = "\n\n".join(" ".join(rng.choices(words, k=rng.randint(50, 400))) for _ in range(200))
                out.write(block + "\n\n")
                written += len(block) + 2
        total += written
        index += 1
    return total


class PssSampler(threading.Thread):
    """Peak sum of PSS over a process and all its descendants; lowest available memory."""

    def __init__(self, pid: int, interval_s: float = 0.25):
        super().__init__(daemon=True)
        self.pid, self.interval_s = pid, interval_s
        self.peak_pss, self.lowest_available = 0, psutil.virtual_memory().available
        self.peak_processes = 0
        self._done = threading.Event()

    def run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self._done.is_set():
            total, count = 0, 0
            try:
                processes = [root, *root.children(recursive=True)]
            except psutil.Error:
                break
            for process in processes:
                try:
                    total += process.memory_full_info().pss
                    count += 1
                except psutil.Error:
                    continue
            self.peak_pss = max(self.peak_pss, total)
            self.peak_processes = max(self.peak_processes, count)
            self.lowest_available = min(self.lowest_available, psutil.virtual_memory().available)
            self._done.wait(self.interval_s)

    def stop(self) -> None:
        self._done.set()
        self.join(5)


def _spec(corpus: Path, prepared: Path) -> Path:
    spec = corpus.parent / "spec.yaml"
    spec.write_text(
        "name: prepare-bench\nmodel: {vocab_size: 50257, context_length: 1024}\n"
        f"data: {{corpus: files, files: ['{corpus}/*.txt'], prepared: '{prepared}'}}\n"
    )
    return spec


def run_sampled(args: list[str], cwd: Path, env: dict) -> tuple[str, float, PssSampler]:
    """An `orchestrator` command in a fresh process, the PSS of all its processes sampled meanwhile:
    (its output, its seconds, the sampler)."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    sampler = PssSampler(process.pid)
    sampler.start()
    out, _ = process.communicate()
    took = time.perf_counter() - started
    sampler.stop()
    if process.returncode != 0:
        raise RuntimeError(out[-3000:])
    return out, took, sampler


TRAIN_SPEC = """\
name: prepare-bench-train
model: {{vocab_size: 50257, context_length: 128, n_layers: 2, n_heads: 4, d_model: 128}}
data: {{corpus: files, files: ['{corpus}/*.txt'], prepared: '{prepared}'}}
train: {{epochs: 1, max_steps: {steps}, micro_batch_size: 4, log_interval: 5, eval_interval: {steps},
        eval_batches: 2, final_eval_sequences: 512}}
deepspeed: {{zero_stage: 2, precision: fp32}}
cluster: {{backend: ray-local, num_workers: 2, cpus_per_worker: 1}}
tracking: {{uri: 'sqlite:///{work}/mlflow.db', experiment: prepare-bench}}
checkpoint: {{dir: '{work}/runs'}}
report: {{artifacts: false}}
"""


def run_training(corpus: Path, prepared: Path, work: Path, steps: int) -> dict:
    """Train ``steps`` steps on the prepared dataset; data wait per step against the step time."""
    from orchestrator.track.mlflow_run import client

    spec = work / "train.yaml"
    spec.write_text(TRAIN_SPEC.format(corpus=corpus, prepared=prepared, steps=steps, work=work))
    env = {**os.environ, "PYTHONPATH": str(REPO), "ORCHESTRATOR_CACHE_DIR": str(work / "cache")}
    out, took, sampler = run_sampled(["submit", str(spec), "--progress", "off"], work, env)
    run_id = re.search(r"MLflow run (\w+)\)", out).group(1)
    mlflow = client(f"sqlite:///{work}/mlflow.db")

    def history(key: str) -> list[float]:
        points = sorted(mlflow.get_metric_history(run_id, key), key=lambda m: m.step)
        return [m.value for m in points[1:]]  # the first window holds the start-up

    tokens_per_step = 2 * 4 * 128
    step_s = [tokens_per_step / rate for rate in history("tokens_per_second")]
    data_s = history("data_seconds")
    return {
        "steps": steps,
        "seconds": took,
        "mean_step_s": sum(step_s) / len(step_s),
        "mean_data_s": sum(data_s) / len(data_s),
        "data_fraction": sum(data_s) / sum(step_s),
        "peak_pss_mb": sampler.peak_pss / 2**20,
        "final_val_loss": mlflow.get_run(run_id).data.metrics.get("final_val_loss"),
    }


def run_prepare(spec: Path, cwd: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "ORCHESTRATOR_CACHE_DIR": str(cwd / "cache")}
    available_before = psutil.virtual_memory().available
    out, took, sampler = run_sampled(["prepare", str(spec)], cwd, env)
    tokens = int(re.search(r"([\d,]+) tokens in \d+ shards", out).group(1).replace(",", ""))
    trained = re.search(r"trained on ([\d.]+) MB of text in ([\d.]+)s", out)
    training_s = float(trained.group(2)) if trained else 0.0
    return {
        "seconds": took,
        "tokens": tokens,
        "tokens_per_s": tokens / took,
        "tokens_per_s_without_training": tokens / max(took - training_s, 1e-9),
        "tokenizer_training_s": training_s,
        "peak_pss_mb": sampler.peak_pss / 2**20,
        "processes": sampler.peak_processes,
        "available_drop_mb": (available_before - sampler.lowest_available) / 2**20,
        "log_tail": out.strip().splitlines()[-3:],
    }


def raw_throughput(corpus: Path, tokenizer_json: Path, limit_bytes: int = 100_000_000) -> dict:
    """encode_batch over the first ``limit_bytes`` of the corpus, in this process, all cores."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    paragraphs, size = [], 0
    for path in sorted(corpus.glob("*.txt")):
        for paragraph in path.read_text().split("\n\n"):
            if paragraph.strip():
                paragraphs.append(paragraph)
                size += len(paragraph)
            if size >= limit_bytes:
                break
        if size >= limit_bytes:
            break
    started, tokens = time.perf_counter(), 0
    for start in range(0, len(paragraphs), 1000):
        tokens += sum(len(e.ids) for e in tokenizer.encode_batch(paragraphs[start : start + 1000]))
    took = time.perf_counter() - started
    return {"bytes": size, "tokens": tokens, "seconds": took, "tokens_per_s": tokens / took}


def ray_idle_pss() -> float:
    """MB of PSS of an embedded Ray (no dashboard) with one idle task worker, as prepare starts it."""
    code = (
        "import os, time, ray; os.environ['RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER']='0';"
        "ray.init(num_cpus=os.cpu_count(), _node_ip_address='127.0.0.1', include_dashboard=False,"
        " logging_level='WARNING');"
        "ray.get(ray.remote(num_cpus=1)(lambda: 1).remote()); print('up', flush=True); time.sleep(6)"
    )
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    process.stdout.readline()
    sampler = PssSampler(process.pid)
    sampler.start()
    time.sleep(4)
    sampler.stop()
    process.wait(60)
    return sampler.peak_pss / 2**20


def measure(size_mb: int, work: Path) -> dict:
    corpus = work / f"corpus-{size_mb}"
    written = write_corpus(corpus, size_mb)
    prepared = work / f"prepared-{size_mb}"
    result = {"size_mb": size_mb, "bytes": written, "prepare": run_prepare(_spec(corpus, prepared), work)}
    tokenizer = next(prepared.rglob("builds/*/tokenizer.json"))
    result["raw"] = raw_throughput(corpus, tokenizer)
    result["ratio"] = result["prepare"]["tokens_per_s"] / result["raw"]["tokens_per_s"]
    result["ratio_without_training"] = (
        result["prepare"]["tokens_per_s_without_training"] / result["raw"]["tokens_per_s"]
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes-mb", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--json")
    parser.add_argument("--keep", help="keep the corpora and prepared data in this directory")
    parser.add_argument("--train-steps", type=int, default=0, help="then train this many steps")
    args = parser.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="prepare-bench-"))
    results = {"ray_idle_pss_mb": ray_idle_pss(), "sizes": [measure(size, work) for size in args.sizes_mb]}
    if args.train_steps:
        size = max(args.sizes_mb)
        corpus, prepared = work / f"corpus-{size}", work / f"prepared-{size}"
        results["training"] = run_training(corpus, prepared, work, args.train_steps)
    emit(results, args.json)


if __name__ == "__main__":
    main()
