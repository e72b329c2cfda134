"""``make bench``: benchmarks 1-5 on the CPU (and the CPU check of benchmark 6) in one go, written to
``benchmarks/RESULTS.md`` with the machine, the date and the command. About 12 minutes on 2 cores.

    .venv/bin/python -m benchmarks.run_all                 # everything
    .venv/bin/python -m benchmarks.run_all --only startup report_scaling

Each benchmark runs in its own process (``python -m benchmarks.<name> --json ...``) one after the other,
so none competes with another for the CPU. The sweep figures of ``benchmarks/SWEEPS.md``
(``python -m benchmarks.sweep_overhead``, kept out of ``make bench`` for its 4 minutes) and
``benchmarks/HISTORY.md`` (before/after figures of the changes that followed these measurements) are
appended as they are.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from benchmarks.harness import REPO

RESULTS = REPO / "benchmarks" / "RESULTS.md"
HISTORY = REPO / "benchmarks" / "HISTORY.md"
SWEEPS = REPO / "benchmarks" / "SWEEPS.md"  # benchmarks/sweep_overhead.py's runs (about 4 minutes each)
# (module, extra arguments, title, what it answers)
BENCHMARKS = (
    ("overhead", [], "1-2. Orchestration and tracking overhead",
     "Steady-state tokens/s of the quickstart model (ZeRO-2 fp32, 2 ranks, eval_batches 1), four ways, "
     "interleaved round by round. Goal: submit/bare >= 0.98; tracking (worker/worker-off) costs < 1%."),
    ("startup", [], "3. Start-up: submit -> first optimizer step",
     "Tiny 2-layer model, embedded local Ray, 2 workers. Goal: < 15 s warm, no compile on the "
     "critical path."),
    ("report_scaling", [], "5. Report rebuild time by run length",
     "`build_report` (what `orchestrator report` runs). Goal: < 1 s at 100k steps on both stores, linear "
     "growth or better."),
    ("mfu", ["--cpu-check"], "6. MFU (GPT-2 124M on GPUs)",
     "GPU figures: in benchmarks/HISTORY.md (appended below) where a GPU machine ran "
     "`.venv/bin/python -m benchmarks.mfu`; below: the CPU check of the same measurement."),
)  # fmt: skip


def machine() -> str:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    )  # fmt: skip
    memory = next(
        int(line.split()[1]) // 2**20 for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )  # fmt: skip
    load = os.getloadavg()[0]
    versions = ", ".join(
        f"{name} {metadata.version(name)}" for name in ("torch", "deepspeed", "ray", "mlflow")
    )
    return (
        f"{cpu}, {os.cpu_count()} cores, {memory} GiB, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}; {versions}; load average before the run {load:.2f}"
    )


def run_one(module: str, extra: list[str], work: Path) -> tuple[object, float, str]:
    out = work / f"{module}.json"
    command = [sys.executable, "-m", f"benchmarks.{module}", *extra, "--json", str(out)]
    started = time.monotonic()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1800)
    seconds = time.monotonic() - started
    print(result.stdout, end="", flush=True)
    if result.returncode != 0:
        return None, seconds, result.stdout[-2000:] + result.stderr[-3000:]
    return json.loads(out.read_text()), seconds, ""


def section(module: str, title: str, about: str, figures, seconds: float, error: str) -> str:
    lines = [f"## {title}", "", about, ""]
    if error:
        return "\n".join([*lines, "**Failed:**", "", "```", error.strip(), "```", ""])
    rendered = importlib.import_module(f"benchmarks.{module}").render(figures)
    return "\n".join([*lines, rendered, "", f"_{seconds:.0f} s; `python -m benchmarks.{module}`._", ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = [b[0] for b in BENCHMARKS]
    parser.add_argument("--only", nargs="+", choices=names, default=names)
    parser.add_argument("--keep-json", help="a directory to keep each benchmark's figures (JSON) in")
    args = parser.parse_args()
    started, header = time.monotonic(), machine()
    date = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    sections = []
    with tempfile.TemporaryDirectory(prefix="bench-all-") as tmp:
        keep = Path(args.keep_json or tmp)
        keep.mkdir(parents=True, exist_ok=True)
        for module, extra, title, about in BENCHMARKS:
            if module in args.only:
                print(f"== {title}", flush=True)
                figures, seconds, error = run_one(module, extra, keep)
                sections.append(section(module, title, about, figures, seconds, error))
    total = time.monotonic() - started
    doc = [
        "# Benchmark results",
        "",
        f"- date: {date}",
        f"- machine: {header}",
        f"- command: `make bench` (`{' '.join(['python -m benchmarks.run_all', *sys.argv[1:]])}`), "
        f"{total / 60:.1f} minutes",
        "",
        *sections,
    ]
    if SWEEPS.exists():  # its own title dropped: a section of this file
        doc += [SWEEPS.read_text().split("\n", 1)[1].lstrip("\n")]
    if HISTORY.exists():
        doc += [HISTORY.read_text()]
    RESULTS.write_text("\n".join(doc))
    print(f"wrote {RESULTS} ({total / 60:.1f} minutes)")


if __name__ == "__main__":
    main()
