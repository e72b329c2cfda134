"""A ``Store``: one root location (a local or mounted directory, or ``s3://bucket/prefix``) and the
few operations the project needs on it, the same for both.

>>> store = open_store("s3://checkpoints/runs", StoreSettings.from_env())  # doctest: +SKIP
>>> store.write_bytes("run-1/latest", b"step-40")                           # doctest: +SKIP
>>> store.read_bytes("run-1/latest")                                        # doctest: +SKIP
b'step-40'

Object stores go through ``pyarrow.fs.S3FileSystem`` (what Ray Train uses, so Ray gets the same
filesystem object). pyarrow does not read ``AWS_ENDPOINT_URL`` by itself: the endpoint (and its
scheme) is read here and passed explicitly. Each request fails fast (short timeouts, one attempt),
and the store retries it with a pause that grows, until ``retry_deadline_s`` has passed since the
operation began: an outage shorter than that costs time, never the run. Errors that no retry can
mend (a wrong key, a missing bucket) fail at once, naming the store and the fix.

Writes are whole or absent: a local file is written beside its name and renamed; an object appears
when its upload completes. Credentials never appear in a message or a ``repr``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from orchestrator.errors import OrchestratorError
from orchestrator.storage.location import Location, parse_location

T = TypeVar("T")
# What pyarrow's AWS errors say when a retry cannot help.
_PERMANENT = (
    "ACCESS_DENIED",
    "SIGNATURE_DOES_NOT_MATCH",
    "INVALID_ACCESS_KEY_ID",
    "NO_SUCH_BUCKET",
    "AccessDenied",
    "InvalidAccessKeyId",
    "NoSuchBucket",
)
_COPY_CHUNK = 8 << 20


class StorageError(OrchestratorError):
    """A store could not be used: what was tried, where, and what to do."""


@dataclass(frozen=True)
class StoreSettings:
    """How to reach object stores: the spec's ``storage`` section where set, else the standard AWS
    variables of the process that uses the store (each node reads its own environment)."""

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    retry_deadline_s: float = 300.0

    @classmethod
    def from_env(cls, spec_storage=None) -> StoreSettings:
        env = os.environ
        given = spec_storage
        return cls(
            endpoint_url=(given and given.endpoint_url)
            or env.get("AWS_ENDPOINT_URL_S3")
            or env.get("AWS_ENDPOINT_URL"),
            region=(given and given.region) or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"),
            access_key_id=(given and given.access_key_id) or env.get("AWS_ACCESS_KEY_ID"),
            secret_access_key=(given and given.secret_access_key) or env.get("AWS_SECRET_ACCESS_KEY"),
            session_token=None if given and given.access_key_id else env.get("AWS_SESSION_TOKEN"),
            retry_deadline_s=given.retry_deadline_s if given else cls.retry_deadline_s,
        )

    def environment(self) -> dict[str, str]:
        """The standard variables that make another process reach the same store."""
        pairs = {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_REGION": self.region,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_SESSION_TOKEN": self.session_token,
        }
        return {name: value for name, value in pairs.items() if value}

    def secrets(self) -> list[str]:
        return [s for s in (self.access_key_id, self.secret_access_key, self.session_token) if s]


@dataclass(frozen=True)
class Entry:
    """One file under a store's root: its path relative to the root, and its size."""

    path: str
    size: int


def open_store(uri: str, settings: StoreSettings | None = None) -> Store:
    """The store rooted at ``uri`` (a path, ``file:///...`` or ``s3://bucket/prefix``)."""
    location = parse_location(uri)
    settings = settings or StoreSettings.from_env()
    if location.is_local:
        return Store(location, _LocalBackend(Path(location.key)), settings)
    return Store(location, _S3Backend(location, settings), settings)


