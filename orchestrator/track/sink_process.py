"""A metric sink run in a child process at idle CPU priority, so that writing it never holds up a step.

Drawing the live plots takes rank 0 a good part of a second; done in the training process, every
other rank waits for it at the next collective. MLflow's client, its import and its sender thread
cost CPU time and the GIL too. ``ChildProcessSink`` hands events to a feeder thread (``write`` never
blocks, even when the child is busy or starved of CPU) which pickles them into the child's stdin;
the child (``python -m orchestrator.track.sink_process``, Linux ``SCHED_IDLE``) builds the sink from
a picklable factory and writes whatever arrived while it was busy in one ``write`` call, so a slow
sink falls behind by at most one write instead of slowing training. ``close`` waits for the child to
write everything and close its sink; if the training process dies, the child sees the end of its
input and does the same.

>>> from functools import partial
>>> from orchestrator.track.live_report import LiveArtifacts
>>> sink = ChildProcessSink(partial(LiveArtifacts, "/tmp/run", ("json",)))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path

from orchestrator.track.events import MetricEvent

_CLOSE = None


class ChildProcessSink:
    def __init__(
        self,
        factory: Callable[[], object],
        close_timeout_s: float = 600.0,
        say: Callable[[str], None] = lambda line: print(line, flush=True),
    ):
        self._close_timeout_s, self._say = close_timeout_s, say
        package_root = str(Path(__file__).resolve().parents[2])
        path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
        self._child = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.track.sink_process"],
            stdin=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": path},
        )
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self._outbox.put(factory)
        self._feeder = threading.Thread(target=self._feed, name="sink-process-feeder", daemon=True)
        self._feeder.start()

    def write(self, events: list[MetricEvent]) -> None:
        self._outbox.put(list(events))

    write_points = write  # what the journal hands on: stamped points, pickled alike

    def close(self) -> None:
        """Wait until the child has written everything and closed its sink."""
        self._outbox.put(_CLOSE)
        self._feeder.join()
        try:
            code = self._child.wait(self._close_timeout_s)
        except subprocess.TimeoutExpired:
            self._child.kill()
            code = self._child.wait()
        if code != 0:
            self._say(
                f"[track] the background tracking process ended with exit code {code}: metric points it "
                "did not send are in the run's journal (the driver replays it when the run ends, "
                "`orchestrator sync RUN_ID` otherwise) and `orchestrator report RUN_ID` rebuilds the report"
            )

    def _feed(self) -> None:
        pipe = self._child.stdin
        while True:
            item = self._outbox.get()
            if item is _CLOSE:
                break
            try:
                pickle.dump(item, pipe, protocol=pickle.HIGHEST_PROTOCOL)
                pipe.flush()
            except (BrokenPipeError, OSError):  # the child is gone: close() reports its exit code
                break
        with contextlib.suppress(OSError):
            pipe.close()


def _read_frames(stream, inbox: queue.SimpleQueue) -> None:
    """Every pickled frame from ``stream``, then ``_CLOSE`` (at the end, or at a torn last frame that
    a killed parent left); a frame that cannot be loaded (a missing module) is passed on to raise."""
    try:
        while True:
            inbox.put(pickle.load(stream))
    except (EOFError, pickle.UnpicklingError, OSError):
        pass
    except Exception as exc:
        inbox.put(exc)
    finally:
        inbox.put(_CLOSE)


def _next(inbox: queue.SimpleQueue, block: bool = True):
    item = inbox.get() if block else inbox.get_nowait()
    if isinstance(item, Exception):
        raise item
    return item


def lower_priority() -> None:
    """Linux SCHED_IDLE: run only on CPU time no other process of the run wants (the ranks block in
    their collectives often enough); elsewhere the lowest nice value."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        with contextlib.suppress(AttributeError, OSError):
            os.nice(19)


def serve(stream) -> None:
    """The child: build the sink from the first frame, write every batch, close at the end."""
    lower_priority()
    inbox: queue.SimpleQueue = queue.SimpleQueue()
    threading.Thread(target=_read_frames, args=(stream, inbox), daemon=True).start()
    factory = _next(inbox)
    if factory is _CLOSE:
        return
    sink, done = factory(), False
    while not done:
        batch = _next(inbox)
        done = batch is _CLOSE
        events = [] if done else list(batch)
        while not done:  # everything that arrived while the last write ran: one write
            try:
                more = _next(inbox, block=False)
            except queue.Empty:
                break
            done = more is _CLOSE
            events += [] if done else more
        if events:
            sink.write(events)
    sink.close()


def main() -> None:
    try:
        serve(sys.stdin.buffer)
    except Exception:
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)  # the reader thread may still be blocked on stdin: no interpreter shutdown


if __name__ == "__main__":
    main()
