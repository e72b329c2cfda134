"""How long rebuilding a report takes for a run with 100,000 logged steps, side by side with MLflow's
own ``MlflowClient.get_metric_history``, on a local sqlite store and through a real `mlflow server`
(PostgreSQL backend, both on 127.0.0.1).

    .venv/bin/python benchmarks/report_speed.py                # sqlite and server, 100k steps
    .venv/bin/python benchmarks/report_speed.py --steps 20000 --no-server

The run logs train_loss, learning_rate and epoch at every step and val_loss every 100 steps (the
report's four metrics: about 300k points). Every figure is one measurement on this machine.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

from orchestrator.report import build_report, read_run_history
from orchestrator.report.artifacts import REPORT_METRICS, write_plots, write_tables
from orchestrator.track.journal import MetricPoint
from orchestrator.track.mlflow_read import read_latest_per_step
from orchestrator.track.mlflow_run import MAX_METRICS_PER_BATCH, client, log_points
from orchestrator.track.snapshot import upload_snapshot


def points(steps: int) -> list[MetricPoint]:
    start = int(time.time() * 1000)
    out = []
    for step in range(1, steps + 1):
        ts = start + step
        out += [
            MetricPoint("train_loss", 8.0 / (1 + step / 1000) + 1e-3 * (step % 7), step, ts),
            MetricPoint("learning_rate", 3e-3 * (1 - step / (steps + 1)), step, ts),
            MetricPoint("epoch", float(1 + step * 5 // steps), step, ts),
        ]
        if step % 100 == 0:
            out.append(MetricPoint("val_loss", 8.0 / (1 + step / 1000) + 0.05, step, ts))
    return out


def log_run(uri: str, steps: int, finish: bool = False) -> str:
    mlflow = client(uri)
    experiment_id = mlflow.create_experiment(f"bench-{time.time_ns()}")
    run_id = mlflow.create_run(experiment_id, run_name="bench").info.run_id
    all_points = points(steps)
    started = time.perf_counter()
    for start in range(0, len(all_points), MAX_METRICS_PER_BATCH):
        log_points(mlflow, run_id, all_points[start : start + MAX_METRICS_PER_BATCH])
    print(f"  logged {len(all_points):,} points in {time.perf_counter() - started:.1f} s (log_batch of 1000)")
    if finish:  # what the driver does at the end of a run: history snapshot, then the final status
        upload_snapshot(mlflow, run_id, all_points)
        mlflow.set_terminated(run_id, "FINISHED")
    return run_id


def timed(label: str, fn):
    started = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - started
    print(f"  {label:<52} {seconds:8.3f} s")
    return result, seconds


def measure(uri: str, run_id: str, out: Path, steps: int) -> dict[str, float]:
    history, read_s = timed("orchestrator read_history (4 metrics)", lambda: read_run_history(uri, run_id))
    assert len(history["train_loss"]) == steps, "every step read back"
    _, json_s = timed("  + training_metrics.json and summary.json", lambda: write_tables(history, out))
    _, png_s = timed("  + the two PNGs", lambda: write_plots(history, out))
    _, total_s = timed(
        "whole report again, end to end (build_report, as `report`)",
        lambda: build_report(uri, run_id, out),
    )
    rows_s = math.nan
    if uri.startswith("http"):
        _, rows_s = timed(
            "row by row via REST get-history (no snapshot)",
            lambda: read_latest_per_step(uri, run_id, REPORT_METRICS),
        )
    mlflow = client(uri)
    _, mlflow_one = timed(
        "MLflow get_metric_history, train_loss only", lambda: mlflow.get_metric_history(run_id, "train_loss")
    )
    _, mlflow_all = timed(
        "MLflow get_metric_history, the 4 metrics",
        lambda: [mlflow.get_metric_history(run_id, k) for k in REPORT_METRICS],
    )
    print(f"  => reading: {mlflow_all / read_s:.1f}x faster than get_metric_history (4 metrics)")
    return {
        "rows": rows_s,
        "read": read_s,
        "json": json_s,
        "png": png_s,
        "report": total_s,
        "mlflow_4": mlflow_all,
        "mlflow_1": mlflow_one,
    }


def bench_sqlite(steps: int, work: Path) -> dict[str, float]:
    print(f"sqlite store ({steps:,} steps)")
    uri = f"sqlite:///{work / 'mlflow.db'}"
    run_id = log_run(uri, steps)
    return measure(uri, run_id, work / "report-sqlite", steps)


def bench_server(steps: int, work: Path, workers: int) -> dict[str, float]:
    from tests.servers import MlflowServer, Postgres

    print(f"mlflow server on 127.0.0.1, PostgreSQL backend, {workers} worker(s) ({steps:,} steps)")
    postgres, server = Postgres(), None
    try:
        postgres.start()
        server = MlflowServer(postgres.create_database("bench"), work / "artifacts", work / "server.log")
        server.start(workers=workers)
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "600"  # MLflow's own reads take long here
        run_id = log_run(server.url, steps, finish=True)
        return measure(server.url, run_id, work / "report-server", steps)
    finally:
        if server:
            server.stop()
        postgres.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--no-server", action="store_true", help="only the sqlite store")
    parser.add_argument("--workers", type=int, default=4, help="mlflow server workers (its default: 4)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="report-speed-") as tmp:
        results = {"sqlite": bench_sqlite(args.steps, Path(tmp))}
        if not args.no_server:
            results["server"] = bench_server(args.steps, Path(tmp), args.workers)
    print()
    header = ("store", "read", "+json", "+png", "report", "REST rows", "MLflow 4 keys", "MLflow train_loss")
    print(f"{header[0]:<8} " + " ".join(f"{h:>9}" for h in header[1:6]) + f" {header[6]:>14} {header[7]:>18}")
    for store, r in results.items():
        print(
            f"{store:<8} {r['read']:9.3f} {r['json']:9.3f} {r['png']:9.3f} {r['report']:9.3f} "
            f"{r['rows']:9.3f} {r['mlflow_4']:14.3f} {r['mlflow_1']:18.3f}"
        )


if __name__ == "__main__":
    main()
