"""Ray Train driven from this process: on an embedded Ray, or on a running cluster (`cluster.address`).

Embedded (no address): a Ray started for this run, bound to 127.0.0.1 (``cluster.host``; another
address only with ``cluster.expose``, and a warning), with Ray's token authentication on
(``RAY_AUTH_MODE=token``; ``disabled`` in the environment is refused unless the spec says
``cluster.ray_auth: disabled``) and a token of its own that only this user can read
(``private_ray_token``). torch.distributed's rendezvous store and gloo listen on loopback
too (``launchers.loopback_torch``). It is this process's child: ``ray.shutdown()`` stops exactly what
was started, nothing else on the machine.

Existing cluster (``auto``, ``host:port`` or ``ray://host:port``): this process connects as a driver;
the cluster's token comes from ``RAY_AUTH_TOKEN``/``RAY_AUTH_TOKEN_PATH``/``~/.ray/auth_token`` as for
every Ray client. ``ray.shutdown()`` then only disconnects.

Before training, a probe placement group with the workers' bundles must become ready within
``cluster.placement_timeout_s``; otherwise the run fails naming what was asked and what the cluster has,
instead of waiting forever. Worker-group failures restart the group up to ``cluster.max_failures``
times; each new group restores from the latest complete checkpoint.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import secrets
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from orchestrator.errors import LaunchError
from orchestrator.interrupts import sigterm_as_interrupt, sigterm_like_sigint
from orchestrator.net import free_port
from orchestrator.plan import Plan
from orchestrator.spec import RunSpec
from orchestrator.track.mlflow_run import quiet_mlflow_env
from orchestrator.track.runs import JobHandle, JobState, RunRecord

# Keeps Ray on 127.0.0.1: without it Ray swaps a loopback address for the machine's network address.
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
RAY_AUTH_MODE = "RAY_AUTH_MODE"
RAY_AUTH_TOKEN_PATH = "RAY_AUTH_TOKEN_PATH"
log = logging.getLogger(__name__)


class PlacementTimeout(LaunchError):
    """The cluster could not place the workers within the timeout."""


def worker_env(plan: Plan, embedded: bool = False) -> dict[str, str]:
    """Environment of every training worker (``embedded``: all of them on this machine)."""
    env = {
        **quiet_mlflow_env(),
        **LOOPBACK_ENV,
        "OMP_NUM_THREADS": str(max(1, int(plan.spec.cluster.cpus_per_worker))),
        "TOKENIZERS_PARALLELISM": "false",
        # Ray Train re-routes print() into its logger and, with a wrapped stdout, also prints it:
        # every progress line would appear twice on the driver.
        "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
        # The controller polls workers this often; the default 2 s adds up to 2 s to every report
        # and to noticing a dead worker.
        "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
    }
    if plan.spec.cluster.gpus_per_worker == 0:
        env["DS_ACCELERATOR"] = "cpu"  # must be set before deepspeed is imported
    if embedded:
        from launchers.loopback_torch import loopback_worker_env

        env.update(loopback_worker_env())
        # Ray Train's watcher of nodes being preempted (cloud spot nodes draining) has nothing to
        # watch on this one machine, and its actor makes Ray print a core_worker.cc error line in
        # every healthy run ("constructor arguments in the object store and max_restarts > 0").
        env["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] = "0"
    return env


def _train_loop_per_worker(config: dict) -> None:
    from orchestrator.track import startup

    startup.mark("entry")
    import ray
    import ray.train

    from orchestrator.track.status import NODE_ID_ENV
    from orchestrator.track.worker_logs import tee_worker_output
    from orchestrator.train.worker import train_worker

    plan: Plan = config["plan"]
    node_id = ray.get_runtime_context().get_node_id()
    os.environ[NODE_ID_ENV] = node_id
    with tee_worker_output(plan.checkpoint_dir, ray.train.get_context().get_world_rank(), node_id):
        train_worker(plan)


class RayLocalLauncher:
    """Runs in the foreground: ``submit`` returns when the run has ended (or was interrupted:
    Ctrl-C or SIGTERM raise out of it after Ray Train aborted the workers and Ray was shut down)."""

    name = "ray-local"
    detached = False

    def __init__(self, address: str | None = None):
        self.address = address  # overrides the spec's (the ray-job entry connects to "auto")

    @classmethod
    def for_spec(cls, spec: RunSpec) -> RayLocalLauncher:
        if not spec.cluster.address:
            embedded_ray_auth(spec.cluster)  # refused before the run exists
        else:  # an unreachable cluster too: no run is created for it
            with sigterm_as_interrupt():
                reach_cluster(spec.cluster.address, spec.cluster.connect_timeout_s, spec.with_references)
        return cls()

    @classmethod
    def for_record(cls, record: RunRecord) -> RayLocalLauncher:
        return cls()

    def submit(self, plan: Plan) -> JobHandle:
        address = self.address or plan.spec.cluster.address
        with contextlib.nullcontext() if address else private_ray_token():
            return self._run(plan, address)

    def _run(self, plan: Plan, address: str | None) -> JobHandle:
        connect(plan, address)
        import ray

        try:
            sigterm_like_sigint()  # ray.init replaced the SIGTERM handler with its own
            wait_for_placement(plan)
            return self._fit(plan, embedded=not address)
        except PlacementTimeout as exc:
            return JobHandle(self.name, plan.run_id, JobState.FAILED, str(exc))
        except Exception as exc:  # Ray wraps worker errors; keep the message, drop the stack
            return JobHandle(self.name, plan.run_id, JobState.FAILED, _root_cause(exc))
        except KeyboardInterrupt:
            _stop_forwarding_worker_output()
            raise
        finally:
            ray.shutdown()

    def _fit(self, plan: Plan, embedded: bool, callbacks=()) -> JobHandle:
        """Train on the Ray this process is connected to; the job's end as a handle."""
        try:
            _trainer(plan, embedded, callbacks).fit()
            return JobHandle(self.name, plan.run_id, JobState.SUCCEEDED)
        except Exception as exc:  # Ray wraps worker errors; keep the message, drop the stack
            return JobHandle(self.name, plan.run_id, JobState.FAILED, _root_cause(exc))

    # A foreground run has no job to look up later: its state lives in MLflow and status.json,
    # which `orchestrator status/logs` read for every backend.
    def status(self, job_id: str) -> JobHandle:
        raise LaunchError(_FOREGROUND)

    def logs(self, job_id: str, follow: bool = False) -> Iterator[str]:
        raise LaunchError(_FOREGROUND)

    def cancel(self, job_id: str) -> JobHandle:
        raise LaunchError(_FOREGROUND)

    def list(self) -> list[JobHandle]:
        raise LaunchError(_FOREGROUND)

    def job_tags(self, handle: JobHandle) -> dict[str, str]:
        return {}

    def prepares_here(self, spec: RunSpec) -> bool:
        return True

    def piece_runner(self, spec: RunSpec):
        """The data is prepared by tasks on the Ray the run trains on (embedded, or the cluster)."""
        from launchers.ray_tasks import task_runner

        return task_runner(spec, self.address or spec.cluster.address)


