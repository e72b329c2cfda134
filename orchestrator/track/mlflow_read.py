"""Fast reads of a run's metric rows, by store kind.

``MlflowClient.get_metric_history`` builds one entity per row and needs seconds for 100k points. So:
- ``sqlite:///``: one read-only SQL query on the store file (MLflow's ``metrics`` table);
- ``http(s)://`` (a tracking server): the REST history endpoint, one request per key, keys in parallel;
- anything else: MLflow's store API, page by page.

Rows come back as MLflow stores them: SQL stores keep NaN as ``is_nan`` and clamp +-inf to
+-``sys.float_info.max``; ``unclamp`` turns those back into infinities.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from orchestrator.jsonfloat import decode_float

# name -> rows
MetricRows = dict[str, list["MetricRow"]]


@dataclass(frozen=True)
class MetricRow:
    step: int
    timestamp: int
    value: float


def unclamp(value: float) -> float:
    """MLflow's SQL stores write inf as the largest float: no loss is ever that large, so it is inf."""
    if value == sys.float_info.max:
        return float("inf")
    if value == -sys.float_info.max:
        return float("-inf")
    return value


def read_metric_rows(tracking_uri: str, run_id: str, keys) -> MetricRows:
    keys = list(keys)
    if tracking_uri.startswith("sqlite:///"):
        return _read_sqlite(tracking_uri.removeprefix("sqlite:///"), run_id, keys)
    if tracking_uri.startswith(("http://", "https://")):
        with ThreadPoolExecutor(max_workers=max(1, len(keys))) as pool:
            results = pool.map(lambda k: _read_rest(tracking_uri, run_id, k), keys)
            return {k: rows for k, rows in zip(keys, results, strict=True) if rows}
    return {k: rows for k in keys if (rows := _read_store(tracking_uri, run_id, k))}


def _read_sqlite(path: str, run_id: str, keys: list[str]) -> MetricRows:
    marks = ",".join("?" * len(keys))
    query = f"SELECT key, step, timestamp, value, is_nan FROM metrics WHERE run_uuid = ? AND key IN ({marks})"
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        cursor = db.execute(query, [run_id, *keys])
        rows: MetricRows = {}
        for key, step, timestamp, value, is_nan in cursor:
            value = float("nan") if is_nan else unclamp(float(value))
            rows.setdefault(key, []).append(MetricRow(int(step), int(timestamp), value))
    return rows


def _read_rest(tracking_uri: str, run_id: str, key: str) -> list[MetricRow]:
    """GET metrics/get-history; without max_results the server answers all rows in one response."""
    import requests

    url = tracking_uri.rstrip("/") + "/api/2.0/mlflow/metrics/get-history"
    rows: list[MetricRow] = []
    params = {"run_id": run_id, "metric_key": key}
    while True:
        response = requests.get(url, params=params, auth=_basic_auth(), timeout=_timeout())
        if response.status_code != 200:
            raise LookupError(f"{url} answered {response.status_code}: {response.text[:300]}")
        body = response.json()
        rows += [_rest_row(m) for m in body.get("metrics", [])]
        token = body.get("next_page_token")
        if not token:
            return rows
        params["page_token"] = token


def _rest_row(metric: dict) -> MetricRow:
    value = decode_float(metric.get("value", 0.0))
    return MetricRow(int(metric.get("step", 0)), int(metric.get("timestamp", 0)), unclamp(value))


def _basic_auth():
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    return (user, password) if user and password else None


def _timeout() -> float:
    return float(os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", "120"))


def _read_store(tracking_uri: str, run_id: str, key: str) -> list[MetricRow]:
    from mlflow.tracking._tracking_service.utils import _get_store

    store, rows, token = _get_store(tracking_uri), [], None
    while True:
        page = store.get_metric_history(run_id, key, max_results=25_000, page_token=token)
        rows += [MetricRow(m.step, m.timestamp, unclamp(m.value)) for m in page]
        token = getattr(page, "token", None)
        if not token:
            return rows
