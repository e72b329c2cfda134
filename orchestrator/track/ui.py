"""The MLflow UI for a tracking store, on 127.0.0.1 only, and the address of a run's page in it.

The store's URI goes to `mlflow server` in its environment (``MLFLOW_BACKEND_STORE_URI``), not on its
command line, where any user of the machine could read a password in it (``ps``).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from orchestrator.masking import mask_uri_passwords

DEFAULT_UI_PORT = 5000
# MLflow 3's UI picks its GenAI or model-training view from this URL parameter (else from the
# user's last choice, GenAI by default), not from the experiment's mlflow.experimentKind tag
TRAINING_VIEW = "workflowType=machine_learning"


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


def run_page_url(
    tracking_uri: str, run_id: str, experiment_id: str | None = None, port: int = DEFAULT_UI_PORT
):
    """The run's page in the MLflow UI, in its model-training view: the tracking server's own UI
    for an http(s) store, else the UI that ``orchestrator ui`` serves for the store on
    127.0.0.1:`port`. Credentials in the URI are left out of the address. Without
    ``experiment_id`` it is read from the store.

    >>> run_page_url("http://me:secret@mlflow.internal:5000/", "ab12", "3")
    'http://mlflow.internal:5000/#/experiments/3/runs/ab12?workflowType=machine_learning'
    >>> run_page_url("sqlite:///mlflow.db", "ab12", "3")
    'http://127.0.0.1:5000/#/experiments/3/runs/ab12?workflowType=machine_learning'
    """
    if experiment_id is None:
        from orchestrator.track.mlflow_run import client

        experiment_id = client(tracking_uri).get_run(run_id).info.experiment_id
    _, base = ui_command(tracking_uri, port)
    parts = urlsplit(base)
    host = parts.netloc.rpartition("@")[2]  # never print user:password
    base = urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}?{TRAINING_VIEW}"


def ui_hint(
    tracking_uri: str, run_id: str, port: int = DEFAULT_UI_PORT, shown_uri: str | None = None
) -> list[str]:
    """Lines telling where to see a run in the MLflow UI: the server's run page, or for a local store
    the command that serves the UI and the run page it will show. ``shown_uri``: the store as the
    command should name it (with `${env:...}` references for its secrets)."""
    from orchestrator.plan import tracking_uri_here

    page = run_page_url(tracking_uri, run_id, port=port)
    if ui_command(tracking_uri, port)[0] is None:
        return [f"MLflow UI  {page}"]
    shown = shlex.quote(mask_uri_passwords(shown_uri or tracking_uri))
    store = "" if tracking_uri == tracking_uri_here() else f" --tracking-uri {shown}"
    return [f"MLflow UI  orchestrator ui{store}", f"           then open {page}"]
