"""Shared fixtures. Tests use real components; nothing here talks beyond 127.0.0.1."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import hypothesis
import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
# DeepSpeed JIT-builds its CPU communication op into ~/.cache/torch_extensions; checkouts with
# different venv paths would overwrite each other's build there and rebuild it (~1 min) every run.
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(sys.prefix) / "torch_extensions"))
# Prepared data (tokenizers, token files) of this test session only: never the user's own cache.
# One directory for the whole session, so tests that use the same corpus share one preparation.
TEST_CACHE = tempfile.mkdtemp(prefix="orchestrator-test-cache-")
os.environ["ORCHESTRATOR_CACHE_DIR"] = TEST_CACHE
atexit.register(shutil.rmtree, TEST_CACHE, ignore_errors=True)

# The S3-compatible server of the test run: started once by the process that runs pytest (before
# xdist starts its workers, which inherit these variables), stopped when the run ends.
S3_ENV_PREFIX = "ORCHESTRATOR_TEST_S3_"
_S3_SERVER = None


def pytest_configure(config):
    global _S3_SERVER
    # Started with Ctrl-C ignored (`nohup make test &`): the commands the tests start would inherit
    # that and ignore the Ctrl-C the interrupt tests send them, as such a program should. A handler
    # here resets to the default in every process started from now on.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if hasattr(config, "workerinput") or os.environ.get(S3_ENV_PREFIX + "ENDPOINT"):
        return  # an xdist worker, or a server given from outside
    from tests.servers import S3Server

    _S3_SERVER = S3Server().start()  # ready in about 10 s, while the first tests run
    atexit.register(_S3_SERVER.stop)
    os.environ[S3_ENV_PREFIX + "ENDPOINT"] = _S3_SERVER.endpoint
    os.environ[S3_ENV_PREFIX + "ACCESS_KEY"] = _S3_SERVER.access_key
    os.environ[S3_ENV_PREFIX + "SECRET_KEY"] = _S3_SERVER.secret_key


def pytest_unconfigure(config):
    if _S3_SERVER is not None:
        _S3_SERVER.stop()


@pytest.fixture(scope="session")
def s3_server():
    """The run's S3 server, ready: its bucket exists. ``.env()`` holds the standard AWS variables.
    Never pause or stop it in a test (other tests use it at the same time): start one of your own."""
    from tests.servers import S3Server

    prefix = S3_ENV_PREFIX
    server = S3Server.attached(
        os.environ[prefix + "ENDPOINT"], os.environ[prefix + "ACCESS_KEY"], os.environ[prefix + "SECRET_KEY"]
    )
    return server.wait_ready()


@pytest.fixture
def s3_prefix(s3_server, request) -> str:
    """A fresh s3:// prefix of the test's own in the run's bucket."""
    import secrets

    name = request.node.name[:40].replace("[", "-").strip("]")
    return f"s3://{s3_server.BUCKET}/{name}-{secrets.token_hex(4)}"


# `make fuzz` sets this: every property-based test then runs that many examples.
FUZZ_EXAMPLES = int(os.environ.get("ORCHESTRATOR_FUZZ_EXAMPLES", "0"))
# The hostile corpus of `make test` is seeded: the same examples in every run (a failure in CI is a
# failure here); `make fuzz` draws new ones each time (the failing example is printed to replay).
hypothesis.settings.register_profile("seeded", derandomize=True, print_blob=True)
hypothesis.settings.register_profile("fuzz", derandomize=False, print_blob=True)
hypothesis.settings.load_profile("fuzz" if FUZZ_EXAMPLES else "seeded")


def fuzz_examples(quick: int, most: int | None = None) -> int:
    """How many examples a property-based test runs: ``quick`` in `make test`, more in `make fuzz`
    (at most ``most`` for a test whose every example starts a command's whole work)."""
    return min(FUZZ_EXAMPLES, most or FUZZ_EXAMPLES) if FUZZ_EXAMPLES else quick


