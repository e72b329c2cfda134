"""Who drives a run now: a lease that its driver renews while it trains, and that a dead process
cannot keep.

    with hold_lease(plan):             # RunInUse (exit 2) while another live process holds it
        ...                            # launch, wait, finish
    holder = live_holder(store, run_id)  # the live holder's record, or None

The lease is ``lease.json`` in the run's checkpoint location, read and written through the storage
layer: a local or shared path or an object store, which every backend's driver (this machine's
`submit`, a Ray job's or a RayJob's driver on a cluster) and every command reaches alike. A file
lock would reach neither a cluster's job nor an object store.

Its holder rewrites it every ``RENEW_S`` seconds. It is live while it was renewed less than ``TTL_S``
ago by the holder's clock, and, seen from the holder's own host, while the holder's process exists:
a process that dies, even by SIGKILL, keeps it at most ``TTL_S`` (not at all for a command on its
host). Clocks of the machines involved must agree to well within ``TTL_S`` (NTP does).

Two processes that claim a free lease at the same moment: each writes its record, waits
``SETTLE_S`` and reads the lease back; only the one whose record is there goes on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from orchestrator.errors import OrchestratorError, ResumeError
from orchestrator.text import format_duration

LEASE_FILE = "lease.json"
TTL_S = 60.0
RENEW_S = 10.0
SETTLE_S = 0.3
MAX_TTL_S = 600.0
log = logging.getLogger(__name__)


class RunInUse(ResumeError):
    """Another live process drives the run (with where it runs and what to do)."""


@dataclass(frozen=True)
class LeaseRecord:
    run_id: str
    holder: str  # unique per process
    host: str
    pid: int
    renewed: float  # the holder's wall clock, seconds since the epoch
    ttl_s: float = TTL_S

    def live(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        ttl = min(self.ttl_s, MAX_TTL_S)  # an edited file cannot hold a run for ever
        if not -ttl < now - self.renewed < ttl:  # expired, or renewed "in the future" beyond any skew
            return False
        return self.host != socket.gethostname() or _process_exists(self.pid)

    def describe(self, now: float | None = None) -> str:
        age = max(0.0, (time.time() if now is None else now) - self.renewed)
        return f"pid {self.pid} on host {self.host}, its lease renewed {format_duration(age)} ago"

    def expires_in(self, now: float | None = None) -> float:
        return max(0.0, self.renewed + self.ttl_s - (time.time() if now is None else now))


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


_IDENTITY: dict[int, str] = {}  # pid -> this process's holder id (a fork gets its own)


def _holder() -> str:
    pid = os.getpid()
    if pid not in _IDENTITY:
        _IDENTITY[pid] = f"{socket.gethostname()}:{pid}:{secrets.token_hex(8)}"
    return _IDENTITY[pid]


def read_lease(store) -> LeaseRecord | None:
    """The lease in a run's checkpoint ``store``; None when there is none, or it is damaged (a record
    nobody could renew: an edited or half-written file is no lease)."""
    try:
        data = json.loads(store.read_bytes(LEASE_FILE))
        record = LeaseRecord(**data)
    except (FileNotFoundError, ValueError, TypeError):
        return None
    typed = (
        isinstance(record.run_id, str)
        and isinstance(record.holder, str)
        and isinstance(record.host, str)
        and type(record.pid) is int
        and all(_is_number(value) for value in (record.renewed, record.ttl_s))
    )
    return record if typed else None


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def live_holder(store, run_id: str) -> LeaseRecord | None:
    """The record of the live process that drives this run, if one does."""
    record = read_lease(store)
    if record is None or record.run_id != run_id or record.holder == _holder() or not record.live():
        return None
    return record


class Lease:
    """This process's claim on a run (see the module docstring)."""

    def __init__(self, store, run_id: str, run_name: str):
        self.store, self.run_id, self.run_name = store, run_id, run_name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> Lease:
        self._refuse_if_held()
        self._write()
        time.sleep(SETTLE_S)
        self._refuse_if_held()  # someone claimed it at the same moment, and won
        self._thread = threading.Thread(target=self._renew, name=f"lease-{self.run_name}", daemon=True)
        self._thread.start()
        return self

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with contextlib.suppress(OrchestratorError, OSError):
            record = read_lease(self.store)
            if record is not None and record.holder == _holder():
                self.store.delete(LEASE_FILE)

    def _refuse_if_held(self) -> None:
        holder = live_holder(self.store, self.run_id)
        if holder is not None:
            raise RunInUse(in_use_message(self.run_name, holder, self.store.describe(LEASE_FILE)))

    def _write(self) -> None:
        record = LeaseRecord(self.run_id, _holder(), socket.gethostname(), os.getpid(), time.time())
        self.store.write_bytes(LEASE_FILE, json.dumps(asdict(record)).encode())

    def _renew(self) -> None:
        warned = False
        while not self._stop.wait(RENEW_S):
            try:
                self._write()
                warned = False
            except (OrchestratorError, OSError) as exc:  # a full disk, a store outage: say so once
                if not warned:
                    log.warning("could not renew the lease of run %s (%s)", self.run_name, exc)
                    warned = True


def in_use_message(run_name: str, holder: LeaseRecord, where: str) -> str:
    return (
        f"run {run_name} is still training: its driver is {holder.describe()} ({where}); a second "
        f"trainer would share its directory and checkpoints. hint: wait for it to end, or stop it "
        f"there (Ctrl-C, or `kill {holder.pid}` on {holder.host}); if that process is gone, its lease "
        f"expires within {format_duration(holder.expires_in())}"
    )


@contextlib.contextmanager
def hold_lease(store, run_id: str, run_name: str) -> Iterator[Lease]:
    """Hold the run's lease for the block; RunInUse when another live process holds it."""
    lease = Lease(store, run_id, run_name).acquire()
    try:
        yield lease
    finally:
        lease.release()
