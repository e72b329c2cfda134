"""Checkpoints on a real S3 server (SeaweedFS on loopback): asynchronous uploads, COMPLETE written
only after every rank's upload, resume from the store after the node-local copies are gone, a store
that goes away for 20 s during an upload, and one that never comes back.

The worker runs under torchrun (2 CPU ranks, gloo, DeepSpeed ZeRO-2), as tests/train/harness.py does.
The outage tests pause a server of their own (SIGSTOP of its processes): the test run's shared one
is used by other tests at the same time."""

from __future__ import annotations

import json
import secrets
import shutil
import statistics
import subprocess
import threading
import time
from pathlib import Path

import pytest

from orchestrator.storage.store import StoreSettings, open_store
from orchestrator.train.checkpoint import MARKER, UPLOADED, complete_checkpoints, latest_complete_checkpoint
from tests.servers import S3Server
from tests.train.harness import engine_command, engine_spec, make_plan, metric_history, output, run_engine

pytestmark = pytest.mark.slow

STEPS = 20
LONG = 300


def _spec(deadline_s: float, interval: int = 5, steps: int = STEPS) -> str:
    text = engine_spec(steps=steps, interval=interval, keep_last=3, eval_interval=10)
    return text + f"storage: {{retry_deadline_s: {deadline_s}}}\n"


def _settings(server: S3Server) -> StoreSettings:
    return StoreSettings(
        endpoint_url=server.endpoint,
        access_key_id=server.access_key,
        secret_access_key=server.secret_key,
        retry_deadline_s=30,
    )


def _plan(work: Path, server: S3Server, name: str, deadline_s: float = 120, interval: int = 5, steps=STEPS):
    uri = f"s3://{server.BUCKET}/{name}-{secrets.token_hex(3)}/{name}"
    return make_plan(work, _spec(deadline_s, interval, steps), name, checkpoint_uri=uri)


def _env(work: Path, server: S3Server) -> dict[str, str]:
    return {**server.env(), "ORCHESTRATOR_SCRATCH_DIR": str(work / "scratch")}


def test_checkpoints_go_to_the_store_complete_only_after_every_ranks_upload(s3_server, tmp_path):
    plan = _plan(tmp_path, s3_server, "stored")
    result = run_engine(plan, env=_env(tmp_path, s3_server))
    assert result.returncode == 0, output(result)
    store = open_store(plan.checkpoint_uri, _settings(s3_server))
    steps = [c.step for c in complete_checkpoints(store)]
    assert steps[-1] == STEPS and set(steps) <= {5, 10, 15, 20}
    final = latest_complete_checkpoint(store)
    for rank in (0, 1):
        record = json.loads(store.read_bytes(f"{final.tag}/{UPLOADED.format(rank=rank)}"))
        assert set(record["files"]) <= set(final.files)  # each rank's files are in the marker
    assert any("zero_pp_rank_1_" in name for name in final.files) and store.exists("metrics.journal.jsonl")
    assert not list(Path(plan.checkpoint_dir).glob("step-*")), "nothing kept in the run's directory"
    assert not list((tmp_path / "scratch").rglob("*.pt")), "the scratch copies went after the upload"
    blocked = [v for _, v in metric_history(plan, "checkpoint_seconds")]
    uploads = metric_history(plan, "checkpoint_upload_seconds")
    assert len(blocked) == 4 and [s for s, _ in uploads][-1] == STEPS


def test_a_run_resumes_from_the_store_after_its_local_copies_are_gone(s3_server, tmp_path):
    """Killed after the checkpoint of step 10 (every rank exits once it is uploaded), the scratch
    space deleted: the next attempt downloads what each rank needs, and every step is logged once
    with a loss that continues as the uninterrupted run's."""
    reference = _plan(tmp_path / "ref", s3_server, "reference", interval=10)
    assert run_engine(reference, env=_env(tmp_path / "ref", s3_server)).returncode == 0
    plan = _plan(tmp_path, s3_server, "resumed", interval=10)  # one upload at a time: none is skipped
    first = run_engine(plan, "--stop-after-step", "10", env=_env(tmp_path, s3_server))
    assert (
        first.returncode == 0
        and latest_complete_checkpoint(open_store(plan.checkpoint_uri, _settings(s3_server))).step == 10
    ), output(first)
    shutil.rmtree(tmp_path / "scratch")
    second = run_engine(plan, env=_env(tmp_path, s3_server))
    assert second.returncode == 0, output(second)
    assert f"resumed from {plan.checkpoint_uri}/step-10" in second.stdout
    assert list((tmp_path / "scratch").rglob("restore/step-10/*.pt")), "downloaded from the store"
    losses = metric_history(plan, "train_loss")
    assert [s for s, _ in losses] == list(range(1, STEPS + 1)), "every step once in MLflow"
    expected = [v for _, v in metric_history(reference, "train_loss")]
    assert [v for _, v in losses] == pytest.approx(expected, rel=1e-6, abs=1e-7)


