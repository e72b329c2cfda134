"""Metric points -> MLflow (batched, on a background thread). In a run it sits behind the journal
(``orchestrator.track.pipeline``), which has written every point before it gets here.

``write`` never waits for the network: it queues the points.
A daemon thread sends the queue in batches of at most ``MAX_METRICS_PER_BATCH`` (MLflow's per-request
limit). When MLflow is unreachable it keeps the points and tries again with a growing pause, so an
outage costs the training loop nothing; once MLflow is back everything queued goes out. Points that
are still unsent when the run ends stay in the journal for ``orchestrator sync``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from orchestrator.text import first_line, mask_uri_passwords
from orchestrator.track.events import MetricEvent
from orchestrator.track.journal import MetricPoint
from orchestrator.track.mlflow_run import MAX_METRICS_PER_BATCH, client, log_points


@dataclass(frozen=True)
class SinkSettings:
    flush_interval_s: float = 1.0  # the longest a point waits for its batch
    drain_timeout_s: float = 60.0  # at close, how long to keep trying to deliver what is left
    max_backoff_s: float = 10.0  # longest pause between tries while MLflow is unreachable


def stamp(events: list[MetricEvent]) -> list[MetricPoint]:
    """The events as points with the time MLflow will record (one timestamp for the batch)."""
    now = int(time.time() * 1000)
    return [MetricPoint(e.name, float(e.value), e.step, now) for e in events]


class MlflowSink:
    def __init__(
        self,
        tracking_uri: str,
        run_id: str,
        settings: SinkSettings = SinkSettings(),
        say: Callable[[str], None] = lambda line: print(line, flush=True),
    ):
        self._sender = _Sender(tracking_uri, run_id, settings, say)
        self._sender.start()

    def write(self, events: list[MetricEvent]) -> None:
        self.write_points(stamp(events))

    def write_points(self, points: list[MetricPoint]) -> None:
        """Send points stamped (and journaled) elsewhere exactly as they are."""
        self._sender.queued += len(points)
        self._sender.inbox.put(points)

    def flush(self, timeout_s: float = 60.0) -> bool:
        """Wait until everything written so far reached MLflow; False if it did not in time."""
        target, deadline = self._sender.queued, time.monotonic() + timeout_s
        while self._sender.sent < target and time.monotonic() < deadline and self._sender.is_alive():
            self._sender.nudge()
            time.sleep(0.01)
        return self._sender.sent >= target

    def close(self) -> None:
        """Deliver what is queued (up to ``drain_timeout_s``)."""
        self._sender.finish()

    @property
    def sent(self) -> int:
        return self._sender.sent

    @property
    def unsent(self) -> int:
        return self._sender.unsent


class _Sender(threading.Thread):
    def __init__(self, tracking_uri: str, run_id: str, settings: SinkSettings, say):
        super().__init__(name="mlflow-sink", daemon=True)
        self.inbox: queue.Queue[list[MetricPoint]] = queue.Queue()
        self.queued = 0  # points handed in by write()
        self.sent = 0  # points MLflow acknowledged
        self._uri, self._run_id, self._settings, self._say = tracking_uri, run_id, settings, say
        self._pending: list[MetricPoint] = []
        self._stop_at: float | None = None  # monotonic deadline, set by finish()
        self._wake = threading.Event()
        self._failures = 0

    @property
    def unsent(self) -> int:
        return len(self._pending) + sum(len(batch) for batch in list(self.inbox.queue))

    def nudge(self) -> None:
        """Cut a pause between tries short (a flush is waiting)."""
        self._wake.set()

    def finish(self) -> None:
        self._stop_at = time.monotonic() + self._settings.drain_timeout_s
        self._wake.set()
        self.join(self._settings.drain_timeout_s + 5)
        if self.unsent:
            self._say(
                f"[track] {self.unsent} metric points could not reach MLflow "
                f"({mask_uri_passwords(self._uri)}); they are "
                f"in the journal: run `orchestrator sync {self._run_id}` when MLflow is reachable"
            )

    def run(self) -> None:
        mlflow = self._client_early()
        while True:
            self._collect()
            if self._pending:
                try:
                    mlflow = mlflow or client(self._uri)
                    self._send(mlflow)
                except Exception as exc:  # any failure: keep the points, pause, try again
                    self._note_failure(exc)
            if self._stop_at is not None and (self.unsent == 0 or time.monotonic() > self._stop_at):
                return

    def _client_early(self):
        """MLflow's import and store set-up (seconds of CPU) as the sink starts, not at the first
        batch in the middle of training; if it fails, the first send tries again and says why."""
        try:
            return client(self._uri)
        except Exception:
            return None

    def _collect(self) -> None:
        """Wait for the first new batch (at most one flush interval), then take all there is."""
        if self._stop_at is None and not self._pending:
            try:
                self._pending += self.inbox.get(timeout=self._settings.flush_interval_s)
            except queue.Empty:
                return
        while True:
            try:
                self._pending += self.inbox.get_nowait()
            except queue.Empty:
                return

    def _send(self, mlflow) -> None:
        while self._pending:
            batch = self._pending[:MAX_METRICS_PER_BATCH]
            log_points(mlflow, self._run_id, batch)
            del self._pending[: len(batch)]
            self.sent += len(batch)
        if self._failures:
            self._say("[track] MLflow is reachable again; all queued metric points were sent")
        self._failures = 0

    def _note_failure(self, exc: Exception) -> None:
        self._failures += 1
        if self._failures == 1:
            reason = mask_uri_passwords(first_line(exc, 200))  # MLflow's errors quote the URL
            self._say(
                f"[track] MLflow unreachable ({reason}); training goes on, metric points are kept "
                "in the journal and sent when it is back"
            )
        pause = min(self._settings.max_backoff_s, 0.5 * 2 ** min(self._failures, 10))
        if self._stop_at is not None:
            pause = min(pause, max(0.0, self._stop_at - time.monotonic()))
        self._wake.wait(pause)
        self._wake.clear()
