"""Where a worker's start-up goes: wall-clock marks from its process start to its first optimizer step.

Every rank takes each mark once (the first call wins). Rank 0 prints them after its first step, and
the status file carries them (``"startup"``), so the seconds between ``submit`` and the first step can
be accounted for (``benchmarks/startup.py`` adds the driver's side):

    process_start  the worker process exists (a Ray worker may have been started before the run)
    entry          the launcher called the training function
    imports        torch, DeepSpeed and the worker's modules are imported
    process_group  DeepSpeed's communication is set up
    engine         the model is built and wrapped by ``deepspeed.initialize``
    ready          the latest checkpoint is restored (if any) and the sinks are open
    first_step     the first optimizer step is done

>>> describe({"entry": 10.0, "imports": 12.5, "engine": 13.0, "first_step": 13.5})
'3.5 s from entry to the first step: imports 2.5 s, engine 0.5 s, first step 0.5 s'
"""

from __future__ import annotations

import itertools
import os
import time

PHASES = ("process_start", "entry", "imports", "process_group", "engine", "ready", "first_step")
_marks: dict[str, float] = {}


def mark(name: str) -> None:
    _marks.setdefault(name, time.time())


def startup_marks() -> dict[str, float]:
    """This process's marks (seconds since the epoch), in phase order."""
    found = {"process_start": process_start_time(), **_marks}
    return {name: found[name] for name in PHASES if found.get(name) is not None}


def process_start_time() -> float | None:
    """When this process started (Linux /proc, to 10 ms; None elsewhere)."""
    try:
        with open("/proc/self/stat") as handle:
            started_ticks = int(handle.read().rpartition(")")[2].split()[19])
        with open("/proc/uptime") as handle:
            uptime = float(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return time.time() - (uptime - started_ticks / os.sysconf("SC_CLK_TCK"))


def describe(marks: dict[str, float]) -> str:
    """One line: the seconds from the first mark to the last, phase by phase."""
    names = [name for name in PHASES if name in marks]
    if len(names) < 2:
        return "no start-up marks"
    steps = [
        f"{name.replace('_', ' ')} {marks[name] - marks[previous]:.1f} s"
        for previous, name in itertools.pairwise(names)
    ]
    first, last = names[0].replace("_", " "), names[-1].replace("_", " ")
    return f"{marks[names[-1]] - marks[names[0]]:.1f} s from {first} to the {last}: " + ", ".join(steps)
