"""``orchestrator submit`` with the wall time of each driver phase recorded (for ``benchmarks/startup.py``).

Runs the real command-line entry point in this process after wrapping the library functions it calls
(spec loading, planning and data preparation, the MLflow run, Ray start, placement, the Ray Train
trainer, ``fit``, finishing the MLflow run) with timers; nothing else changes. The marks (seconds since
the epoch) go to the JSON file named by ``STARTUP_MARKS_FILE``.

    STARTUP_MARKS_FILE=marks.json python benchmarks/timed_submit.py submit spec.yaml --progress off
"""

from __future__ import annotations

import time

MARKS: dict[str, float] = {"python_up": time.time()}

import functools  # noqa: E402 - the first mark is taken before anything is imported
import importlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def timed(label: str, function):
    """The first call's start and the last call's end (``submit`` plans twice: before and after
    the data is prepared)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        MARKS.setdefault(f"{label}_start", time.time())
        try:
            return function(*args, **kwargs)
        finally:
            MARKS[f"{label}_end"] = time.time()

    return wrapper


def wrap(module_name: str, attribute: str, label: str) -> None:
    module = importlib.import_module(module_name)
    setattr(module, attribute, timed(label, getattr(module, attribute)))


def _trainer_with_timed_fit(build):
    def wrapper(plan, *args, **kwargs):
        trainer = build(plan, *args, **kwargs)
        trainer.fit = timed("fit", trainer.fit)
        return trainer

    return wrapper


def _connect_then_time_shutdown(connect):
    def wrapper(plan, address):
        connect(plan, address)
        import ray

        ray.shutdown = timed("ray_shutdown", ray.shutdown)

    return wrapper


def main() -> int:
    from orchestrator.cli import main as cli_main

    MARKS["cli_imported"] = time.time()
    wrap("orchestrator.spec", "load_spec", "load_spec")
    wrap("orchestrator.lifecycle.run", "build_plan", "build_plan")
    wrap("orchestrator.lifecycle", "prepare_data", "data")
    wrap("orchestrator.track.mlflow_run", "create_run", "mlflow_run")
    wrap("orchestrator.track.finish", "finish_run", "finish_run")
    ray_local = importlib.import_module("launchers.ray_local")
    ray_local.connect = timed("ray_start", _connect_then_time_shutdown(ray_local.connect))
    wrap("launchers.ray_local", "wait_for_placement", "placement")
    ray_local._trainer = timed("trainer", _trainer_with_timed_fit(ray_local._trainer))
    try:
        return cli_main(sys.argv[1:])
    finally:
        MARKS["end"] = time.time()
        Path(os.environ["STARTUP_MARKS_FILE"]).write_text(json.dumps(MARKS))


if __name__ == "__main__":
    sys.exit(main())
