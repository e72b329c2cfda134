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
