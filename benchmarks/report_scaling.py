"""Benchmark 5: report rebuild time at 1k, 10k, 100k and 1M logged steps, on sqlite and through a server.

Each run logs train_loss, learning_rate and epoch at every step and val_loss every 100 steps (the
report's four metrics, as in ``benchmarks/report_speed.py``: about 3 points per step). A million-step
run is 3M rows, which ``log_batch`` would need many minutes to write, so the rows are inserted with SQL
into MLflow's own ``metrics`` and ``latest_metrics`` tables (the rows ``log_batch`` writes); at 1k steps a
run logged through ``log_batch`` is rebuilt too and must give a byte-identical ``training_metrics.json``.
Through the server (a real ``mlflow server`` on a PostgreSQL store, ``tests/servers.py``) the run is
finished with the history snapshot the driver uploads, as a real run is. "report" is ``build_report``,
what ``orchestrator report`` runs, with matplotlib already imported; after one rebuild that is not
counted, the median of 3 rebuilds up to 100k steps, one above.

    .venv/bin/python -m benchmarks.report_scaling
    .venv/bin/python -m benchmarks.report_scaling --steps 1000 10000 --no-server
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import math
import os
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from benchmarks.harness import median

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

KEYS = ("train_loss", "learning_rate", "epoch", "val_loss")
Row = tuple[str, float, int, int]  # key, value, timestamp (ms), step


def rows(steps: int, start_ms: int) -> Iterator[Row]:
    """The same curves as ``benchmarks/report_speed.py``, one timestamp per step."""
    for step in range(1, steps + 1):
        ts = start_ms + step
        yield "train_loss", 8.0 / (1 + step / 1000) + 1e-3 * (step % 7), ts, step
        yield "learning_rate", 3e-3 * (1 - step / (steps + 1)), ts, step
        yield "epoch", float(1 + step * 5 // steps), ts, step
        if step % 100 == 0:
            yield "val_loss", 8.0 / (1 + step / 1000) + 0.05, ts, step


def history_of(steps: int, start_ms: int) -> dict[str, dict[int, float]]:
    history: dict[str, dict[int, float]] = {}
    for key, value, _, step in rows(steps, start_ms):
        history.setdefault(key, {})[step] = value
    return history


def new_run(uri: str, name: str) -> str:
    from orchestrator.track.mlflow_run import client

    mlflow = client(uri)
    experiment = mlflow.get_experiment_by_name("scaling")
    experiment_id = experiment.experiment_id if experiment else mlflow.create_experiment("scaling")
    return mlflow.create_run(experiment_id, run_name=name).info.run_id


def _latest(steps: int, start_ms: int) -> list[tuple]:
    last: dict[str, Row] = {}
    for row in rows(steps, start_ms):
        last[row[0]] = row
    return [(k, v, ts, s) for k, v, ts, s in last.values()]


def seed_sqlite(path: str, run_id: str, steps: int, start_ms: int) -> None:
    with sqlite3.connect(path) as db:
        db.executemany(
            "INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) VALUES (?, ?, ?, ?, ?, 0)",
            ((k, v, ts, run_id, s) for k, v, ts, s in rows(steps, start_ms)),
        )
        db.executemany(
            "INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid) "
            "VALUES (?, ?, ?, ?, 0, ?)",
            ((k, v, ts, s, run_id) for k, v, ts, s in _latest(steps, start_ms)),
        )


def seed_postgres(connect, run_id: str, steps: int, start_ms: int) -> None:
    """COPY the rows in, a million at a time."""
    connection = connect()
    try:
        with connection.cursor() as cursor:
            batch = io.StringIO()
            for count, (k, v, ts, s) in enumerate(rows(steps, start_ms), 1):
                batch.write(f"{k}\t{v!r}\t{ts}\t{run_id}\t{s}\tfalse\n")
                if count % 1_000_000 == 0:
                    _copy(cursor, batch)
                    batch = io.StringIO()
            _copy(cursor, batch)
            for k, v, ts, s in _latest(steps, start_ms):
                cursor.execute(
                    "INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid) "
                    "VALUES (%s, %s, %s, %s, false, %s)",
                    (k, v, ts, s, run_id),
                )
        connection.commit()
    finally:
        connection.close()


def _copy(cursor, batch: io.StringIO) -> None:
    batch.seek(0)
    cursor.copy_expert("COPY metrics (key, value, timestamp, run_uuid, step, is_nan) FROM STDIN", batch)


def log_through_mlflow(uri: str, run_id: str, steps: int, start_ms: int) -> None:
    from orchestrator.track.journal import MetricPoint
    from orchestrator.track.mlflow_run import MAX_METRICS_PER_BATCH, client, log_points

    points = [MetricPoint(k, v, s, ts) for k, v, ts, s in rows(steps, start_ms)]
    for start in range(0, len(points), MAX_METRICS_PER_BATCH):
        log_points(client(uri), run_id, points[start : start + MAX_METRICS_PER_BATCH])


def finish(uri: str, run_id: str, steps: int, start_ms: int) -> None:
    """What the driver does when a run ends: the history snapshot, then the final status."""
    from orchestrator.track.mlflow_run import client
    from orchestrator.track.snapshot import upload_history

    mlflow = client(uri)
    upload_history(mlflow, run_id, history_of(steps, start_ms))
    mlflow.set_terminated(run_id, "FINISHED")


def rebuild_seconds(uri: str, run_id: str, out: Path, repeats: int) -> float:
    from orchestrator.report import build_report

    build_report(uri, run_id, out)  # not counted: a server's first answers of a kind load its code
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        build_report(uri, run_id, out)
        times.append(time.perf_counter() - started)
    return median(times)


def check_seeding(uri: str, seed, work: Path, start_ms: int) -> None:
    """A run seeded with SQL reports byte for byte like one logged through MLflow."""
    from orchestrator.report import build_report

    logged, seeded = new_run(uri, "logged-1k"), new_run(uri, "seeded-1k")
    log_through_mlflow(uri, logged, 1000, start_ms)
    seed(seeded, 1000)
    for run_id in (logged, seeded):
        build_report(uri, run_id, work / run_id)
    a, b = ((work / r / "training_metrics.json").read_bytes() for r in (logged, seeded))
    if a != b:
        raise AssertionError("a run seeded with SQL does not read back like a logged one")


def measure_store(uri: str, seed, sizes: list[int], work: Path, finished: bool) -> dict[int, float]:
    start_ms = int(time.time() * 1000)
    check_seeding(uri, seed, work, start_ms)
    results = {}
    for steps in sizes:
        run_id = new_run(uri, f"steps-{steps}")
        started = time.perf_counter()
        seed(run_id, steps)
        if finished:
            finish(uri, run_id, steps, start_ms)
        seeded_s = time.perf_counter() - started
        results[steps] = rebuild_seconds(uri, run_id, work / f"report-{steps}", 3 if steps <= 100_000 else 1)
        print(f"  {steps:>9,} steps: report {results[steps]:.3f} s (seeded in {seeded_s:.0f} s)", flush=True)
    return results


def bench_sqlite(sizes: list[int], work: Path) -> dict[int, float]:
    from orchestrator.track.mlflow_run import client

    path = work / "mlflow.db"
    uri = f"sqlite:///{path}"
    client(uri).search_experiments()  # creates the store's tables
    print("sqlite store")

    def seed(run_id: str, steps: int) -> None:
        seed_sqlite(str(path), run_id, steps, int(time.time() * 1000))

    return measure_store(uri, seed, sizes, work, False)


def bench_server(sizes: list[int], work: Path) -> dict[int, float]:
    import psycopg2

    from tests.servers import MlflowServer, Postgres

    print("mlflow server on 127.0.0.1, PostgreSQL store")
    postgres, server = Postgres(), None
    try:
        postgres.start()
        server = MlflowServer(postgres.create_database("bench"), work / "artifacts", work / "server.log")
        server.start()
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "600"

        def connect():
            return psycopg2.connect(
                host="127.0.0.1", port=postgres.port, user="postgres", password=postgres.password,
                dbname="bench",
            )  # fmt: skip

        def seed(run_id: str, steps: int) -> None:
            seed_postgres(connect, run_id, steps, int(time.time() * 1000))

        return measure_store(server.url, seed, sizes, work, True)
    finally:
        if server:
            server.stop()
        postgres.stop()


def growth(results: dict[int, float]) -> list[str]:
    """Exponent k of time ~ steps**k between successive sizes: 1 is linear."""
    sizes = sorted(results)
    return [
        f"{a:,}->{b:,}: {math.log(results[b] / results[a]) / math.log(b / a):.2f}"
        for a, b in itertools.pairwise(sizes)
        if results[a] > 0
    ]


def render(results: dict[str, dict[int, float]]) -> str:
    results = {store: {int(s): t for s, t in r.items()} for store, r in results.items()}  # JSON: str keys
    sizes = sorted({s for r in results.values() for s in r})
    lines = ["| store | " + " | ".join(f"{s:,} steps" for s in sizes) + " | growth exponent |"]
    lines.append("|---|" + "---:|" * len(sizes) + "---|")
    for store, r in results.items():
        cells = " | ".join(f"{r[s]:.3f}" if s in r else "–" for s in sizes)
        lines.append(f"| {store} | {cells} | {', '.join(growth(r))} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[1_000, 10_000, 100_000, 1_000_000])
    parser.add_argument("--no-server", action="store_true", help="only the sqlite store")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot  # noqa: F401 - imported once, as in a report after the first

    with tempfile.TemporaryDirectory(prefix="report-scaling-") as tmp:
        results = {"sqlite": bench_sqlite(args.steps, Path(tmp))}
        if not args.no_server:
            results["server (PostgreSQL)"] = bench_server(args.steps, Path(tmp))
    print(render(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
