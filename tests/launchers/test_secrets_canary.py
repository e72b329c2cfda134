"""No secret in any output, file or MLflow entry, and nothing listening beyond loopback.

A canary value is part of every secret of a tiny run, each given as `${env:...}`: the tracking store
(``sqlite:///${env:ORCH_CANARY_STORE}/mlflow.db``), the data file, for ray-job the password of a
basic-auth proxy in front of the dashboard (``http://orch:${env:...}@127.0.0.1:<port>``), and for
the embedded run the password of a real `mlflow server --app-name basic-auth` it tracks to
(``http://admin:${env:ORCH_CANARY_MLFLOW_PASSWORD}@127.0.0.1:<port>``, the server's store being the
same sqlite file). Each backend runs once, through validate, plan, plan --json, submit, status, logs
and report (ray-job also cancel and list: this run is also the ray-job backend's test of submit,
follow, status, logs and list). The embedded run loses a worker (SIGKILL), so it fails and writes a
post-mortem. Then every output (MLflow's own console output among it: the submit's whole stdout and
stderr), every file written (the work directory, the store, the tracking server's log, user store
and artifacts, Ray's session directories with the ray-job bundle) and every MLflow param and tag is
searched for the canary: zero hits.

While the embedded run trains, every listening socket its processes open is recorded: all are on
loopback, torch's rendezvous store and gloo included.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.track.mlflow_run import client
from orchestrator.track.runs import ADDRESS_TAG
from orchestrator.track.status import read_status
from tests.conftest import REPO, run_cli, wait_for
from tests.launchers.auth_proxy import basic_auth_proxy

pytestmark = [pytest.mark.slow, pytest.mark.ray]

SPEC = """\
name: {name}
model: {{n_layers: 2, n_heads: 2, d_model: 32, context_length: 32, vocab_size: 300}}
optimizer: {{lr: 3.0e-3}}
schedule: {{warmup_steps: 2, min_lr: 3.0e-4}}
train: {{epochs: 1, max_steps: {steps}, micro_batch_size: 4, log_interval: 5, eval_interval: 5,
        eval_batches: 1}}
data: {{corpus: files, files: ['${{env:ORCH_CANARY_DATA}}'], prepared: 's3://orchestrator-tests/data'}}
checkpoint: {{dir: 's3://orchestrator-tests/{checkpoints}'}}
storage: {{endpoint_url: '{s3}', access_key_id: '${{env:ORCH_CANARY_S3_KEY}}',
          secret_access_key: '${{env:ORCH_CANARY_S3_SECRET}}'}}
