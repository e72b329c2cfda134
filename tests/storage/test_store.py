"""The storage layer on a local directory and on a real S3 server (SeaweedFS on loopback)."""

from __future__ import annotations

import os
import time

import pytest

from orchestrator.storage.store import StorageError, StoreSettings, open_store, retry_until
from tests.servers import S3Server


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return open_store(str(tmp_path / "root"))
    server = request.getfixturevalue("s3_server")
    settings = _settings(server)
    return open_store(request.getfixturevalue("s3_prefix"), settings)


def _settings(server: S3Server, **changes) -> StoreSettings:
    values = {
        "endpoint_url": server.endpoint,
        "region": "us-east-1",
        "access_key_id": server.access_key,
        "secret_access_key": server.secret_key,
        "retry_deadline_s": 20.0,
    }
    return StoreSettings(**{**values, **changes})


def test_write_read_list_download_delete(store, tmp_path):
    assert store.list() == []
    assert not store.exists("a/b.bin")
    store.write_bytes("a/b.bin", b"x" * 1000)
    store.write_bytes("a/c/d.txt", b"hello")
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(9 << 20))  # more than one copy chunk
    assert store.upload(source, "e/big.bin") == 9 << 20
    assert store.exists("a/b.bin") and store.exists("a")
    assert store.read_text("a/c/d.txt") == "hello"
    assert [(e.path, e.size) for e in store.list()] == [
        ("a/b.bin", 1000),
        ("a/c/d.txt", 5),
        ("e/big.bin", 9 << 20),
    ]
    assert [e.path for e in store.list("a", recursive=False)] == ["a/b.bin"]
    assert store.size("e/big.bin") == 9 << 20 and store.size("nothing") is None
    copied = store.download("e/big.bin", tmp_path / "out" / "big.bin")
    assert copied.read_bytes() == source.read_bytes()
    assert not list((tmp_path / "out").glob(".*part"))  # no temporary file left behind
    child = store.child("a")
    assert child.read_bytes("b.bin") == b"x" * 1000
    assert child.uri == store.uri.rstrip("/") + "/a"
    store.delete_tree("a")
    assert [e.path for e in store.list()] == ["e/big.bin"]
    store.delete("e/big.bin")
    store.delete("e/big.bin")  # deleting what is gone is no error
    assert store.list() == []
    with pytest.raises(FileNotFoundError):
        store.read_bytes("a/b.bin")


def test_a_write_replaces_the_old_content_whole(store):
    store.write_bytes("latest", b"step-10")
    store.write_bytes("latest", b"step-20")
    assert store.read_bytes("latest") == b"step-20"
    assert [e.path for e in store.list()] == ["latest"]


def test_a_wrong_key_is_refused_at_once_without_showing_it(s3_server, s3_prefix):
    wrong = "wrong-secret-" + "q" * 20
    store = open_store(s3_prefix, _settings(s3_server, secret_access_key=wrong))
    started = time.monotonic()
    with pytest.raises(StorageError) as caught:
        store.write_bytes("x", b"1")
    assert time.monotonic() - started < 10  # not retried until the deadline
    message = str(caught.value)
    assert "SIGNATURE_DOES_NOT_MATCH" in message or "ACCESS_DENIED" in message or "AccessDenied" in message
    assert "hint: check the access key" in message
    assert wrong not in message and s3_server.secret_key not in message
    assert wrong not in repr(store.settings) and s3_server.secret_key not in repr(store.settings)


def test_a_missing_bucket_is_named(s3_server):
    store = open_store("s3://no-such-bucket-here/x", _settings(s3_server))
    with pytest.raises(StorageError, match=r"no-such-bucket-here.*does not exist.*create the bucket"):
        store.write_bytes("x", b"1")


def test_an_unreachable_store_is_retried_until_the_deadline_then_named():
    from orchestrator.net import free_port

    settings = StoreSettings(
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        access_key_id="k" * 10,
        secret_access_key="s" * 20,
        retry_deadline_s=3.0,
    )
    store = open_store("s3://orchestrator-tests/x", settings)
    started = time.monotonic()
    with pytest.raises(StorageError, match=r"after \d+ attempts in 3s.*storage.retry_deadline_s"):
        store.read_bytes("x")
    assert 2.0 < time.monotonic() - started < 15


def test_retry_until_rides_out_transient_failures_and_stops_on_permanent_ones():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 4:
            raise OSError("AWS Error NETWORK_CONNECTION during PutObject operation: curlCode: 7")
        return "done"

    slept = []
    settings = StoreSettings(retry_deadline_s=60)
    assert retry_until("write x", flaky, settings, sleep=slept.append) == "done"
    assert slept == [0.5, 1.0, 2.0]

    def denied():
        raise OSError("AWS Error ACCESS_DENIED during PutObject operation")

    with pytest.raises(StorageError, match=r"could not write x: .*ACCESS_DENIED"):
        retry_until("write x", denied, settings, sleep=slept.append)
    assert slept == [0.5, 1.0, 2.0]  # no pause before giving up


def test_settings_come_from_the_spec_then_the_standard_variables(monkeypatch):
    from orchestrator.spec import parse_spec

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "env-key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret-value")
    monkeypatch.setenv("MY_KEY", "spec-key-id")
    monkeypatch.setenv("MY_SECRET", "spec-secret-value")
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    from_env = StoreSettings.from_env()
    assert (from_env.endpoint_url, from_env.access_key_id) == ("http://127.0.0.1:9", "env-key-id")
    spec = parse_spec(
        "name: x\nstorage:\n  endpoint_url: http://127.0.0.1:8\n  access_key_id: ${env:MY_KEY}\n"
        "  secret_access_key: ${env:MY_SECRET}\n  retry_deadline_s: 7\n"
    )
    given = StoreSettings.from_env(spec.storage)
    assert given.endpoint_url == "http://127.0.0.1:8"
    assert (given.access_key_id, given.secret_access_key) == ("spec-key-id", "spec-secret-value")
    assert given.retry_deadline_s == 7
    assert given.environment()["AWS_SECRET_ACCESS_KEY"] == "spec-secret-value"
    assert "spec-secret-value" not in repr(given)


def test_ray_gets_the_same_filesystem(s3_server, s3_prefix):
    import pyarrow.fs

    store = open_store(s3_prefix, _settings(s3_server))
    store.write_bytes("ray/marker", b"1")
    filesystem, root = store.filesystem()
    assert isinstance(filesystem, pyarrow.fs.S3FileSystem)
    assert filesystem.get_file_info(f"{root}/ray/marker").size == 1
