"""SIGTERM ends a run the way Ctrl-C does.

Schedulers, `timeout` and Kubernetes stop a job with SIGTERM. The orchestrator treats it exactly like
Ctrl-C (SIGINT): whatever SIGINT handler is active runs (Ray Train's graceful abort while training;
otherwise a KeyboardInterrupt), so the run is marked KILLED and the command exits with 130. Ray
installs its own SIGTERM handlers when it starts (they kill the local Ray processes and exit, which
ended in SIGABRT), so a launcher calls ``sigterm_like_sigint()`` again once Ray is up.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


def _forward_to_sigint(signum, frame) -> None:
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler) and handler is not signal.default_int_handler:
        handler(signal.SIGINT, frame)  # e.g. Ray Train's "abort the run gracefully"
    else:
        raise KeyboardInterrupt


def sigterm_like_sigint() -> None:
    """From now on SIGTERM does what SIGINT does (only the main thread may set handlers)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _forward_to_sigint)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block SIGTERM acts like Ctrl-C; the previous handler comes back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _forward_to_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def forget_handled_interrupts() -> None:
    """Keep the exit code this process returns once it has handled a Ctrl-C.

    CPython notes a KeyboardInterrupt that escapes code run by ``exec`` of a string (dataclasses
    build their methods so: a Ctrl-C during an import lands there often) as unhandled, even when a
    caller catches it later, and then ends ``python -m ...`` by SIGINT instead of with the code
    ``main`` returned (130 becomes -2 to a parent process). Each ``exec`` of a string clears that note
    first; an empty one clears it and runs nothing."""
    exec("")
