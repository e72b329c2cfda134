"""Ray tasks for the work before training (preparing the data): one task per piece, each on one CPU
of the Ray the run uses, as many at once as the cluster has CPUs.

    with task_runner(spec) as runner:                      # an embedded Ray, or cluster.address's
        manifest = prepare(spec, cwd, runner)

An embedded Ray for it follows the same rules as the training's (127.0.0.1 only, token
authentication with a private token, stopped when the block ends). It has no dashboard: tasks need
none. Each task tokenizes single-threaded (``TOKENIZERS_PARALLELISM=false``): the parallelism is the
tasks'. A task's own error (a bad line in a file, say) comes back as that error.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

from orchestrator.errors import OrchestratorError
from orchestrator.track.mlflow_run import quiet_mlflow_env

TASK_ENV = {"TOKENIZERS_PARALLELISM": "false", "RAYON_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


class RayTasks:
    """Starts (or joins) Ray at its first ``map``: a corpus of one piece never needs it."""

    def __init__(self, spec, address: str | None, stack: contextlib.ExitStack):
        self.spec, self.address, self._stack = spec, address, stack
        self.in_flight = 0

    def map(self, function: Callable, jobs: list) -> Iterator:
        if not self.in_flight:  # before Ray is imported: it reads its authentication mode then
            self.in_flight = _start(self.spec, self.address, self._stack)
        import ray

        remote = ray.remote(num_cpus=1, max_retries=2)(function)
        waiting = list(jobs)
        running: list = []
        try:
            while waiting or running:
                while waiting and len(running) < self.in_flight:
                    running.append(remote.remote(waiting.pop(0)))
                done, running = ray.wait(running, num_returns=1)
                yield _result(done[0])
        finally:
            # An embedded Ray goes with its shutdown (and Ctrl-C reached its workers already: a
            # force-cancel of tasks whose workers died then makes Ray's core worker abort the whole
            # process); on a cluster the tasks left would run on, so they are cancelled.
            for ref in running if self.address else []:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)


def _result(ref):
    import ray
    from ray.exceptions import RayTaskError

    try:
        return ray.get(ref)
    except RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, OrchestratorError):
            raise cause from None
        raise RuntimeError(f"a preparation task failed: {cause or exc}") from None


@contextlib.contextmanager
def task_runner(spec, address: str | None = None) -> Iterator[RayTasks]:
    """Ray tasks on the cluster at ``address`` (joined as a driver), else on an embedded Ray; either
    only once the first task is due, and stopped (or left) when the block ends."""
    with contextlib.ExitStack() as stack:
        yield RayTasks(spec, address, stack)


def _start(spec, address: str | None, stack: contextlib.ExitStack) -> int:
    """Connect (or start an embedded Ray); how many tasks to keep in flight."""
    import sys

    from launchers.ray_local import LOOPBACK_ENV, RAY_AUTH_MODE, embedded_ray_auth, private_ray_token

    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():  # inside a job's driver that is connected already
        return 2 * int(ray.cluster_resources().get("CPU", 1))
    os.environ.update(LOOPBACK_ENV)
    if not address:  # Ray reads its authentication mode when it is imported
        stack.enter_context(private_ray_token())
        os.environ[RAY_AUTH_MODE] = embedded_ray_auth(spec.cluster)
    import ray

    env = {**quiet_mlflow_env(), **LOOPBACK_ENV, **TASK_ENV}
    common = {"runtime_env": {"env_vars": env}, "configure_logging": True, "logging_level": "WARNING"}
    if address:
        ray.init(address=address, **common)
    else:
        ray.init(
            num_cpus=os.cpu_count() or 1,
            _node_ip_address=spec.cluster.host,
            include_dashboard=False,
            _system_config={"enable_worker_prestart": False, "prestart_worker_first_driver": False},
            **common,
        )
    stack.callback(ray.shutdown)
    return 2 * int(ray.cluster_resources().get("CPU", 1))
