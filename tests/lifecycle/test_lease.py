"""A run's lease, in its checkpoint location on a local path and on the S3 server alike: a live holder
keeps every other process out, a holder killed by SIGKILL keeps nobody out, a holder on another
host keeps the lease only until it expires, and a damaged lease file is no lease."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from orchestrator.lifecycle.lease import LEASE_FILE, TTL_S, Lease, RunInUse, live_holder, read_lease
from orchestrator.storage.store import StoreSettings, open_store
from tests.conftest import REPO

HOLD = """
import sys, time
from orchestrator.lifecycle.lease import hold_lease
from orchestrator.storage.store import StoreSettings, open_store
with hold_lease(open_store(sys.argv[1], StoreSettings.from_env()), "run-1", "demo"):
    print("held", flush=True)
    time.sleep(600)
"""


@pytest.fixture(params=["local", "s3"])
def location(request, tmp_path):
    """(checkpoint location, the environment that reaches it)"""
    if request.param == "local":
        return str(tmp_path / "run"), dict(os.environ)
    server = request.getfixturevalue("s3_server")
    return request.getfixturevalue("s3_prefix"), {**os.environ, **server.env()}


def store_of(location):
    where, env = location
    keys = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")
    settings = StoreSettings(
        endpoint_url=env.get(keys[0]), access_key_id=env.get(keys[1]), secret_access_key=env.get(keys[2])
    )
    return open_store(where, settings if where.startswith("s3://") else None)


@pytest.mark.timeout(120)
def test_a_live_holder_keeps_others_out_and_one_killed_keeps_nobody_out(location):
    where, env = location
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, where],
        stdout=subprocess.PIPE, text=True, env={**env, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        store = store_of(location)
        record = live_holder(store, "run-1")
        assert record is not None and record.pid == holder.pid and record.host == socket.gethostname()
        with pytest.raises(RunInUse, match=f"pid {holder.pid}"):
            Lease(store, "run-1", "demo").acquire()
        holder.send_signal(signal.SIGKILL)  # no chance to release it
        holder.wait(30)
        assert read_lease(store) is not None, "the dead holder's record is still there"
        assert live_holder(store, "run-1") is None, "but a dead process keeps nothing"
        lease = Lease(store, "run-1", "demo").acquire()
        assert read_lease(store).pid == os.getpid()
        lease.release()
        assert read_lease(store) is None
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)


def test_a_holder_on_another_host_keeps_the_lease_until_it_expires(location):
    store = store_of(location)
    for age, live in ((5.0, True), (TTL_S + 1, False)):
        record = {
            "run_id": "run-1",
            "holder": "h",
            "host": "elsewhere",
            "pid": 1,
            "renewed": time.time() - age,
        }
        store.write_bytes(LEASE_FILE, json.dumps(record).encode())
        assert (live_holder(store, "run-1") is not None) is live, age
    assert live_holder(store, "another-run") is None  # a lease of another run is not this run's


@pytest.mark.parametrize(
    "damaged",
    [b"", b"{", b"[]", b'{"run_id": "run-1"}', b'{"run_id": "run-1", "holder": "h", "host": "x", "pid": "1",'
     b' "renewed": 1e18}', b"\xff\xfe", b'{"run_id": "run-1", "holder": "h", "host": "x", "pid": 1, '
     b'"renewed": NaN}'],
)  # fmt: skip
def test_a_damaged_lease_is_no_lease(tmp_path, damaged):
    store = open_store(str(tmp_path / "run"))
    store.write_bytes(LEASE_FILE, damaged)
    assert read_lease(store) is None and live_holder(store, "run-1") is None
    Lease(store, "run-1", "demo").acquire().release()


def test_an_edited_lease_cannot_hold_a_run_for_ever(tmp_path):
    store = open_store(str(tmp_path / "run"))
    for edit in ({"renewed": time.time() + 10 * TTL_S}, {"renewed": time.time() - 3600, "ttl_s": 1e12}):
        record = {"run_id": "run-1", "holder": "h", "host": "elsewhere", "pid": 1, **edit}
        store.write_bytes(LEASE_FILE, json.dumps(record).encode())
        assert live_holder(store, "run-1") is None, edit
