"""What the benchmarks share: the environment of training processes, torchrun commands, a sampler of
the CPU time every process of a run used, and statistics over repeated measurements."""

from __future__ import annotations

import json
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def training_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a Ray worker of the orchestrator gets on CPU (one thread per rank), for every
    side of a comparison alike."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "DS_ACCELERATOR": "cpu",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
    }
    return {**env, **(extra or {})}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(script: Path, *args: str, nproc: int = 2) -> list[str]:
    return [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(script), *args,
    ]  # fmt: skip


def plan_for(
    spec, work: Path, run_name: str | None = None, tracking: bool = True, checkpoint_uri: str | None = None
):
    """A run's plan in ``work``: its data prepared (in this process), its own directory and, with
    ``tracking``, an MLflow run (off: no run, for a machine without MLflow); ``checkpoint_uri``: its
    checkpoints elsewhere (an s3:// prefix)."""
    from orchestrator.lifecycle import prepare_data
    from orchestrator.plan import RunIdentity, build_plan, resolve_tracking_uri

    data = prepare_data(spec, work, say=lambda _: None)
    name = run_name or spec.name
    run_dir = str(work / "checkpoints" / name)
    tracking_uri = resolve_tracking_uri(spec.tracking.uri, work)
    identity = RunIdentity(name, run_dir, checkpoint_uri or run_dir, tracking_uri)
    plan = build_plan(spec, data, identity, work)
    Path(plan.checkpoint_dir).mkdir(parents=True)
    if not tracking:
        return plan
    from orchestrator.track.mlflow_run import create_run

    return plan.with_run_id(create_run(plan))


def flat_tokens(plan, path: Path) -> Path:
    """The run's prepared tokens (train shards, then validation) as one plain uint16 file, for loops
    that import nothing of the orchestrator."""
    import numpy as np

    from orchestrator.data.prepare import read_manifest
    from orchestrator.data.shards import open_tokens
    from orchestrator.storage.store import open_store

    store = open_store(plan.data.dataset_uri)
    manifest = read_manifest(store)
    shards = [*manifest.shards_of("train"), *manifest.shards_of("val")]
    np.concatenate([open_tokens(store.local_path(s.name)) for s in shards]).astype(np.uint16).tofile(path)
    return path


def run_checked(command: list[str], cwd: Path, env: dict[str, str], log: Path, timeout: float = 900) -> None:
    """Run to the end with output in ``log``; fail with its tail if the command failed."""
    with open(log, "w") as out:
        code = subprocess.run(
            command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout
        )
    if code.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"{' '.join(command[:6])}... failed ({code.returncode}):\n{tail}")


@dataclass
class CpuSamples:
    """Cumulative CPU seconds of every process under one root, sampled over time."""

    times: list[float] = field(default_factory=list)
    cpu: list[dict[int, float]] = field(default_factory=list)
    names: dict[int, str] = field(default_factory=dict)

    def used_between(self, start: float, end: float) -> dict[int, float]:
        """CPU seconds each process used between the samples nearest to ``start`` and ``end``."""
        if len(self.times) < 2:
            return {}
        first = min(range(len(self.times)), key=lambda i: abs(self.times[i] - start))
        last = min(range(len(self.times)), key=lambda i: abs(self.times[i] - end))
        before, after = self.cpu[first], self.cpu[last]
        return {pid: after[pid] - before.get(pid, 0.0) for pid in after}


class CpuSampler(threading.Thread):
    """Samples, once a second, the CPU time of a process and all its descendants (Linux /proc)."""

    def __init__(self, root_pid: int, interval_s: float = 1.0):
        super().__init__(name="cpu-sampler", daemon=True)
        self.root, self.interval_s, self.samples = root_pid, interval_s, CpuSamples()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self._sample()
            self._stop_event.wait(self.interval_s)

    def stop(self) -> CpuSamples:
        self._stop_event.set()
        self.join()
        return self.samples

    def _sample(self) -> None:
        parents, cpu = {}, {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    fields = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()
                except OSError:
                    continue
                parents[int(entry)] = int(fields[1])
                cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / CLOCK_TICK
        tree, grew = {self.root}, True
        while grew:
            new = {pid for pid, parent in parents.items() if parent in tree} - tree
            tree |= new
            grew = bool(new)
        for pid in tree:  # every time: Ray workers rename themselves (ray::RayTrainWorker, ...)
            name = _process_name(pid)
            if name != "?" or pid not in self.samples.names:
                self.samples.names[pid] = name
        self.samples.times.append(time.time())
        self.samples.cpu.append({pid: cpu[pid] for pid in tree if pid in cpu})


def _process_name(pid: int) -> str:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "?"
    if not command:
        return "?"
    command = re.sub(r"\S*/(site-packages|bin)/", "", command)
    command = re.sub(r"\s--?[\w-]+=/\S*", "", command)  # options naming this machine's directories
    return command.strip()[:90]


def describe_cpu(used: dict[int, float], names: dict[int, str], ranks: int, seconds: float) -> dict:
    """Split a window's CPU time into the ranks (the ``ranks`` busiest processes) and the rest."""
    order = sorted(used, key=used.get, reverse=True)
    rest = order[ranks:]
    top = [(names.get(pid, "?"), round(used[pid], 2)) for pid in rest[:5] if used[pid] >= 0.05]
    return {
        "ranks_cpu_s": round(sum(used[p] for p in order[:ranks]), 2),
        "others_cpu_s": round(sum(used[p] for p in rest), 2),
        "window_s": round(seconds, 2),
        "top_others": top,
    }


def spread(values: list[float]) -> str:
    """`median (min-max)` of repeated measurements."""
    if not values:
        return "n/a"
    return f"{statistics.median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})"


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def emit(results, json_path: str | None) -> None:
    """Print the results as JSON, and write them to ``json_path`` when one is given."""
    text = json.dumps(results, indent=1)
    if json_path:
        Path(json_path).write_text(text)
    print(text)