_FOREGROUND = (
    "a ray-local run runs in the foreground of its `orchestrator submit` (stop it with Ctrl-C); "
    "use `orchestrator status RUN_ID` and `orchestrator logs RUN_ID`, which read MLflow and the run's "
    "directory"
)


_PROCESS_TOKEN: list[str] = []  # the path of this process's embedded-Ray token, once made


@contextlib.contextmanager
def private_ray_token() -> Iterator[None]:
    """A token of the embedded Ray's own, in a file only this user can read, gone when the process
    ends. One per process: Ray reads the token once per process, so a second embedded Ray of the same
    command (the data's preparation, then the training) must present the same one.

    Ray writes the token it generates to ~/.ray/auth_token readable by every user of the machine,
    and whoever holds it can run code through Ray. A token the user set (RAY_AUTH_TOKEN) is kept."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        yield
        return
    if not _PROCESS_TOKEN:
        directory = tempfile.mkdtemp(prefix="orchestrator-ray-")  # mode 0700
        path = os.path.join(directory, "auth_token")
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32))
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
        _PROCESS_TOKEN.append(path)
    saved = os.environ.get(RAY_AUTH_TOKEN_PATH)
    os.environ[RAY_AUTH_TOKEN_PATH] = _PROCESS_TOKEN[0]  # Ray's processes, children of this one, inherit it
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(RAY_AUTH_TOKEN_PATH, None)
        else:
            os.environ[RAY_AUTH_TOKEN_PATH] = saved


def embedded_ray_auth(cluster) -> str:
    """RAY_AUTH_MODE for an embedded Ray: token, unless the spec turns it off in so many words."""
    from orchestrator.plan.describe import exposure_warnings

    asked = os.environ.get(RAY_AUTH_MODE, "token")
    if asked == "disabled" and cluster.ray_auth != "disabled":
        raise LaunchError(
            "RAY_AUTH_MODE=disabled is set, which would let any process that reaches the embedded "
            "Ray's ports run code as you; hint: unset RAY_AUTH_MODE, or set cluster.ray_auth: "
            "disabled in the spec if this machine is yours alone"
        )
    for warning in exposure_warnings(cluster):
        log.warning(warning)
    return cluster.ray_auth


class TuneTrialLauncher(RayLocalLauncher):
    """Inside a Ray Tune trial (a sweep): Ray is up already (the trial is an actor of the sweep's
    Ray), so it neither connects nor shuts down, and the trainer forwards every ``ray.train.report``
    of the workers (the evaluations, see ``Plan.report_to_ray``) to Tune. Placement is the sweep's
    concern: it runs only as many trials at once as the cluster can place."""

    def submit(self, plan: Plan) -> JobHandle:
        from ray.tune.integration.ray_train import TuneReportCallback

        return self._fit(plan, not plan.spec.cluster.address, [TuneReportCallback()])


def reach_cluster(address: str, timeout_s: float, as_written=lambda text: text) -> None:
    """Wait until something answers at a cluster's ``host:port`` (or ``ray://host:port``), at most
    ``timeout_s``; then a LaunchError saying what could not be reached and what to do. Ray's own
    client would retry for minutes and hold SIGTERM off meanwhile. ``auto`` is left to Ray, which
    fails at once when this machine belongs to no cluster. ``as_written``: the address as the spec
    wrote it (its `${env:...}` references in place of secrets)."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if address == "auto" or not sep or not port.isdigit():
        return
    shown = as_written(address)
    print(f"connecting to the Ray cluster at {shown} (for up to {timeout_s:g}s)", file=sys.stderr, flush=True)
    deadline, reason = time.monotonic() + timeout_s, "no answer"
    while True:
        left = deadline - time.monotonic()
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=max(0.1, min(2.0, left))):
                return
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        if left <= 0:
            raise LaunchError(
                f"cannot reach the Ray cluster at {shown} within {timeout_s:g}s ({reason}); hint: "
                "start it (`ray start --head`), check cluster.address (host:6379 for the GCS, "
                "ray://host:10001 for a Ray client server), or raise cluster.connect_timeout_s"
            )
        time.sleep(min(0.5, max(0.0, left)))


