"""Real servers for tests and benchmarks, on free loopback ports: PostgreSQL and `mlflow server`.

Each is stopped by what started it (PostgreSQL by ``pg_ctl stop``, the MLflow server by killing its
own process group), also when a test fails: use them from fixtures with ``try/finally``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from orchestrator.net import free_port

QUIET_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}


def postgres_bin(name: str) -> str:
    """The newest installed PostgreSQL's binary (Debian keeps them off PATH)."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_version_key)
    path = found[-1] if found else shutil.which(name)
    if not path:
        raise RuntimeError(f"PostgreSQL's {name} is not installed: run `make test-deps`")
    return path


def _version_key(path: str) -> int:
    version = Path(path).parts[-3]
    return int(version) if version.isdigit() else 0


class Postgres:
    """A throw-away PostgreSQL cluster on 127.0.0.1:<port> with password authentication."""

    def __init__(self):
        self.port = free_port()
        self.password = secrets.token_hex(12)
        self.root = Path(tempfile.mkdtemp(prefix="orchestrator-pg-"))
        self.data = self.root / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg2://postgres:{self.password}@127.0.0.1:{self.port}/{database}"

    def start(self) -> Postgres:
        (self.root / "pw").write_text(self.password + "\n")
        (self.root / "sock").mkdir()
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root: hand the directory to postgres
            shutil.chown(self.root, "postgres")
            for path in self.root.iterdir():
                shutil.chown(path, "postgres")
        pwfile = self.root / "pw"
        self._run(
            postgres_bin("initdb"),
            "-D",
            self.data,
            "-U",
            "postgres",
            "-A",
            "scram-sha-256",
            f"--pwfile={pwfile}",
        )
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root / 'sock'}"
        self._run(
            postgres_bin("pg_ctl"), "-D", self.data, "-l", self.root / "log", "-o", options, "-w", "start"
        )
        return self

    def create_database(self, name: str) -> str:
        import psycopg2

        connection = psycopg2.connect(
            host="127.0.0.1", port=self.port, user="postgres", password=self.password, dbname="postgres"
        )
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        connection.close()
        return self.url(name)

    def stop(self) -> None:
        if self.data.exists():
            self._run(postgres_bin("pg_ctl"), "-D", self.data, "-m", "fast", "-w", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, *command, check: bool = True) -> None:
        argv = [str(c) for c in command]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=self.root)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {result.stdout[-2000:]}{result.stderr[-2000:]}")


