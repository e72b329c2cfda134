"""A real `ray start --head` on 127.0.0.1 with token authentication, for tests.

The token lives in the test's own directory (``RAY_AUTH_TOKEN_PATH``), never in ``~/.ray``. Every port
is a free one, so clusters of other test sessions on the machine are never touched. The head runs
with ``--block`` in its own process group, which is what gets stopped: never `ray stop`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from orchestrator.net import free_port

RAY_BIN = Path(sys.executable).with_name("ray")


@dataclass(frozen=True)
class RayHead:
    gcs_address: str
    dashboard_url: str
    token: str
    env: dict[str, str]  # what a client process needs: loopback, token mode, token path
    log: Path
    process: subprocess.Popen

    @property
    def temp_dir(self) -> Path:
        """Everything the head writes: its log and Ray's session (logs, jobs' working dirs)."""
        return self.log.parent

    def is_alive(self) -> bool:
        return self.process.poll() is None


def client_env(token_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token_path),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        # The job's driver runs `python`: make it this environment's.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }


@contextlib.contextmanager
def ray_head(
    num_cpus: int = 2, resources: str = "{}", extra_env: dict[str, str] | None = None
) -> Iterator[RayHead]:
    """``extra_env``: the cluster's own environment (where a job's driver resolves `${env:...}`)."""
    # A short directory: Ray's unix socket paths must stay under ~107 characters.
    with tempfile.TemporaryDirectory(prefix="rh-", dir="/tmp") as tmp:
        token, token_path = secrets.token_hex(32), Path(tmp) / "auth_token"
        token_path.write_text(token)
        env = client_env(token_path) | (extra_env or {})
        gcs_port, dashboard_port = free_port(), free_port()
        log = Path(tmp) / "head.log"
        command = [str(RAY_BIN), "start", "--head", "--block", "--disable-usage-stats",
                   "--node-ip-address=127.0.0.1", f"--port={gcs_port}",
                   "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
                   f"--ray-client-server-port={free_port()}", f"--metrics-export-port={free_port()}",
                   f"--dashboard-agent-listen-port={free_port()}",
                   f"--dashboard-agent-grpc-port={free_port()}",
                   f"--runtime-env-agent-port={free_port()}", f"--node-manager-port={free_port()}",
                   f"--object-manager-port={free_port()}", f"--num-cpus={num_cpus}",
                   f"--resources={resources}", f"--temp-dir={tmp}/ray"]  # fmt: skip
        with open(log, "w") as out:
            head = subprocess.Popen(
                command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            url = f"http://127.0.0.1:{dashboard_port}"
            _wait_until_serving(url, token, head, log)
            yield RayHead(f"127.0.0.1:{gcs_port}", url, token, env, log, head)
        finally:
            stop_process_group(head)


def _wait_until_serving(
    url: str, token: str, head: subprocess.Popen, log: Path, timeout: float = 180
) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    request = urllib.request.Request(f"{url}/api/version", headers={"Authorization": f"Bearer {token}"})
    while time.monotonic() < deadline:
        if head.poll() is not None:
            raise RuntimeError(f"ray start --head exited with {head.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError), urllib.request.urlopen(request, timeout=2) as response:
            if response.status == 200:
                return
        time.sleep(1)
    raise TimeoutError(
        f"the Ray head's dashboard did not answer within {timeout}s:\n{log.read_text()[-3000:]}"
    )


def stop_process_group(process: subprocess.Popen, grace_s: float = 8) -> None:
    """SIGTERM the head's whole process group, then SIGKILL whatever is left of it."""
    pgid = process.pid  # start_new_session: the group id is the leader's pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and _group_alive(pgid):
        time.sleep(0.5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
