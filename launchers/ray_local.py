"""Ray Train on an embedded local Ray started for this run, bound to 127.0.0.1.

Ray's own token authentication (on by default for a local ``ray.init()``) is left on. The cluster is
this process's child: ``ray.shutdown()`` stops exactly what was started, nothing else on the machine.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from launchers.base import JobHandle, JobState
from orchestrator.plan import Plan
from orchestrator.track.mlflow_run import quiet_mlflow_env

# Keeps Ray on 127.0.0.1: without it Ray swaps a loopback address for the machine's network address.
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def worker_env(plan: Plan) -> dict[str, str]:
    """Environment of every training worker."""
    env = {
        **quiet_mlflow_env(),
        **LOOPBACK_ENV,
        "OMP_NUM_THREADS": str(max(1, int(plan.spec.cluster.cpus_per_worker))),
        "TOKENIZERS_PARALLELISM": "false",
        # Ray Train re-routes print() into its logger and, with a wrapped stdout, also prints it:
        # every progress line would appear twice on the driver.
        "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
        # The controller polls workers this often; the default 2 s adds up to 2 s to every report.
        "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
    }
    if plan.spec.cluster.gpus_per_worker == 0:
        env["DS_ACCELERATOR"] = "cpu"  # must be set before deepspeed is imported
    return env


def _train_loop_per_worker(config: dict) -> None:
    from orchestrator.train.worker import train_worker

    train_worker(config["plan"])


class RayLocalLauncher:
    name = "ray-local"

    def submit(self, plan: Plan) -> JobHandle:
        os.environ.update(LOOPBACK_ENV)
        import ray

        cluster = plan.spec.cluster
        ray.init(
            num_cpus=max(os.cpu_count() or 1, int(cluster.num_workers * cluster.cpus_per_worker)),
            _node_ip_address="127.0.0.1",
            include_dashboard=True,  # without it Ray logs PlacementGroupCleaner warnings
            dashboard_host="127.0.0.1",
            dashboard_port=_free_port(),
            runtime_env={"env_vars": worker_env(plan)},
            configure_logging=True,
            logging_level="WARNING",
            log_to_driver=True,
        )
        try:
            _trainer(plan).fit()
            return JobHandle(self.name, plan.run_id, JobState.SUCCEEDED)
        except Exception as exc:  # Ray wraps worker errors; keep the message, drop the stack
            return JobHandle(self.name, plan.run_id, JobState.FAILED, _root_cause(exc))
        finally:
            ray.shutdown()


def _trainer(plan: Plan):
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    cluster = plan.spec.cluster
    use_gpu = cluster.gpus_per_worker > 0
    resources = {"CPU": cluster.cpus_per_worker}
    if use_gpu:
        resources["GPU"] = cluster.gpus_per_worker
    return TorchTrainer(
        _train_loop_per_worker,
        train_loop_config={"plan": plan},
        scaling_config=ScalingConfig(
            num_workers=cluster.num_workers, use_gpu=use_gpu, resources_per_worker=resources
        ),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(name=plan.run_name, storage_path=str(Path(plan.checkpoint_dir) / "ray")),
    )


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return f"{type(exc).__name__}: {exc}".strip()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