TINY_SPEC = """\
name: tiny
model: {n_layers: 2, n_heads: 2, d_model: 32, context_length: 32, vocab_size: 300}
optimizer: {lr: 3.0e-3, weight_decay: 0.1}
schedule: {warmup_steps: 8, min_lr: 3.0e-4}
train: {epochs: 1, max_steps: 20, micro_batch_size: 4, log_interval: 5, eval_interval: 10,
        eval_batches: 2}
deepspeed: {zero_stage: 2, precision: fp32}
cluster: {backend: ray-local, num_workers: 2, cpus_per_worker: 1}
"""


def prepared_plan(spec, cwd: Path, identity=None):
    """The plan a new run of ``spec`` gets in ``cwd``, its data prepared (in this process)."""
    from orchestrator.lifecycle import prepare_data
    from orchestrator.plan import build_plan

    return build_plan(spec, prepare_data(spec, cwd, say=lambda _: None), identity, cwd)


def run_cli(
    *args: str, cwd: Path, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run the real `orchestrator` command line in a child process (``env``: its whole environment)."""
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def run_main(argv: list[str], capsys) -> tuple[int, str]:
    """The command line in this process: its exit code (argparse's usage errors count as exit codes)
    and everything it printed, which never holds a traceback."""
    from orchestrator.cli import main

    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped main(): a traceback for the user")
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert "Traceback" not in output, output
    return code, output


@pytest.fixture
def tiny_spec_text() -> str:
    return TINY_SPEC


@pytest.fixture
def write_spec(tmp_path: Path):
    def _write(text: str, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return _write


@pytest.fixture
def sqlite_run(tmp_path):
    """A real MLflow sqlite store holding one run whose checkpoint directory is tmp_path/run:
    (tracking uri, run id, checkpoint dir)."""
    from orchestrator.track.mlflow_run import client
    from orchestrator.track.runs import CHECKPOINT_DIR_TAG, write_run_record

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow = client(uri)
    experiment = mlflow.create_experiment("tests")
    out = tmp_path / "run"
    out.mkdir()
    run = mlflow.create_run(experiment, tags={CHECKPOINT_DIR_TAG: str(out)})
    write_run_record(out, run.info.run_id)  # as start_run does
    return uri, run.info.run_id, out


def wait_for(probe, timeout: float, what: str, interval: float = 0.2):
    """Poll `probe()` until it returns something truthy and return that; fail naming what never came."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"no {what} after {timeout}s")


@pytest.fixture(autouse=True)
def _no_tracking_uri_leak():
    """A test (or the code under test) that leaves MLFLOW_TRACKING_URI set would point every later
    command of the session at its store: fail it where it happens."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    after = os.environ.get("MLFLOW_TRACKING_URI")
    if after != before:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        if before is not None:
            os.environ["MLFLOW_TRACKING_URI"] = before
        pytest.fail(f"MLFLOW_TRACKING_URI leaked out of the test: {after!r}")


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory):
    """The engine's tiny runs (tests/train/harness.py), trained on first use, shared by the session."""
    from tests.train.harness import TrainedRuns

    return TrainedRuns(tmp_path_factory.mktemp("trained-runs"))


# The longest modules, longest first (about 1.5 to 3 minutes each on 2 cores). `make test` hands
# modules to its two processes in collection order (--dist loadfile --no-loadscope-reorder): starting
# with these keeps the two busy to the end instead of leaving one to finish a long module alone.
LONGEST_FIRST = (
    "tests/sweep/test_sweep_ray.py",
    "tests/train/test_engine.py",
    "tests/train/test_resume_exact.py",
    "tests/train/test_checkpoints_s3.py",
    "tests/launchers/test_multinode.py",
    "tests/test_quickstart.py",
    "tests/track/test_tracking_server.py",
    "tests/lifecycle/test_resume.py",
    "tests/launchers/test_secrets_canary.py",
    "tests/launchers/test_ray_cluster.py",
    "tests/test_pipeline.py",
    "tests/export/test_hf.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {path: index for index, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable: modules stay whole


def without_ray_teardown_noise(output: str) -> str:
    """The output without the lines of Ray's own PlacementGroupCleaner actor, which can print a
    traceback while an interrupted job is torn down (before the driver stops forwarding its output,
    when the controller went first): not this project's code. Every other line counts."""
    return "\n".join(line for line in output.splitlines() if not line.startswith("(PlacementGroupCleaner"))
