"""The MLflow UI for a tracking store, on 127.0.0.1 only."""

from __future__ import annotations

import sys
from pathlib import Path


def ui_command(tracking_uri: str, port: int) -> tuple[list[str] | None, str]:
    """The `mlflow server` command line that serves the UI for this store, and its address.

    A store that is already a tracking server (http/https) has its own UI: no command, its URL.
    """
    if tracking_uri.startswith(("http://", "https://")):
        return None, tracking_uri
    mlflow_bin = str(Path(sys.executable).with_name("mlflow"))
    command = [
        mlflow_bin,
        "server",
        "--backend-store-uri",
        tracking_uri,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",  # one user, one browser: four workers only cost memory and start-up time
    ]
    return command, f"http://127.0.0.1:{port}"


def run_page_url(base_url: str, experiment_id: str, run_id: str) -> str:
    """The MLflow UI's page of one run (its charts, params and artifacts)."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def ui_hint(tracking_uri: str, run_id: str, port: int = 5000) -> list[str]:
    """Lines telling where to see a run in the MLflow UI: the server's run page, or for a local store
    the command that serves the UI and the run page it will show."""
    from orchestrator.track.mlflow_run import redact_text
    from orchestrator.track.runs import get_run

    experiment_id = get_run(tracking_uri, run_id).info.experiment_id
    command, base = ui_command(tracking_uri, port)
    page = redact_text(run_page_url(base, experiment_id, run_id))
    if command is None:
        return [f"MLflow UI  {page}"]
    store = (
        ""
        if tracking_uri.endswith("/mlflow.db") and Path(tracking_uri[10:]).parent == Path.cwd()
        else (f" --tracking-uri {tracking_uri}")
    )
    return [f"MLflow UI  orchestrator ui{store}", f"           then open {page}"]
