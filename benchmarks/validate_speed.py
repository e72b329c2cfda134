"""How long `orchestrator validate` takes on a valid spec, as a user runs it (a fresh process).

    .venv/bin/python benchmarks/validate_speed.py [--runs 10]

Prints the median and worst wall time of the whole command, and, side by side, of a bare
`python -c pass` start, so the command's own share is visible.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _time(argv: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, cwd=REPO, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--spec", default="configs/quickstart.yaml")
    args = parser.parse_args()
    _time([sys.executable, "-m", "orchestrator", "validate", args.spec], 1)  # warm the data cache
    bare = _time([sys.executable, "-c", "pass"], args.runs)
    validate = _time([sys.executable, "-m", "orchestrator", "validate", args.spec], args.runs)
    print(f"{'command':<40} {'median s':>9} {'max s':>7}")
    for name, times in (("python -c pass", bare), (f"orchestrator validate {args.spec}", validate)):
        print(f"{name:<40} {statistics.median(times):>9.3f} {max(times):>7.3f}")


if __name__ == "__main__":
    main()
