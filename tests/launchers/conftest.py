"""Fixtures shared by the launcher tests: one real Ray head for the package, started on first use.

Its environment holds the secrets of the canary test (``canary``): a cluster resolves a run's
`${env:...}` references from its own environment, never from anything shipped with the job.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.launchers.ray_head import ray_head

# A value that appears nowhere unless a secret leaked: every secret of the canary runs contains it.
CANARY = "canary" + secrets.token_hex(8)


@dataclass(frozen=True)
class Canary:
    value: str
    store_dir: Path  # the MLflow store's directory, a secret: sqlite:///${env:ORCH_CANARY_STORE}/mlflow.db
    env: dict[str, str]  # the secrets, as the submitter and the cluster have them
    s3: object  # an S3 server of the canary's own, whose key and secret hold the canary


@pytest.fixture(scope="package")
def canary(tmp_path_factory):
    from orchestrator.data.corpus import python_docs_text
    from tests.servers import S3Server

    store = tmp_path_factory.mktemp("secrets") / CANARY
    store.mkdir()
    corpus = store / "corpus.txt"
    corpus.write_text(python_docs_text()[:40_000])
    env = {
        "ORCH_CANARY_STORE": str(store),
        "ORCH_CANARY_DATA": str(corpus),
        "ORCH_CANARY_PROXY_PASSWORD": f"{CANARY}-proxy",
        "ORCH_CANARY_MLFLOW_PASSWORD": f"{CANARY}-mlflow",
        "ORCH_CANARY_S3_KEY": f"{CANARY}-key",
        "ORCH_CANARY_S3_SECRET": f"{CANARY}-s3-secret",
    }
    s3 = S3Server(access_key=env["ORCH_CANARY_S3_KEY"], secret_key=env["ORCH_CANARY_S3_SECRET"]).start()
    try:
        yield Canary(CANARY, store, env, s3.wait_ready())
    finally:
        s3.stop()


@pytest.fixture(scope="package")
def head(canary, s3_server):
    """The cluster's nodes reach the test run's S3 store (its standard AWS variables)."""
    with ray_head(num_cpus=2, extra_env={**canary.env, **s3_server.env()}) as running:
        yield running