def connect(plan: Plan, address: str | None, log_to_driver: bool = True) -> None:
    """Start an embedded Ray for the plan (no address) or join the cluster at ``address``; the
    workers get ``worker_env(plan)``. ``log_to_driver``: print the workers' output here too."""
    if address:
        reach_cluster(address, plan.spec.cluster.connect_timeout_s, plan.spec.with_references)
    os.environ.update(LOOPBACK_ENV)
    if not address:
        os.environ[RAY_AUTH_MODE] = embedded_ray_auth(plan.spec.cluster)
    import ray

    common = {
        "runtime_env": {"env_vars": worker_env(plan, embedded=not address)},
        "configure_logging": True,
        "logging_level": "WARNING",
        "log_to_driver": log_to_driver,
    }
    if address:
        ray.init(address=address, **common)
        return
    cluster = plan.spec.cluster
    ray.init(
        num_cpus=max(os.cpu_count() or 1, int(cluster.num_workers * cluster.cpus_per_worker)),
        _node_ip_address=cluster.host,
        include_dashboard=True,  # without it Ray logs PlacementGroupCleaner warnings
        dashboard_host=cluster.host,
        dashboard_port=free_port(cluster.host),
        # Ray Train gives its actors their own runtime env, so they never use the idle workers Ray
        # starts ahead of time: those only took CPU during start-up and training.
        _system_config={"enable_worker_prestart": False, "prestart_worker_first_driver": False},
        **common,
    )