class Store:
    def __init__(self, location: Location, backend, settings: StoreSettings):
        self.location, self._backend, self.settings = location, backend, settings

    def __repr__(self) -> str:
        return f"Store({self.location.uri!r})"

    @property
    def uri(self) -> str:
        return self.location.uri

    @property
    def is_local(self) -> bool:
        return self.location.is_local

    def child(self, *parts: str) -> Store:
        """The store rooted at a path below this one."""
        return Store(self.location.child(*parts), self._backend.child(*parts), self.settings)

    def describe(self, path: str = "") -> str:
        return self.location.child(path).uri if path else self.uri

    def local_path(self, path: str = "") -> Path | None:
        """The file's path on this machine when the store is a directory here (mmap it), else None."""
        return self._backend.root.joinpath(path) if self.is_local else None

    # --- reading ---------------------------------------------------------------------------

    def exists(self, path: str) -> bool:
        return self._retrying(f"look up {self.describe(path)}", lambda: self._backend.exists(path))

    def read_bytes(self, path: str) -> bytes:
        return self._retrying(f"read {self.describe(path)}", lambda: self._backend.read_bytes(path))

    def read_text(self, path: str) -> str:
        return self.read_bytes(path).decode("utf-8")

    def size(self, path: str) -> int | None:
        """The file's size, or None when there is none."""
        return self._retrying(f"look up {self.describe(path)}", lambda: self._backend.size(path))

    def list(self, path: str = "", recursive: bool = True) -> list[Entry]:
        """Files under ``path`` (relative to this store's root), sorted; [] when there are none."""
        found = self._retrying(f"list {self.describe(path)}", lambda: self._backend.list(path, recursive))
        return sorted(found, key=lambda entry: entry.path)

    def download(self, path: str, target: Path) -> Path:
        """Copy a file to ``target`` on this machine (whole or not at all)."""
        target = Path(target)
        target.parent.mkdir(parents=True, exist_ok=True)

        def copy() -> Path:
            with _replacing(target) as tmp:
                self._backend.download(path, tmp)
            return target

        return self._retrying(f"download {self.describe(path)}", copy)

    # --- writing -----------------------------------------------------------------------------

    def write_bytes(self, path: str, payload: bytes) -> None:
        """Readers see the old content or the new, never part of it."""
        self._retrying(f"write {self.describe(path)}", lambda: self._backend.write_bytes(path, payload))

    def upload(self, source: Path, path: str) -> int:
        """Copy a local file into the store (whole or not at all); its size."""
        what = f"upload {source} to {self.describe(path)}"
        self._retrying(what, lambda: self._backend.upload(source, path))
        return Path(source).stat().st_size

    def delete(self, path: str) -> None:
        self._retrying(f"delete {self.describe(path)}", lambda: self._backend.delete(path))

    def delete_tree(self, path: str) -> None:
        """Everything under ``path``; nothing happens when there is nothing."""
        self._retrying(f"delete {self.describe(path)}", lambda: self._backend.delete_tree(path))

    def filesystem(self):
        """(pyarrow filesystem, path of the root in it): what Ray Train's ``storage_filesystem``
        and ``storage_path`` take."""
        return self._backend.pyarrow(), self._backend.arrow_path("")

    # --- retrying ----------------------------------------------------------------------------

    def _retrying(self, what: str, operation: Callable[[], T]) -> T:
        if self.is_local:
            try:
                return operation()
            except FileNotFoundError:
                raise
            except OSError as exc:
                raise StorageError(f"could not {what}: {exc.strerror or exc}") from None
        return retry_until(what, operation, self.settings)


def retry_until(what: str, operation: Callable[[], T], settings: StoreSettings, sleep=time.sleep) -> T:
    """``operation()`` again and again while it fails with a transient error, until the deadline."""
    deadline = time.monotonic() + settings.retry_deadline_s
    pause, attempts = 0.5, 0
    while True:
        attempts += 1
        try:
            return operation()
        except FileNotFoundError:
            raise
        except OSError as exc:
            reason = _reason(exc, settings)
            if _permanent(reason):
                raise StorageError(f"could not {what}: {reason}; {_fix(reason)}") from None
            left = deadline - time.monotonic()
            if left <= 0:
                raise StorageError(
                    f"could not {what} after {attempts} attempts in {settings.retry_deadline_s:g}s: "
                    f"{reason}; hint: check that the store is up and reachable, or raise "
                    "storage.retry_deadline_s"
                ) from None
            sleep(min(pause, left))
            pause = min(pause * 2, 10.0)


def _reason(exc: OSError, settings: StoreSettings) -> str:
    from orchestrator.masking import mask_values

    return mask_values(" ".join(str(exc).split())[:400], settings.secrets())


def _permanent(reason: str) -> bool:
    return any(code in reason for code in _PERMANENT)


def _fix(reason: str) -> str:
    if "NO_SUCH_BUCKET" in reason or "NoSuchBucket" in reason:
        return "hint: create the bucket first, or fix its name in the URI"
    return (
        "hint: check the access key and secret (storage.access_key_id/secret_access_key, or "
        "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) and the endpoint (storage.endpoint_url or AWS_ENDPOINT_URL)"
    )


@contextlib.contextmanager
def _replacing(target: Path) -> Iterator[Path]:
    """A temporary file beside ``target`` that replaces it when the block succeeds."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _LocalBackend:
    """A directory on this machine (or one every node mounts)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def child(self, *parts: str) -> _LocalBackend:
        return _LocalBackend(self.root.joinpath(*parts))

    def _path(self, path: str) -> Path:
        return self.root / path if path else self.root

    def exists(self, path: str) -> bool:
        return self._path(path).exists()

    def read_bytes(self, path: str) -> bytes:
        return self._path(path).read_bytes()

    def size(self, path: str) -> int | None:
        target = self._path(path)
        return target.stat().st_size if target.is_file() else None

    def list(self, path: str, recursive: bool) -> list[Entry]:
        base = self._path(path)
        if not base.is_dir():
            return []
        walk = base.rglob("*") if recursive else base.iterdir()
        return [
            Entry(str(p.relative_to(self.root)), p.stat().st_size)
            for p in walk
            if p.is_file() and not p.name.endswith(".part")
        ]

    def download(self, path: str, target: Path) -> None:
        shutil.copyfile(self._path(path), target)

    def write_bytes(self, path: str, payload: bytes) -> None:
        target = self._path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with _replacing(target) as tmp:
            tmp.write_bytes(payload)

    def upload(self, source: Path, path: str) -> None:
        target = self._path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        if Path(source).resolve() == target.resolve():
            return
        with _replacing(target) as tmp:
            shutil.copyfile(source, tmp)

    def delete(self, path: str) -> None:
        self._path(path).unlink(missing_ok=True)

    def delete_tree(self, path: str) -> None:
        target = self._path(path)
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)

    def pyarrow(self):
        import pyarrow.fs

        return pyarrow.fs.LocalFileSystem()

    def arrow_path(self, path: str) -> str:
        return str(self._path(path).resolve())


