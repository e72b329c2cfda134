"""The orchestrator's worker under ``torch.distributed.run`` with its tracking on or off.

``on``: the sinks a run has (the journal, with the tracking child process that sends MLflow and draws
the live report; the status file), each wrapped in a timer; ``off``: none. Both add a clock on rank 0
that records the wall time of every logging step. Rank 0 writes the clock and the time spent in each
sink's ``write`` to ``--out`` (JSON); the child's CPU time shows up in ``benchmarks/overhead.py``'s
sampling of every process.

    python -m torch.distributed.run --nproc_per_node 2 benchmarks/worker_entry.py PLAN.pkl \
        --tracking on --out result.json
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class StepClock:
    """Wall time (seconds since the epoch, like MLflow's timestamps) of every logging step."""

    def __init__(self):
        self.times: dict[int, float] = {}

    def write(self, events) -> None:
        if events:
            self.times[max(e.step for e in events)] = time.time()

    def close(self) -> None:
        pass


class TimedSink:
    """A sink with the time its ``write`` calls took (on this rank's critical path)."""

    def __init__(self, sink):
        self.sink = sink
        self.name = type(getattr(sink, "sink", sink)).__name__
        self.seconds, self.calls, self.slowest = 0.0, 0, 0.0

    def write(self, events) -> None:
        started = time.perf_counter()
        self.sink.write(events)
        took = time.perf_counter() - started
        self.seconds, self.calls, self.slowest = self.seconds + took, self.calls + 1, max(self.slowest, took)

    def close(self) -> None:
        self.sink.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("plan")
    parser.add_argument("--tracking", choices=("on", "off"), required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    plan = pickle.loads(Path(args.plan).read_bytes())
    from orchestrator.track.pipeline import MetricsPipeline, open_sinks
    from orchestrator.train.worker import train_worker

    clock, timed = StepClock(), []

    def make_sinks(plan, rank: int, resumed: bool) -> MetricsPipeline:
        if args.tracking == "on":
            timed.extend(TimedSink(sink) for sink in open_sinks(plan, rank, resumed).sinks)
        return MetricsPipeline(([clock] if rank == 0 else []) + timed)

    train_worker(plan, make_sinks)
    if int(os.environ.get("RANK", "0")) == 0:
        sinks = {t.name: {"seconds": t.seconds, "calls": t.calls, "slowest": t.slowest} for t in timed}
        result = {"times": clock.times, "sinks": sinks}
        Path(args.out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