def worker_resources(plan: Plan) -> dict[str, float]:
    cluster = plan.spec.cluster
    resources = {"CPU": cluster.cpus_per_worker, **cluster.resources_per_worker}
    if cluster.gpus_per_worker > 0:
        resources["GPU"] = cluster.gpus_per_worker
    return resources


def wait_for_placement(plan: Plan) -> None:
    """Reserve the workers' bundles once, within the timeout, then give them back to Ray Train."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    cluster = plan.spec.cluster
    bundles = [worker_resources(plan) for _ in range(cluster.num_workers)]
    options = {"bundle_label_selector": [dict(cluster.label_selector)] * len(bundles)}
    probe = placement_group(
        bundles, strategy=cluster.placement_strategy, **(options if cluster.label_selector else {})
    )
    try:
        ready = probe.wait(timeout_seconds=cluster.placement_timeout_s)
    finally:
        remove_placement_group(probe)
    if not ready:
        raise PlacementTimeout(_unplaceable_message(plan, bundles, ray.cluster_resources()))


def _unplaceable_message(plan: Plan, bundles: list[dict], available: dict) -> str:
    cluster = plan.spec.cluster
    have = ", ".join(f"{k} {v:g}" for k, v in sorted(available.items()) if not k.startswith("node:"))
    labels = f" on nodes labelled {dict(cluster.label_selector)}" if cluster.label_selector else ""
    return (
        f"the cluster could not place {len(bundles)} worker(s) of {bundles[0]}{labels} with strategy "
        f"{cluster.placement_strategy} within {cluster.placement_timeout_s:g}s; the cluster has in "
        f"total: {have or 'nothing'} in {_alive_nodes()} node(s). Hint: lower cluster.num_workers or "
        "the per-worker resources, use placement_strategy PACK/SPREAD, or add nodes"
    )


def _alive_nodes() -> int:
    import ray

    return sum(1 for node in ray.nodes() if node.get("Alive"))


def _trainer(plan: Plan, embedded: bool, callbacks=()):
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    cluster = plan.spec.cluster
    use_gpu = cluster.gpus_per_worker > 0
    torch_config = TorchConfig
    if embedded:  # every rank on this machine: the rendezvous listens on loopback only
        from launchers.loopback_torch import LoopbackTorchConfig

        torch_config = LoopbackTorchConfig
    return TorchTrainer(
        _train_loop_per_worker,
        train_loop_config={"plan": plan},
        scaling_config=ScalingConfig(
            num_workers=cluster.num_workers,
            use_gpu=use_gpu,
            resources_per_worker=worker_resources(plan),
            placement_strategy=cluster.placement_strategy,
            label_selector=dict(cluster.label_selector) or None,
        ),
        torch_config=torch_config(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(
            name=plan.run_name,
            **_ray_storage(plan),
            failure_config=FailureConfig(max_failures=cluster.max_failures),
            callbacks=list(callbacks),
        ),
    )


def _ray_storage(plan: Plan) -> dict:
    """Ray Train's own state beside the run's checkpoints: the same store, the same filesystem object
    (pyarrow's), so a group restarted on other nodes finds it too."""

    store = plan.checkpoint_store()
    if store.is_local:
        return {"storage_path": str(Path(plan.checkpoint_dir) / "ray")}
    filesystem, root = store.filesystem()
    return {"storage_path": f"{root}/ray", "storage_filesystem": filesystem}


def _stop_forwarding_worker_output() -> None:
    """After Ctrl-C or SIGTERM the job is torn down with its workers: what Ray's own actors print as
    they go (a PlacementGroupCleaner traceback when the controller vanished first) is not the user's
    business. Ray has no public switch for this once connected; without the handler nothing changes."""
    with contextlib.suppress(Exception):
        from ray._private.worker import global_worker_stdstream_dispatcher

        global_worker_stdstream_dispatcher.remove_handler("ray_print_logs")


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return f"{type(exc).__name__}: {exc}".strip()
