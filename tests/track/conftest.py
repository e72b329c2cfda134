"""A real tracking server for the tests that need one: `mlflow server` on a free loopback port, with
a throw-away PostgreSQL cluster as its backend store and a temporary artifact directory."""

from __future__ import annotations

import pytest

from tests.servers import MlflowServer, Postgres


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    work = tmp_path_factory.mktemp("tracking-server")
    postgres = Postgres()
    server = None
    try:
        postgres.start()
        store = postgres.create_database("mlflow")
        server = MlflowServer(store, work / "artifacts", work / "server.log").start()
        yield server
    finally:
        if server is not None:
            server.stop()
        postgres.stop()