class _S3Backend:
    """An S3 bucket and prefix through pyarrow's S3 filesystem."""

    def __init__(self, location: Location, settings: StoreSettings, filesystem=None):
        self.location, self.settings = location, settings
        self._fs = filesystem

    def child(self, *parts: str) -> _S3Backend:
        return _S3Backend(self.location.child(*parts), self.settings, self._fs)

    def pyarrow(self):
        if self._fs is None:
            self._fs = s3_filesystem(self.settings)
        return self._fs

    def arrow_path(self, path: str) -> str:
        return "/".join(filter(None, [self.location.bucket, self.location.key, path.strip("/")]))

    def _info(self, path: str):
        return self.pyarrow().get_file_info(self.arrow_path(path))

    def exists(self, path: str) -> bool:
        import pyarrow.fs

        return self._info(path).type != pyarrow.fs.FileType.NotFound

    def size(self, path: str) -> int | None:
        import pyarrow.fs

        info = self._info(path)
        return info.size if info.type == pyarrow.fs.FileType.File else None

    def read_bytes(self, path: str) -> bytes:
        with self.pyarrow().open_input_stream(self.arrow_path(path)) as stream:
            return stream.read()

    def list(self, path: str, recursive: bool) -> list[Entry]:
        import pyarrow.fs

        self._require_bucket()
        base = self.arrow_path(path)
        selector = pyarrow.fs.FileSelector(base, recursive=recursive, allow_not_found=True)
        root = self.arrow_path("")
        return [
            Entry(info.path[len(root) :].lstrip("/"), info.size)
            for info in self.pyarrow().get_file_info(selector)
            if info.type == pyarrow.fs.FileType.File
        ]

    def download(self, path: str, target: Path) -> None:
        with self.pyarrow().open_input_stream(self.arrow_path(path)) as stream, open(target, "wb") as out:
            while chunk := stream.read(_COPY_CHUNK):
                out.write(chunk)

    def write_bytes(self, path: str, payload: bytes) -> None:
        self._require_bucket()
        with self.pyarrow().open_output_stream(self.arrow_path(path)) as stream:
            stream.write(payload)

    def upload(self, source: Path, path: str) -> None:
        self._require_bucket()
        with open(source, "rb") as handle, self.pyarrow().open_output_stream(self.arrow_path(path)) as out:
            while chunk := handle.read(_COPY_CHUNK):
                out.write(chunk)

    def delete(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.pyarrow().delete_file(self.arrow_path(path))

    def delete_tree(self, path: str) -> None:
        for entry in self.list(path, recursive=True):
            self.delete(entry.path)

    def _require_bucket(self) -> None:
        """Some S3 servers answer a write into a missing bucket with an internal error, which would be
        retried until the deadline: name the real problem at once."""
        import pyarrow.fs

        if self.pyarrow().get_file_info(self.location.bucket).type == pyarrow.fs.FileType.NotFound:
            endpoint = self.settings.endpoint_url or "the default AWS endpoint"
            raise OSError(f"NO_SUCH_BUCKET: bucket {self.location.bucket!r} does not exist at {endpoint}")


def s3_filesystem(settings: StoreSettings):
    """pyarrow's S3 filesystem for these settings: explicit endpoint and scheme, short timeouts and a
    single attempt per request (the store retries whole operations until its own deadline)."""
    import pyarrow.fs

    options: dict = {
        "region": settings.region or "us-east-1",
        "retry_strategy": pyarrow.fs.AwsStandardS3RetryStrategy(max_attempts=1),
        "connect_timeout": 5,
        # a hung store (accepting connections, answering nothing) must fail an attempt well within the
        # operation's deadline; the timeout is of inactivity, not of a whole transfer
        "request_timeout": max(3.0, min(30.0, settings.retry_deadline_s / 3)),
    }
    if settings.endpoint_url:
        scheme, _, rest = settings.endpoint_url.partition("://")
        options["endpoint_override"] = rest.rstrip("/") if rest else scheme.rstrip("/")
        options["scheme"] = scheme if rest else "https"
    if settings.access_key_id and settings.secret_access_key:
        options.update(access_key=settings.access_key_id, secret_key=settings.secret_access_key)
        if settings.session_token:
            options["session_token"] = settings.session_token
    return pyarrow.fs.S3FileSystem(**options)
