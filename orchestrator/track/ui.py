"""The MLflow UI for a tracking store, on 127.0.0.1 only.

The store's URI goes to `mlflow server` in its environment (``MLFLOW_BACKEND_STORE_URI``), not on its
command line, where any user of the machine could read a password in it (``ps``).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from orchestrator.text import mask_uri_passwords


def ui_command(tracking_uri: str, port: int) -> tuple[list[str] | None, str]:
    """The `mlflow server` command line that serves the UI for this store (run it with
    ``ui_environment``), and its address.

    A store that is already a tracking server (http/https) has its own UI: no command, its URL
    (without a password).
    """
    if tracking_uri.startswith(("http://", "https://")):
        return None, mask_uri_passwords(tracking_uri)
    mlflow_bin = str(Path(sys.executable).with_name("mlflow"))
    command = [
        mlflow_bin,
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",  # one user, one browser: four workers only cost memory and start-up time
    ]
    return command, f"http://127.0.0.1:{port}"


def ui_environment(tracking_uri: str) -> dict[str, str]:
    """What `mlflow server` needs in its environment to serve this store."""
    return {"MLFLOW_BACKEND_STORE_URI": tracking_uri}


def run_page_url(base_url: str, experiment_id: str, run_id: str) -> str:
    """The MLflow UI's page of one run (its charts, params and artifacts)."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def ui_hint(tracking_uri: str, run_id: str, port: int = 5000, shown_uri: str | None = None) -> list[str]:
    """Lines telling where to see a run in the MLflow UI: the server's run page, or for a local store
    the command that serves the UI and the run page it will show. ``shown_uri``: the store as the
    command should name it (with `${env:...}` references for its secrets)."""
    from orchestrator.track.runs import get_run

    experiment_id = get_run(tracking_uri, run_id).info.experiment_id
    command, base = ui_command(tracking_uri, port)
    page = mask_uri_passwords(run_page_url(base, experiment_id, run_id))
    if command is None:
        return [f"MLflow UI  {page}"]
    store = (
        ""
        if tracking_uri.endswith("/mlflow.db") and Path(tracking_uri[10:]).parent == Path.cwd()
        else f" --tracking-uri {shlex.quote(mask_uri_passwords(shown_uri or tracking_uri))}"
    )
    return [f"MLflow UI  orchestrator ui{store}", f"           then open {page}"]
