"""The nodes' system metrics in MLflow: GPU utilisation, memory and power, CPU, host memory, disk and
network, sampled by MLflow's own ``SystemMetricsMonitor`` (psutil; NVIDIA's management library,
``nvidia-ml-py``, where a GPU is), so the run page's System metrics tab shows them.

One monitor per node, and never in a training process: rank 0's tracking child process
(``pipeline.tracking_sinks``) runs the one of rank 0's node, and on every other node local rank 0
starts a child process that only monitors (``pipeline.node_monitor``). The monitor logs to MLflow
directly, not through the journal (a missed sample of CPU load is not worth a replay); when the
tracking server is down or hung it waits in its child process, and no step waits for it.

Keys are MLflow's: ``system/cpu_utilization_percentage``, ``system/gpu_0_utilization_percentage``,
``system/gpu_0_memory_usage_megabytes``, ``system/system_memory_usage_megabytes``, ...; on a run of
several nodes each node has its own series, ``system/node_<node rank>/...`` (MLflow's ``node_id``;
its variable ``MLFLOW_SYSTEM_METRICS_NODE_ID`` overrides it, as ``MLFLOW_SYSTEM_METRICS_SAMPLING_
INTERVAL`` overrides ``tracking.system_metrics_interval_s``).

MLflow's monitor stops at the first request that fails. While the run still trains, this module
starts it again once the server answers, from the next step MLflow holds (``resume_logging``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from orchestrator.track.runs import RUNNING_STATUS

# The longest the end of a run waits for the monitor's last sample to be sent (a hung server).
FINISH_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class NodePlace:
    """Where a rank runs, from the variables torchrun and Ray Train set on every worker."""

    rank: int
    local_rank: int
    node_rank: int
    multi_node: bool  # some rank runs on another node

    @classmethod
    def from_env(cls, rank: int, world: int, env=os.environ) -> NodePlace:
        local_world = int(env.get("LOCAL_WORLD_SIZE") or world)
        node_rank = int(env.get("NODE_RANK") or env.get("GROUP_RANK") or 0)  # Ray Train, torchrun
        return cls(rank, int(env.get("LOCAL_RANK") or rank), node_rank, local_world < world)

    @property
    def node_id(self) -> str | None:
        """MLflow's ``node_id``: none on a single node (keys ``system/<metric>``)."""
        return f"node_{self.node_rank}" if self.multi_node else None

    @property
    def monitors_other_node(self) -> bool:
        """The rank that starts its node's light monitor: local rank 0 of a node without rank 0
        (rank 0's tracking child process monitors rank 0's node)."""
        return self.rank != 0 and self.local_rank == 0


class SystemMetrics:
    """MLflow's monitor of this node for one run, started again after an outage; ``close`` stops it
    after one last sample (so even a run shorter than the interval has its system metrics).

    >>> monitor = SystemMetrics("http://127.0.0.1:5000", run_id, interval_s=10)  # doctest: +SKIP
    >>> monitor.close()  # doctest: +SKIP
    """

    def __init__(
        self,
        tracking_uri: str,
        run_id: str,
        interval_s: float = 10.0,
        node_id: str | None = None,
        say: Callable[[str], None] = lambda line: print(line, flush=True),
    ):
        from orchestrator.track.mlflow_run import mlflow_uri

        # as every MLflow client of this project: a password in the URI goes to the environment
        self.tracking_uri, self.run_id = mlflow_uri(tracking_uri), run_id
        self.interval_s, self.node_id, self.say = interval_s, node_id, say
        self.restarts = 0
        self._closing = threading.Event()
        # MLflow's monitor announces its start and stop at INFO: the line below says it once.
        logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
        self._thread = threading.Thread(target=self._supervise, name="system-metrics", daemon=True)
        self._thread.start()

    def _supervise(self) -> None:
        monitor = self._make()
        if monitor is None:
            return
        every = f"every {monitor.sampling_interval:g} s"
        self.say(f"[track] system metrics {every} to MLflow as {_what(monitor)}")
        while not self._closing.is_set():
            monitor.start()
            while not (monitor.ended.wait(1.0) or self._closing.is_set()):
                pass
            if self._closing.is_set() or not self._wait_until_training():
                break
            self.restarts += 1  # the monitor stopped at a failed request; the server answers again
            monitor = self._make()
            if monitor is None:
                return
        _last_sample(monitor)

    def _make(self):
        try:
            return _monitor_class()(
                self.run_id,
                sampling_interval=self.interval_s,
                node_id=self.node_id,
                tracking_uri=self.tracking_uri,
                # from the step after the last one MLflow holds: a resumed run, a restarted group or
                # a monitor started again after an outage continues its series
                resume_logging=True,
            )
        except Exception as exc:  # psutil or the store refused: the run trains on without them
            self.say(f"[track] no system metrics: {exc}")
            return None

    def _wait_until_training(self) -> bool:
        """True once the tracking server answers (asked once per sampling interval) and the run is
        still RUNNING; False if the run ended or ``close`` was called meanwhile."""
        from mlflow.tracking import MlflowClient

        while not self._closing.is_set():
            try:
                return MlflowClient(self.tracking_uri).get_run(self.run_id).info.status == RUNNING_STATUS
            except Exception:  # unreachable still: look again later
                self._closing.wait(self.interval_s)
        return False

    def close(self) -> None:
        """Stop sampling and send the last samples, waiting at most ``FINISH_TIMEOUT_S`` (a hung
        server: what is not sent by then is dropped)."""
        self._closing.set()
        self._thread.join(FINISH_TIMEOUT_S)


def _last_sample(monitor) -> None:
    """Stop the monitor's loop, then take and send one more sample (its CPU share over the last
    quarter second)."""
    with contextlib.suppress(Exception):  # a tracking server that is gone: nothing more to send
        monitor.finish()
        _prime_cpu_percent()
        time.sleep(0.25)
        monitor.collect_metrics()
        monitor.publish_metrics(monitor.aggregate_metrics())
        monitor.mlflow_logger.flush()


def _what(monitor) -> str:
    gpus = any(type(m).__name__ in ("GPUMonitor", "ROCMMonitor") for m in monitor.monitors)
    prefix = "system/" + (f"{monitor.node_id}/" if monitor.node_id else "")
    return f"{prefix}... (CPU, memory, disk, network{', GPU' if gpus else '; no GPU found'})"


def _prime_cpu_percent() -> None:
    """psutil's CPU percentage covers the time since this thread's previous call (0 at its first):
    each sampling thread calls it once as it starts."""
    with contextlib.suppress(Exception):
        import psutil

        psutil.cpu_percent()


@functools.cache
def _monitor_class():
    """MLflow's monitor, telling when its loop ended (it returns at the first failed request)."""
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    class Monitor(SystemMetricsMonitor):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.ended = threading.Event()

        def monitor(self):
            # MLflow samples as its loop starts: a CPU share over at least a moment, not over nothing
            _prime_cpu_percent()
            time.sleep(min(self.sampling_interval, 1.0))
            try:
                super().monitor()
            finally:
                self.ended.set()

    return Monitor