@pytest.fixture
def own_server(tmp_path):
    server = S3Server(tmp_path / "s3").start().wait_ready()
    try:
        yield server
    finally:
        server.stop()


def _pause_while_uploading(server: S3Server, scratch: Path, seconds: float, stop: threading.Event):
    """Pause the server as soon as a rank starts writing a checkpoint's shards to scratch."""
    while not stop.is_set():
        if list(scratch.rglob("step-*/*.pt")):
            server.pause()
            stop.wait(seconds)
            server.resume()
            return
        time.sleep(0.02)


def _run_in_background(plan, env: dict, *args: str) -> subprocess.Popen:
    command, env = engine_command(plan, *args, env=env)
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_store_down_for_20s_during_an_upload_costs_training_nothing(own_server, tmp_path):
    """Training goes on while the server is paused, a save that comes meanwhile is skipped, the
    blocked time stays that of a local write, and the checkpoint completes once the store is back.
    (300 steps of the tiny model take longer than the outage, so the last save finds the store up.)"""
    plan = _plan(tmp_path, own_server, "outage", deadline_s=120, interval=20, steps=LONG)
    env = _env(tmp_path, own_server)
    stop = threading.Event()
    pauser = threading.Thread(
        target=_pause_while_uploading, args=(own_server, tmp_path / "scratch", 20, stop), daemon=True
    )
    pauser.start()
    process = _run_in_background(plan, env, "--slow-uploads", "0.5")
    try:
        out, err = process.communicate(timeout=600)
    finally:
        stop.set()
        own_server.resume()
    assert process.returncode == 0, out[-3000:] + err[-4000:]
    store = open_store(plan.checkpoint_uri, _settings(own_server))
    assert latest_complete_checkpoint(store).step == LONG
    assert "still uploading" in out, "saves that came during the outage were skipped"
    # the last save waits for the upload under way (a run ends with its checkpoint stored); no other
    blocked = {s: v for s, v in metric_history(plan, "checkpoint_seconds") if s < LONG}
    uploads = dict(metric_history(plan, "checkpoint_upload_seconds"))
    assert max(uploads.values()) > 15, "one upload waited out the outage"
    assert max(blocked.values()) < 5 * statistics.median(blocked.values()) + 0.5, blocked
    paused_at = min(step for step, seconds in uploads.items() if seconds > 15)
    from orchestrator.track.mlflow_run import client

    history = client(plan.tracking_uri).get_metric_history
    saved = next(m.timestamp for m in history(plan.run_id, "checkpoint_seconds") if m.step == paused_at)
    during = [m.step for m in history(plan.run_id, "train_loss") if saved < m.timestamp < saved + 12_000]
    assert len(during) >= 3 and min(during) > paused_at, "training went on while the store was down"
    assert max(m.step for m in history(plan.run_id, "train_loss")) == LONG


def test_a_half_uploaded_checkpoint_is_never_loaded(own_server, tmp_path):
    """Every rank killed while the server is paused mid-upload: the checkpoint has no COMPLETE, and the
    next attempt restores the one before it."""
    plan = _plan(tmp_path, own_server, "half", interval=5)
    env = _env(tmp_path, own_server)
    first = run_engine(plan, "--stop-after-step", "5", env=env)
    assert first.returncode == 0, output(first)
    process = _run_in_background(plan, env, "--slow-uploads", "1")
    try:
        while not list((tmp_path / "scratch").rglob("step-10/*.pt")):
            assert process.poll() is None, process.communicate()
            time.sleep(0.02)
        own_server.pause()
        time.sleep(2)
        process.kill()
        subprocess.run(["pkill", "-9", "-f", str(Path(plan.checkpoint_dir).with_suffix(".plan.pkl"))])
        process.wait(60)
    finally:
        own_server.resume()
    store = open_store(plan.checkpoint_uri, _settings(own_server))
    assert not store.exists(f"step-10/{MARKER}") and latest_complete_checkpoint(store).step == 5
    second = run_engine(plan, env=env)
    assert second.returncode == 0, output(second)
    assert f"resumed from {plan.checkpoint_uri}/step-5 " in second.stdout


def test_a_store_that_never_comes_back_fails_the_run_clearly(own_server, tmp_path):
    plan = _plan(tmp_path, own_server, "gone", deadline_s=4, interval=10)
    env = _env(tmp_path, own_server)
    stop = threading.Event()
    pauser = threading.Thread(
        target=_pause_while_uploading, args=(own_server, tmp_path / "scratch", 60, stop), daemon=True
    )
    pauser.start()
    try:
        result = run_engine(plan, "--slow-uploads", "0.5", env=env, timeout=300)
    finally:
        stop.set()
        own_server.resume()
    assert result.returncode != 0
    assert "the upload of checkpoint step-10 failed" in result.stderr + result.stdout, output(result)
    assert "storage.retry_deadline_s" in result.stderr + result.stdout
    assert not open_store(plan.checkpoint_uri, _settings(own_server)).exists(f"step-10/{MARKER}")