class MlflowServer:
    """`mlflow server` in its own process group, restartable on the same port and stores."""

    def __init__(
        self,
        backend_store_uri: str,
        artifacts_dir: Path,
        log_path: Path,
        admin_password: str | None = None,
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.backend_store_uri = backend_store_uri
        self.artifacts_dir = artifacts_dir
        self.log_path = log_path
        self.admin_password = admin_password  # set: MLflow's basic-auth app, user `admin`
        self._process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 180, workers: int = 1) -> MlflowServer:
        mlflow_bin = str(Path(sys.executable).with_name("mlflow"))
        command = [
            mlflow_bin, "server", "--backend-store-uri", self.backend_store_uri,
            "--artifacts-destination", str(self.artifacts_dir),
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(workers),
        ]  # fmt: skip
        env = {**os.environ, **QUIET_ENV}
        if self.admin_password:
            command += ["--app-name", "basic-auth"]
            env.update(self._auth_env())
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self._process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            cwd=self.log_path.parent,
        )
        log.close()
        self._wait_healthy(timeout_s)
        return self

    def _auth_env(self) -> dict[str, str]:
        """The basic-auth app's settings: its own user store beside the log, the admin's password
        (in the environment: it only seeds the first admin), and the secret key of its CSRF
        protection."""
        ini = self.log_path.parent / "basic_auth.ini"
        ini.write_text(
            "[mlflow]\ndefault_permission = READ\n"
            f"database_uri = sqlite:///{self.log_path.parent / 'basic_auth.db'}\n"
            "admin_username = admin\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        )
        return {
            "MLFLOW_AUTH_CONFIG_PATH": str(ini),
            "MLFLOW_AUTH_ADMIN_PASSWORD": self.admin_password or "",
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
        }

    def _wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(
            f"mlflow server not healthy after {timeout_s}s: {self.log_path.read_text()[-3000:]}"
        )

    def kill(self) -> None:
        """The server crashes: SIGKILL to its whole process group, nothing answers from now on."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)

    def stop(self) -> None:
        """Stop the server and every child it started (uvicorn workers, job runner, huey)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        stop_process_group(process)


def stop_process_group(process: subprocess.Popen, grace_s: float = 20) -> None:
    pgid = process.pid  # start_new_session: the child leads its own group
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        process.wait(10)
    with contextlib.suppress(ProcessLookupError):  # children that outlived the leader
        os.killpg(pgid, signal.SIGKILL)


class S3Server:
    """SeaweedFS (`weed server -s3`) on 127.0.0.1, every listener on a free port, with one identity so
    that a wrong key is refused. Its telemetry and its extra catalog listeners are off."""

    BUCKET = "orchestrator-tests"

    def __init__(
        self, root: Path | None = None, access_key: str | None = None, secret_key: str | None = None
    ):
        self.root = Path(root or tempfile.mkdtemp(prefix="orchestrator-s3-"))
        self.port = _weed_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.access_key = access_key or "tests-" + secrets.token_hex(4)
        self.secret_key = secret_key or secrets.token_hex(16)
        self._process: subprocess.Popen | None = None

    @classmethod
    def attached(cls, endpoint: str, access_key: str, secret_key: str) -> S3Server:
        """A server another process started (the test run's): usable, not stoppable from here."""
        server = cls.__new__(cls)
        server.root, server.endpoint, server._process = None, endpoint, None
        server.port = int(endpoint.rsplit(":", 1)[1])
        server.access_key, server.secret_key = access_key, secret_key
        return server

    def env(self) -> dict[str, str]:
        """The standard variables every client (and every process a test starts) reads."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
        }

    def start(self) -> S3Server:
        import json

        (self.root / "data").mkdir(parents=True, exist_ok=True)
        identity = {
            "identities": [
                {
                    "name": "tests",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        config = self.root / "s3.json"
        config.write_text(json.dumps(identity))
        config.chmod(0o600)
        ports = {name: _weed_port() for name in ("master", "volume", "filer")}
        command = [
            str(Path(sys.executable).with_name("weed")), "server",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={self.root / 'data'}",
            "-master.telemetry=false", "-master.volumeSizeLimitMB=256", "-volume.max=50",
            f"-master.port={ports['master']}", f"-volume.port={ports['volume']}",
            f"-filer.port={ports['filer']}",
            "-s3", f"-s3.port={self.port}", f"-s3.config={config}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
        ]  # fmt: skip
        log = open(self.root / "weed.log", "ab")  # noqa: SIM115 - handed to the child
        self._process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.root
        )
        log.close()
        return self

    def wait_ready(self, timeout_s: float = 90) -> S3Server:
        """Until a bucket can be created and written (the S3 gateway answers before its filer does)."""
        client = self.client()
        deadline, error = time.monotonic() + timeout_s, None
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"weed server exited: {(self.root / 'weed.log').read_text()[-3000:]}")
            try:
                with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                    client.create_bucket(Bucket=self.BUCKET)
                client.put_object(Bucket=self.BUCKET, Key="ready", Body=b"1")
                return self
            except Exception as exc:  # not up yet
                error = exc
                time.sleep(0.5)
        raise RuntimeError(f"the S3 server was not ready after {timeout_s}s: {error}")

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )

    def objects(self) -> dict[str, bytes]:
        """Every object of the server's bucket: key -> content."""

        s3 = self.client()
        found = {}
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=self.BUCKET)
        for page in pages:
            for item in page.get("Contents", []):
                found[item["Key"]] = s3.get_object(Bucket=self.BUCKET, Key=item["Key"])["Body"].read()
        return found

    def pause(self) -> None:
        """Stop answering (SIGSTOP of every process of the server), as a hung store does."""
        os.killpg(self._process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.killpg(self._process.pid, signal.SIGCONT)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGCONT)
            stop_process_group(process, grace_s=3)  # weed takes 20 s to stop on SIGTERM; its data goes
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)


def _weed_port() -> int:
    """A free port P with P + 10000 free too: each SeaweedFS listener puts its gRPC twin there."""
    import socket

    for _ in range(200):
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free pair of ports for SeaweedFS")