tracking: {{uri: '{store}'}}
cluster: {cluster}
"""
STORE_URI = "sqlite:///${env:ORCH_CANARY_STORE}/mlflow.db"  # as the printed commands name it


def in_process(env: dict[str, str], cwd: Path, *argv: str) -> str:
    """One command through the real command line in this process (stdout and stderr together); the
    environment is put back as it was afterwards (a command puts a server's credentials there)."""
    out, saved = io.StringIO(), dict(os.environ)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(cwd)
            os.environ.update(env)
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                code = main(list(argv))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return f"$ orchestrator {' '.join(argv)} -> {code}\n{out.getvalue()}"


def files_holding(needle: str, *roots: Path) -> list[str]:
    """Every regular file under the roots whose bytes contain the needle (sockets, FIFOs skipped)."""
    found, raw = [], needle.encode()
    for root in roots:
        for path in [root, *root.rglob("*")] if root.exists() else []:
            with contextlib.suppress(OSError):
                if path.is_file() and not path.is_symlink() and raw in path.read_bytes():
                    found.append(str(path))
    return found


def mlflow_entries(store_dir: Path) -> str:
    """Every run's params and tags, as one text."""
    mlflow = client(f"sqlite:///{store_dir / 'mlflow.db'}")
    runs = mlflow.search_runs([e.experiment_id for e in mlflow.search_experiments()])
    return json.dumps([[run.data.params, run.data.tags, run.info.run_name] for run in runs])


# --- the embedded run: listeners watched, a worker killed -----------------------------------------


class ListenerWatch(threading.Thread):
    """Every listening TCP socket of a process and its descendants, polled until it exits."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.seen = pid, {}

    def run(self) -> None:
        import psutil

        root = psutil.Process(self.pid)
        while root.is_running() and root.status() != psutil.STATUS_ZOMBIE:
            with contextlib.suppress(psutil.Error):
                for process in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        for conn in process.net_connections(kind="inet"):
                            if conn.status == psutil.CONN_LISTEN:
                                self.seen.setdefault((conn.laddr.ip, conn.laddr.port), process.name())
            time.sleep(0.1)


@pytest.fixture(scope="module")
def auth_server(canary, tmp_path_factory):
    """`mlflow server --app-name basic-auth` on the canary's sqlite store; the admin's password is a
    secret. Its log, user store and artifacts are in its own directory, searched with the rest."""
    from tests.servers import MlflowServer

    work = tmp_path_factory.mktemp("auth-server")
    password = canary.env["ORCH_CANARY_MLFLOW_PASSWORD"]
    server = MlflowServer(
        f"sqlite:///{canary.store_dir / 'mlflow.db'}", work / "artifacts", work / "log", password
    )
    try:
        yield server.start(), work
    finally:
        server.stop()


def server_reference(server) -> str:
    """The server's URI as a spec and the printed commands name it."""
    return server.url.replace("http://", "http://admin:${env:ORCH_CANARY_MLFLOW_PASSWORD}@")


@pytest.fixture(scope="module")
def embedded(canary, auth_server, tmp_path_factory):
    """The ray-local run, started as `orchestrator submit` in its own process and tracked to the
    basic-auth server; rank 1 is killed once step 5 is logged, so the run fails and writes its
    post-mortem."""
    work = tmp_path_factory.mktemp("embedded")
    store = server_reference(auth_server[0])
    cluster = "{backend: ray-local, num_workers: 2}"
    text = SPEC.format(
        name="canary", steps=400, cluster=cluster, store=store, s3=canary.s3.endpoint, checkpoints="embedded"
    )
    (work / "spec.yaml").write_text(text)
    ray_tmp = Path(tempfile.mkdtemp(prefix="rl-", dir="/tmp"))  # short: Ray's socket paths
    (ray_tmp / "ray").mkdir()
    env = {**os.environ, **canary.env, "RAY_TMPDIR": str(ray_tmp)}
    for name in ("RAY_AUTH_MODE", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        env.pop(name, None)
    with open(work / "submit.out", "w") as out:
        submit = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "submit", "spec.yaml", "--progress", "off"],
            cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    watch = ListenerWatch(submit.pid)
    watch.start()
    try:
        status = wait_for(lambda: _status_at_step(work, 5), 300, "step 5 of the embedded run")
        os.kill(int(status["workers"][1]["pid"]), signal.SIGKILL)
        returncode = submit.wait(timeout=300)
    finally:
        if submit.poll() is None:
            os.killpg(submit.pid, signal.SIGKILL)
    watch.join(timeout=10)
    yield {
        "work": work,
        "returncode": returncode,
        "listeners": watch.seen,
        "ray_tmp": ray_tmp,
        "store": store,
    }
    subprocess.run(["rm", "-rf", str(ray_tmp)], check=False)


def objects_holding(canary) -> list[str]:
    """Keys of the canary's S3 objects whose content holds the canary (the manifest, the piece
    records, the checkpoints' markers and shards, the journal)."""
    return [key for key, body in canary.s3.objects().items() if canary.value.encode() in body]


def _status_at_step(work: Path, step: int):
    run_dirs = list(
        (work / "runs").glob("canary-*")
    )  # checkpoints on S3: the run dir is checkpoint.local_dir
    status = read_status(run_dirs[0]) if run_dirs else None
    return status if status and status["step"] >= step and len(status["workers"]) == 2 else None


def test_every_listener_of_an_embedded_run_is_on_loopback(embedded):
    listeners = embedded["listeners"]
    assert any(name.startswith("ray::RayTrainWorker") for name in listeners.values()), listeners
    beyond = {where: name for where, name in listeners.items() if not _loopback(where[0])}
    assert not beyond, f"listening beyond loopback: {beyond}"


def _loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or bool(mapped and mapped.is_loopback)


def test_listening_beyond_loopback_must_be_asked_for_and_is_announced(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: wide\ncluster: {host: 0.0.0.0}\n")
    assert main(["validate", str(spec)]) == 2
    assert "cluster.host: 0.0.0.0 can be reached from other machines" in capsys.readouterr().err
    spec.write_text("name: wide\ncluster: {host: 0.0.0.0, expose: true}\n")
    assert main(["validate", str(spec)]) == 0
    assert "warning    an embedded Ray will listen on 0.0.0.0" in capsys.readouterr().out


def test_no_secret_leaves_an_embedded_run(embedded, canary, auth_server):
    work = embedded["work"]
    assert embedded["returncode"] == 1, (work / "submit.out").read_text()[-3000:]
    run_dir = next((work / "runs").glob("canary-*"))  # checkpoints on S3: the run dir is checkpoint.local_dir
    post_mortem = (run_dir / "post_mortem.md").read_text()  # searched below with every other file
    assert "## Error" in post_mortem and "### worker-1" in post_mortem
    run_id = re.search(r"MLflow run (\w+)", post_mortem).group(1)
    outputs = [(work / "submit.out").read_text()]
    for argv in (["validate", "spec.yaml"], ["plan", "spec.yaml"], ["plan", "spec.yaml", "--json"]):
        outputs.append(in_process(canary.env, work, *argv))
    for argv in (["status", run_id], ["logs", run_id], ["report", run_id], ["sync", run_id]):
        outputs.append(in_process(canary.env, work, *argv, "--tracking-uri", embedded["store"]))
    text = "\n".join(outputs)
    assert "state      FAILED" in text and "[train] step 5/" in text and "training_metrics.json" in text
    assert "status     FAILED" in text, "sync reached the server with the password"
    assert canary.value not in text, [o for o in outputs if canary.value in o]
    assert canary.value not in mlflow_entries(canary.store_dir)
    server_files = auth_server[1]
    found = files_holding(
        canary.value, work, canary.store_dir / "mlflow.db", embedded["ray_tmp"], server_files
    )
    assert found == []
    assert objects_holding(canary) == [], "nothing in the object store (data, checkpoints) holds it"
    assert any(key.startswith("embedded/") for key in canary.s3.objects()), "checkpoints went there"


# --- the ray-job run: through a proxy whose password is a secret ----------------------------------

JOB_COMMANDS = {  # name -> the command after submit, run against the job's store
    "status": ["status", "RUN"],
    "logs": ["logs", "RUN"],
    "cancel": ["cancel", "RUN"],  # of a finished job: says so, exit 1
    "report": ["report", "RUN"],
    "list": ["list"],
}


@pytest.fixture(scope="module")
def job(canary, head, tmp_path_factory):
    """The ray-job run, submitted (and followed) by `orchestrator submit` through the proxy."""
    work = tmp_path_factory.mktemp("job")
    password = canary.env["ORCH_CANARY_PROXY_PASSWORD"]
    with basic_auth_proxy(head.dashboard_url, "orch", password) as (proxy_url, refused):
        address = proxy_url.replace("http://", "http://orch:${env:ORCH_CANARY_PROXY_PASSWORD}@")
        cluster = f"{{backend: ray-job, address: '{address}', num_workers: 1}}"
        # an experiment of its own: the embedded leg's was made by the tracking server, whose artifact
        # root (mlflow-artifacts:/) only a client of that server can write to
        spec = SPEC.format(
            name="canary-job",
            steps=10,
            cluster=cluster,
            store=STORE_URI,
            s3=canary.s3.endpoint,
            checkpoints="job",
        )
        (work / "spec.yaml").write_text(spec)
        submitted = run_cli("submit", "spec.yaml", cwd=work, env=head.env, timeout=600)
        assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
        run_id = re.search(r"MLflow run (\w+)\)", submitted.stdout).group(1)
        outputs = {"submit": submitted.stdout + submitted.stderr}
        for name, argv in JOB_COMMANDS.items():
            argv = [run_id if part == "RUN" else part for part in argv]
            outputs[name] = in_process(head.env, work, *argv, "--tracking-uri", STORE_URI)
        outputs["list --address"] = in_process(head.env, work, "list", "--address", head.dashboard_url)
        yield {"work": work, "outputs": outputs, "run_id": run_id, "address": address, "refused": refused}


def test_a_ray_job_run_is_followed_and_seen_by_status_logs_and_list(job):
    """What the user sees of a ray-job run (the Jobs API reached through the proxy's password)."""
    out, run_id = job["outputs"], job["run_id"]
    assert re.search(rf"^job        orchestrator-{run_id}-\d+ on ", out["submit"], re.M)
    assert "[train] step 10/10" in out["submit"], "submit follows the job's log"
    shipped = re.search(r"^code       (\S+)$", out["submit"], re.M).group(1)
    assert shipped != str(REPO) and "runtime_resources" in shipped, "the job runs the shipped code"
    assert "state      SUCCEEDED" in out["submit"]
    # the dashboard as written: the password stays a reference, resolved from the environment
    assert re.search(rf"job orchestrator-{run_id}-\d+ at {re.escape(job['address'])}", out["status"])
    assert "state      SUCCEEDED" in out["status"] and "train_loss" in out["status"]
    assert "[train] done: 10 steps" in out["logs"]
    assert f"run {run_id}: SUCCEEDED" in out["cancel"] and "training_metrics.json" in out["report"]
    assert re.search(rf"^{run_id}  SUCCEEDED +10/10  ray-job", out["list"], re.M), out["list"]
    assert re.search(rf"^{run_id}  SUCCEEDED", out["list --address"], re.M), out["list --address"]
    assert job["refused"] == [], "every request carried the proxy's credentials"


def test_no_secret_leaves_a_ray_job_run(job, canary, head):
    text = "\n".join(job["outputs"].values())
    tags = client(f"sqlite:///{canary.store_dir / 'mlflow.db'}").get_run(job["run_id"]).data.tags
    assert tags[ADDRESS_TAG] == job["address"], "the tag keeps the reference"
    bundles = head.temp_dir.rglob("runtime_resources/working_dir_files/*/run.json")
    (ticket,) = [path for path in bundles if job["run_id"] in path.read_text()]
    assert "sqlite:///${env:ORCH_CANARY_STORE}/mlflow.db" in ticket.read_text(), "the shipped ticket"
    assert canary.value not in text, [
        name for name, output in job["outputs"].items() if canary.value in output
    ]
    assert canary.value not in mlflow_entries(canary.store_dir)
    assert files_holding(canary.value, job["work"], canary.store_dir / "mlflow.db", head.temp_dir) == []
    assert objects_holding(canary) == []
