"""Fast reads of a run's metric rows, by store kind.

``MlflowClient.get_metric_history`` builds one entity per row and needs seconds for 100k points. So:
- ``sqlite:///``: read-only SQL on the store file (MLflow's ``metrics`` table), sorted by SQLite;
- ``http(s)://`` (a tracking server): the REST history endpoint, one request per key, keys in parallel;
- anything else: MLflow's store API, page by page.

Rows come back as MLflow stores them: SQL stores keep NaN as ``is_nan`` and clamp +-inf to
+-``sys.float_info.max``; ``unclamp`` turns those back into infinities.
"""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
import sys
from concurrent.futures import ThreadPoolExecutor

from orchestrator.errors import TrackingError
from orchestrator.jsonfloat import decode_float
from orchestrator.masking import mask_uri_passwords
from orchestrator.track.mlflow_run import mlflow_uri

# (step, timestamp, value): plain tuples, because a run can have millions of rows
MetricRow = tuple[int, int, float]
MetricRows = dict[str, list[MetricRow]]
LARGEST = sys.float_info.max


def unclamp(value: float) -> float:
    """MLflow's SQL stores write inf as the largest float: no loss is ever that large, so it is inf."""
    if value == LARGEST:
        return math.inf
    if value == -LARGEST:
        return -math.inf
    return value


def read_latest_per_step(tracking_uri: str, run_id: str, keys) -> dict[str, dict[int, float]]:
    """{key: {step: value}}, one value per step by MLflow's "latest" rule: the newest timestamp wins
    (on a tie the larger value). SQL stores return rows by timestamp, not by step: sorted here."""
    keys = list(keys)
    if tracking_uri.startswith("sqlite:///"):
        return _latest_sqlite(tracking_uri.removeprefix("sqlite:///"), run_id, keys)
    rows = read_metric_rows(tracking_uri, run_id, keys)
    return {key: _latest(rows[key]) for key in keys if key in rows}


def read_metric_rows(tracking_uri: str, run_id: str, keys) -> MetricRows:
    """Every stored row of each key, in no particular order."""
    keys = list(keys)
    if tracking_uri.startswith("sqlite:///"):
        return _rows_sqlite(tracking_uri.removeprefix("sqlite:///"), run_id, keys)
    if tracking_uri.startswith(("http://", "https://")):
        with ThreadPoolExecutor(max_workers=max(1, len(keys))) as pool:
            results = pool.map(lambda k: _read_rest(tracking_uri, run_id, k), keys)
            return {k: rows for k, rows in zip(keys, results, strict=True) if rows}
    return {k: rows for k in keys if (rows := _read_store(tracking_uri, run_id, k))}


def _latest(rows: list[MetricRow]) -> dict[int, float]:
    rows.sort(key=_row_order)
    return {step: value for step, _, value in rows}


def _row_order(row: MetricRow) -> tuple[int, int, float]:
    step, timestamp, value = row
    return step, timestamp, -math.inf if math.isnan(value) else value


def _connect(path: str):
    return contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True))


def _latest_sqlite(path: str, run_id: str, keys: list[str]) -> dict[str, dict[int, float]]:
    query = (
        "SELECT step, value, is_nan FROM metrics WHERE run_uuid = ? AND key = ? "
        "ORDER BY step, timestamp, is_nan DESC, value"
    )
    history: dict[str, dict[int, float]] = {}
    with _connect(path) as db:
        for key in keys:
            values: dict[int, float] = {}
            for step, value, is_nan in db.execute(query, (run_id, key)):
                values[step] = (
                    math.nan if is_nan else (value if -LARGEST < value < LARGEST else unclamp(value))
                )
            if values:
                history[key] = values
    return history


def _rows_sqlite(path: str, run_id: str, keys: list[str]) -> MetricRows:
    marks = ",".join("?" * len(keys))
    query = f"SELECT key, step, timestamp, value, is_nan FROM metrics WHERE run_uuid = ? AND key IN ({marks})"
    rows: MetricRows = {}
    with _connect(path) as db:
        for key, step, timestamp, value, is_nan in db.execute(query, [run_id, *keys]):
            rows.setdefault(key, []).append((step, timestamp, math.nan if is_nan else unclamp(value)))
    return rows


def _read_rest(tracking_uri: str, run_id: str, key: str) -> list[MetricRow]:
    """GET metrics/get-history, 25k rows a page (a page per request keeps each under the timeout)."""
    import requests

    url = mlflow_uri(tracking_uri).rstrip("/") + "/api/2.0/mlflow/metrics/get-history"
    rows: list[MetricRow] = []
    params = {"run_id": run_id, "metric_key": key, "max_results": 25_000}
    with requests.Session() as session:
        while True:
            response = session.get(url, params=params, auth=_basic_auth(), timeout=_timeout())
            if response.status_code != 200:
                shown = mask_uri_passwords(url)
                raise TrackingError(f"{shown} answered {response.status_code}: {response.text[:300]}")
            body = response.json()
            rows += [_rest_row(m) for m in body.get("metrics", [])]
            token = body.get("next_page_token")
            if not token:
                return rows
            params["page_token"] = token


def _rest_row(metric: dict) -> MetricRow:
    value = decode_float(metric.get("value", 0.0))  # protobuf JSON: NaN arrives as "NaN"
    return int(metric.get("step", 0)), int(metric.get("timestamp", 0)), unclamp(value)


def _basic_auth():
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    return (user, password) if user and password else None


def _timeout() -> float:
    return float(os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", "120"))


def _read_store(tracking_uri: str, run_id: str, key: str) -> list[MetricRow]:
    from mlflow.tracking._tracking_service.utils import _get_store

    store, rows, token = _get_store(mlflow_uri(tracking_uri)), [], None
    while True:
        page = store.get_metric_history(run_id, key, max_results=25_000, page_token=token)
        rows += [(m.step, m.timestamp, unclamp(m.value)) for m in page]
        token = getattr(page, "token", None)
        if not token:
            return rows
